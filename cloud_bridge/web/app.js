// The bridge's web page: plain JS, no build step, no external resources (the lab network is closed).
// The API key stays in this tab's sessionStorage and goes only into the Authorization header;
// live status uses fetch() streaming of the SSE endpoints because EventSource cannot send headers.
"use strict";

const state = { key: sessionStorage.getItem("aichemist.key") || "", me: null, tasks: new Map(),
                order: [], selected: null, cursor: null, stream: null, lastEventId: 0 };
const $ = (id) => document.getElementById(id);
const TERMINAL = ["succeeded", "failed", "cancelled"];

function showError(msg) {
  const el = $("error");
  el.textContent = msg || "";
  el.hidden = !msg;
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.key }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: { message: text } }; }
  if (!resp.ok) {
    const err = new Error((body && body.error && body.error.message) || ("HTTP " + resp.status));
    err.status = resp.status;
    throw err;
  }
  return body;
}

function can(scope) {
  if (!state.me) return false;
  return state.me.scopes.includes(scope) || state.me.scopes.includes("admin");
}

function fmtTime(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderRow(task) {
  const tbody = document.querySelector("#tasks tbody");
  let tr = tbody.querySelector(`tr[data-id="${CSS.escape(task.id)}"]`);
  const fresh = !tr;
  if (fresh) {
    tr = document.createElement("tr");
    tr.dataset.id = task.id;
    tr.addEventListener("click", () => select(task.id));
  }
  tr.replaceChildren(cell(task.id.slice(0, 8)), cell(task.status, "status status-" + task.status),
                     cell(task.campaign || "-"), cell(task.phase || ""),
                     cell(Math.round((task.progress || 0) * 100) + "%"), cell(fmtTime(task.created_at)));
  tr.dataset.status = task.status;
  tr.classList.toggle("selected", state.selected === task.id);
  if (fresh) {
    // newest first: insert before the first row created earlier
    const rows = Array.from(tbody.children);
    const before = rows.find((r) => (state.tasks.get(r.dataset.id) || {}).created_at < task.created_at);
    tbody.insertBefore(tr, before || null);
  }
}

function upsert(task) {
  state.tasks.set(task.id, task);
  const filter = $("filter-status").value;
  const tr = document.querySelector(`#tasks tbody tr[data-id="${CSS.escape(task.id)}"]`);
  if (filter && task.status !== filter) { if (tr) tr.remove(); }
  else renderRow(task);
  if (state.selected === task.id) renderDetail(task);
  if (TERMINAL.includes(task.status) && task.campaign && task.campaign === state.plotted) plot();
}

async function loadTasks(append) {
  const params = new URLSearchParams({ limit: "50" });
  const filter = $("filter-status").value;
  if (filter) params.append("status", filter);
  if (append && state.cursor) params.set("cursor", state.cursor);
  const page = await api("/v1/tasks?" + params);
  if (!append) document.querySelector("#tasks tbody").replaceChildren();
  page.items.forEach(upsert);
  state.cursor = page.next_cursor;
  $("more").hidden = !page.next_cursor;
}

function kv(label, value) {
  const row = document.createElement("div");
  const b = document.createElement("b");
  b.textContent = label + ": ";
  row.append(b, document.createTextNode(value === null || value === undefined ? "" : String(value)));
  return row;
}

function renderDetail(task) {
  const box = $("detail");
  box.className = "";
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(task.task, null, 2);
  const status = kv("status", task.status);
  status.id = "detail-status";
  box.replaceChildren(kv("id", task.id), status, kv("campaign", task.campaign || "-"),
                      kv("submitted by", task.submitted_by), kv("approved by", task.approved_by || "-"),
                      kv("attempts", task.attempts), kv("progress", (task.phase ? task.phase + " " : "") + Math.round(task.progress * 100) + "%"),
                      kv("message", (task.error_type ? task.error_type + ": " : "") + (task.message || "")), pre);
  const own = state.me && task.submitted_by === state.me.key_id;
  $("approve").hidden = !(task.status === "awaiting_approval" && can("approve") && state.me.kind === "human");
  $("cancel").hidden = !(!TERMINAL.includes(task.status) && !task.cancel_requested &&
                         (can("approve") || (can("submit") && own)));
  if (TERMINAL.includes(task.status) && task.has_result) loadResult(task.id);
  else $("results").replaceChildren();
}

async function loadResult(id) {
  try {
    const res = await api(`/v1/tasks/${encodeURIComponent(id)}/result`);
    if (state.selected !== id) return;
    const table = document.createElement("table");
    table.id = "result-table";
    const head = document.createElement("tr");
    ["#", "residence_time_min", "temp_c", "equivalents", "conc_dfnb_m", "yield", "STY", "E-factor"].forEach((h) => {
      const th = document.createElement("th"); th.textContent = h; head.append(th);
    });
    table.append(head);
    res.experiments.forEach((e, i) => {
      const c = e.conditions || {};
      const tr = document.createElement("tr");
      [i + 1, c.residence_time_min, c.temp_c, c.equivalents, c.conc_dfnb_m, e.yield_fraction, e.sty_kg_m3_h, e.e_factor]
        .forEach((v) => tr.append(cell(typeof v === "number" ? (+v.toPrecision(4)).toString() : String(v ?? ""))));
      table.append(tr);
    });
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = "download ORD record";
    link.addEventListener("click", async (ev) => {
      ev.preventDefault();
      const ord = await api(`/v1/tasks/${encodeURIComponent(id)}/result/ord`);
      const blob = new Blob([JSON.stringify(ord, null, 2)], { type: "application/json" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `ord-${id}.json`;
      a.click();
    });
    $("results").replaceChildren(table, link);
  } catch (e) { showError(e.message); }
}

function select(id) {
  state.selected = id;
  document.querySelectorAll("#tasks tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === id));
  renderDetail(state.tasks.get(id));
}

async function act(what) {
  const id = state.selected;
  if (!id) return;
  try {
    upsert(await api(`/v1/tasks/${encodeURIComponent(id)}/${what}`, { method: "POST" }));
    showError("");
  } catch (e) { showError(`${what} failed: ${e.message}`); }
}

// --- live events: SSE over fetch ---------------------------------------------------------------
async function follow() {
  if (state.stream) state.stream.abort();
  const ctrl = new AbortController();
  state.stream = ctrl;
  while (!ctrl.signal.aborted) {
    try {
      const headers = { Authorization: "Bearer " + state.key, Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = String(state.lastEventId);
      const resp = await fetch("/v1/events", { headers, signal: ctrl.signal });
      if (!resp.ok) throw new Error("event stream: HTTP " + resp.status);
      setLive(true);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          handleEvent(block);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 1000));  // reconnect; Last-Event-ID resumes where it stopped
  }
}

function setLive(on) {
  const b = $("live");
  b.textContent = on ? "live" : "offline";
  b.className = "badge " + (on ? "on" : "off");
}

const pending = new Map();
function handleEvent(block) {
  let id = null, data = "";
  block.split("\n").forEach((line) => {
    if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  });
  if (!data) return;
  if (id) state.lastEventId = Math.max(state.lastEventId, parseInt(id, 10) || 0);
  let ev;
  try { ev = JSON.parse(data); } catch (e) { return; }
  if (!ev.task_id) return;
  // coalesce bursts of events of one task into one fetch
  if (pending.has(ev.task_id)) return;
  pending.set(ev.task_id, setTimeout(async () => {
    pending.delete(ev.task_id);
    try { upsert(await api(`/v1/tasks/${encodeURIComponent(ev.task_id)}`)); } catch (e) { showError(e.message); }
  }, 50));
}

// --- campaign plot (inline SVG) ----------------------------------------------------------------
async function plot(ev) {
  if (ev) ev.preventDefault();
  const campaign = $("campaign").value.trim();
  const objective = $("objective").value;
  if (!campaign) return;
  try {
    state.plotted = campaign;
    const data = await api(`/v1/campaigns/${encodeURIComponent(campaign)}/objective`);
    $("plot").replaceChildren(svgPlot(data.points, objective));
  } catch (e) { showError(e.message); }
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function svgPlot(points, objective) {
  const W = 640, H = 260, L = 60, R = 15, T = 15, B = 40;
  const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             "aria-label": `${objective} over experiments` });
  const pts = points.filter((p) => typeof p[objective] === "number");
  if (!pts.length) {
    svg.append(svgEl("text", { x: L, y: H / 2 }, "no finished experiments in this campaign"));
    return svg;
  }
  const minimise = objective === "e_factor";
  const ys = pts.map((p) => p[objective]);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi === lo) { hi += 1; lo -= 1; }
  const n = Math.max(...pts.map((p) => p.index));
  const x = (i) => L + (n === 1 ? 0.5 : (i - 1) / (n - 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#555" }));
  svg.append(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#555" }));
  [lo, (lo + hi) / 2, hi].forEach((v) => {
    svg.append(svgEl("text", { x: 4, y: y(v) + 4 }, (+v.toPrecision(3)).toString()));
  });
  svg.append(svgEl("text", { x: (W + L) / 2 - 40, y: H - 8 }, "experiment"));
  svg.append(svgEl("text", { x: L + 5, y: T + 10 }, objective + (minimise ? " (lower is better)" : "")));
  let best = null;
  const bestPath = [];
  pts.forEach((p) => {
    const v = p[objective];
    best = best === null ? v : (minimise ? Math.min(best, v) : Math.max(best, v));
    bestPath.push(`${x(p.index)},${y(best)}`);
  });
  svg.append(svgEl("polyline", { points: bestPath.join(" "), fill: "none", stroke: "#1c7c3a",
                                 "stroke-width": 2, class: "best-so-far" }));
  pts.forEach((p) => {
    const c = svgEl("circle", { cx: x(p.index), cy: y(p[objective]), r: 4, fill: "#16324f",
                                "data-task": p.task_id, class: "point" });
    c.append(svgEl("title", {}, `#${p.index} ${objective}=${p[objective]} (task ${p.task_id.slice(0, 8)})`));
    c.addEventListener("click", () => { if (state.tasks.has(p.task_id)) select(p.task_id); });
    svg.append(c);
  });
  return svg;
}

// --- lab status line ---------------------------------------------------------------------------
async function refreshLab() {
  if (!state.me) return;
  try {
    const lab = await api("/v1/lab/status");
    const estop = lab.safety.estop === true ? "E-STOP: " + (lab.safety.reason || "active")
      : lab.safety.estop === false ? "e-stop clear" : "e-stop unknown";
    const q = lab.queue;
    const el = $("lab-status");
    el.textContent = `${estop} · ${lab.nodes.length} nodes · ${q.running} running, ${q.queued} queued, ` +
                     `${q.awaiting_approval} awaiting approval`;
    el.dataset.estop = String(lab.safety.estop);
  } catch (e) { /* the next refresh tries again */ }
}
setInterval(refreshLab, 5000);

// --- start -------------------------------------------------------------------------------------
async function signIn(key) {
  state.key = key;
  try {
    state.me = await api("/v1/me");
  } catch (e) {
    state.me = null;
    $("me").textContent = "not signed in";
    showError(e.status === 401 ? "that API key was not accepted" : e.message);
    return;
  }
  sessionStorage.setItem("aichemist.key", key);
  $("me").textContent = `${state.me.key_id} · lab ${state.me.lab} · ${state.me.kind} · ${state.me.scopes.join(", ")}`;
  showError("");
  state.lastEventId = 0;
  follow();
  refreshLab();
  await loadTasks(false);
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("api-key").value.trim());
  $("api-key").value = "";
});
$("filter-status").addEventListener("change", () => loadTasks(false).catch((e) => showError(e.message)));
$("more").addEventListener("click", () => loadTasks(true).catch((e) => showError(e.message)));
$("approve").addEventListener("click", () => act("approve"));
$("cancel").addEventListener("click", () => act("cancel"));
$("plot-form").addEventListener("submit", plot);
if (state.key) signIn(state.key);
