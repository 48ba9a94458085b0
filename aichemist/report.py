"""The campaign report: one self-contained HTML page (run_dir/report.html).

``write_report(run_dir, summary, schedule=...)`` renders, from the campaign summary
(summary.json as aichemist/campaign.py writes it) and the resource schedule:

- the objectives against experiment number, each with its running best (STY maximised,
  E-factor minimised, and the yield);
- the Pareto front of STY (max) against E-factor (min): front points joined as a staircase,
  dominated points shown apart, with the hypervolume against the SnAr benchmark's reference point
  (STY 2957 kg/m3/h, E-factor 10.7: /work/shared/notes/snar-benchmark.md, after Felton et al. 2021);
- a Gantt chart of resource use (one row per resource: robot, reactor, hplc, ...; one bar per
  schedule entry ``{"resource", "start_s", "end_s", "label", "experiment"}``), with the makespan
  and the busiest resource's busy time (and the summary's ``lower_bound_s`` / ``efficiency``, the
  planner's bound, when the campaign writes them);
- a table of every experiment: conditions, outcomes, status, message.

Figures are matplotlib (Agg) SVG inlined in the page: no script, no CDN, no file beside it, so
the page opens offline and can be mailed. ``pareto_front`` and ``hypervolume`` are small pure
functions (2 objectives) so they are tested by hand-checkable numbers.

    .venv/bin/python -m aichemist.report RUN_DIR   # rebuild RUN_DIR/report.html from summary.json
                                                   # (and schedule.json when it is there)
"""

from __future__ import annotations

import html
import io
import json
import math
import pathlib
import sys
from typing import Any, Iterable, Optional, Sequence

#: Reference point of the SnAr benchmark's hypervolume (STY kg/m3/h, E-factor).
REFERENCE_STY_KG_M3_H = 2957.0
REFERENCE_E_FACTOR = 10.7

#: (key, label, direction) of the objectives plotted against experiment number.
OBJECTIVES = (("sty_kg_m3_h", "STY / kg m$^{-3}$ h$^{-1}$", "max"),
              ("e_factor", "E-factor", "min"),
              ("yield_fraction", "yield (ortho)", "max"))

CONDITION_COLUMNS = (("residence_time_min", "τ / min", "{:.2f}"), ("temp_c", "T / °C", "{:.1f}"),
                     ("equivalents", "equiv", "{:.2f}"), ("conc_dfnb_m", "[DFNB] / M", "{:.3f}"))
OUTCOME_COLUMNS = (("yield_fraction", "yield", "{:.3f}"), ("sty_kg_m3_h", "STY / kg m⁻³ h⁻¹", "{:.1f}"),
                   ("e_factor", "E-factor", "{:.2f}"))


# --- pure functions ---------------------------------------------------------------------------
def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` = (sty, e_factor) dominates ``b``: no worse in both (STY max, E-factor min), better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (STY maximised, E-factor minimised), in input order.
    Repeated identical points are all on the front."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float] = (REFERENCE_STY_KG_M3_H,
                                                                                  REFERENCE_E_FACTOR)) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` = (sty_ref, e_ref): the union of the
    rectangles [sty_ref, sty] x [e, e_ref]. Points with STY <= sty_ref or E-factor >= e_ref add nothing."""
    ref_sty, ref_e = float(reference[0]), float(reference[1])
    inside = [(float(s), float(e)) for s, e in points if s > ref_sty and e < ref_e]
    front = sorted({inside[i] for i in pareto_front(inside)}, key=lambda p: p[1])  # E ascending, STY ascending
    area = 0.0
    for k, (sty, e) in enumerate(front):
        next_e = front[k + 1][1] if k + 1 < len(front) else ref_e
        area += (sty - ref_sty) * (next_e - e)
    return area


def running_best(values: Iterable[Optional[float]], direction: str) -> list[Optional[float]]:
    """Best value so far after each experiment (None until the first value)."""
    best: Optional[float] = None
    out: list[Optional[float]] = []
    for v in values:
        if v is not None and math.isfinite(v):
            best = v if best is None else (max(best, v) if direction == "max" else min(best, v))
        out.append(best)
    return out


def schedule_bounds(schedule: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Makespan, busy time per resource (overlapping bars of one resource counted once) and the
    resource lower bound on the makespan (the busiest resource) with the efficiency bound/makespan."""
    if not schedule:
        return {"makespan_s": 0.0, "busy_s": {}, "lower_bound_s": 0.0, "efficiency": None}
    start = min(float(e["start_s"]) for e in schedule)
    end = max(float(e["end_s"]) for e in schedule)
    busy: dict[str, float] = {}
    for resource in sorted({str(e["resource"]) for e in schedule}):
        spans = sorted((float(e["start_s"]), float(e["end_s"])) for e in schedule if str(e["resource"]) == resource)
        total, cur_s, cur_e = 0.0, spans[0][0], spans[0][1]
        for s, e in spans[1:]:
            if s > cur_e:
                total, cur_s, cur_e = total + cur_e - cur_s, s, e
            else:
                cur_e = max(cur_e, e)
        busy[resource] = total + cur_e - cur_s
    makespan = end - start
    bound = max(busy.values())
    return {"makespan_s": makespan, "busy_s": busy, "lower_bound_s": bound,
            "efficiency": bound / makespan if makespan > 0 else None}


def _value(outcome: dict[str, Any], key: str) -> Optional[float]:
    v = (outcome or {}).get(key)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def experiment_points(summary: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(experiment number from 1, STY, E-factor) of every succeeded experiment with both values."""
    out = []
    for n, r in enumerate(summary.get("results") or [], start=1):
        sty, ef = _value(r.get("outcome"), "sty_kg_m3_h"), _value(r.get("outcome"), "e_factor")
        if r.get("status") == "succeeded" and sty is not None and ef is not None:
            out.append((n, sty, ef))
    return out


# --- figures ----------------------------------------------------------------------------------
def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG is inlined


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def objectives_figure(summary: dict[str, Any]) -> str:
    plt = _pyplot()
    results = summary.get("results") or []
    numbers = list(range(1, len(results) + 1))
    fig, axes = plt.subplots(len(OBJECTIVES), 1, figsize=(7.5, 2.1 * len(OBJECTIVES)), sharex=True)
    for ax, (key, label, direction) in zip(axes, OBJECTIVES):
        values = [_value(r.get("outcome"), key) if r.get("status") == "succeeded" else None for r in results]
        xs = [n for n, v in zip(numbers, values) if v is not None]
        ax.plot(xs, [v for v in values if v is not None], "o", color="#1f77b4", ms=4, label="experiment")
        failed = [n for n, r in zip(numbers, results) if r.get("status") != "succeeded"]
        if failed:
            for n in failed:
                ax.axvline(n, color="#d62728", alpha=0.25, lw=3)
        best = running_best(values, direction)
        ax.step(numbers, [b if b is not None else math.nan for b in best], where="post", color="#ff7f0e",
                label=f"running best ({direction})")
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    axes[-1].set_xlabel("experiment number")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if numbers:
        axes[-1].set_xlim(0.5, len(numbers) + 0.5)
    any_failed = any(r.get("status") != "succeeded" for r in results)
    fig.suptitle("Objectives against experiment number" + (" (red bands: failed experiments)" if any_failed else ""),
                 fontsize=10)
    return _svg(fig)


def pareto_figure(summary: dict[str, Any], front: set[int], hv: float) -> str:
    plt = _pyplot()
    points = experiment_points(summary)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    dominated = [p for p in points if p[0] not in front]
    on_front = sorted((p for p in points if p[0] in front), key=lambda p: p[2])
    ax.scatter([p[1] for p in dominated], [p[2] for p in dominated], s=18, color="#9e9e9e", label="dominated")
    ax.scatter([p[1] for p in on_front], [p[2] for p in on_front], s=36, color="#d62728", zorder=3,
               label="Pareto front")
    if on_front:
        # staircase of the non-dominated region: from each point down to the next lower E-factor
        xs, ys = [], []
        for k, (_n, sty, ef) in enumerate(on_front):
            xs += [sty, sty]
            ys += [ef, on_front[k + 1][2] if k + 1 < len(on_front) else ef]
        ax.plot(xs, ys, color="#d62728", lw=1, alpha=0.6)
    for n, sty, ef in points:
        ax.annotate(str(n), (sty, ef), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.axvline(REFERENCE_STY_KG_M3_H, color="#2ca02c", ls="--", lw=0.8)
    ax.axhline(REFERENCE_E_FACTOR, color="#2ca02c", ls="--", lw=0.8, label="hypervolume reference")
    ax.set_xlabel("STY / kg m$^{-3}$ h$^{-1}$ (maximise)")
    ax.set_ylabel("E-factor (minimise)")
    ax.set_title(f"Pareto front: hypervolume {hv:,.0f} (reference STY {REFERENCE_STY_KG_M3_H:g}, "
                 f"E-factor {REFERENCE_E_FACTOR:g})", fontsize=10)
    ax.legend(loc="best", fontsize=7)
    return _svg(fig)


def gantt_figure(schedule: Sequence[dict[str, Any]]) -> str:
    plt = _pyplot()
    resources = sorted({str(e["resource"]) for e in schedule})
    experiments = sorted({str(e.get("experiment", "")) for e in schedule})
    cmap = plt.get_cmap("tab20")
    colour = {x: cmap(i % 20) for i, x in enumerate(experiments)}
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.5 * max(1, len(resources))))
    t0 = min(float(e["start_s"]) for e in schedule)
    for e in schedule:
        row = resources.index(str(e["resource"]))
        start, end = float(e["start_s"]) - t0, float(e["end_s"]) - t0
        ax.barh(row, end - start, left=start, height=0.6, color=colour[str(e.get("experiment", ""))],
                edgecolor="black", linewidth=0.3)
        if e.get("experiment") not in (None, ""):
            ax.text(start + (end - start) / 2, row, str(e["experiment"]), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(resources)), resources)
    ax.invert_yaxis()
    ax.set_xlabel("simulated time from the first step / s")
    ax.set_title("Resource use (bars labelled with the experiment number)", fontsize=10)
    return _svg(fig)


# --- page -------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:62em;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.facts{display:flex;flex-wrap:wrap;gap:.5em 1.5em;margin:.6em 0} .facts div{background:#f4f6f8;padding:.3em .7em;border-radius:4px}
figure{margin:.5em 0} figure svg{width:100%;max-width:52em;height:auto} figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.82em;width:100%} th,td{border:1px solid #ddd;padding:.25em .45em;text-align:right}
th{background:#f4f6f8} td.l{text-align:left} tr.failed{background:#fdecea} tr.front td:first-child{font-weight:bold;color:#d62728} td:first-child{white-space:nowrap}
.note{color:#666;font-style:italic}
"""


def _fmt(fmt: str, v: Optional[float]) -> str:
    return "" if v is None else fmt.format(v)


def experiments_table(summary: dict[str, Any], front: set[int]) -> str:
    head = (["#", "task", "status"] + [label for _k, label, _f in CONDITION_COLUMNS]
            + [label for _k, label, _f in OUTCOME_COLUMNS] + ["message"])
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for n, r in enumerate(summary.get("results") or [], start=1):
        status = str(r.get("status", ""))
        cls = "failed" if status != "succeeded" else ("front" if n in front else "")
        cond = r.get("conditions") or {}
        cells = [f"<td>{n}{' ★' if n in front else ''}</td>",
                 f"<td class='l' title='{html.escape(str(r.get('task_id', '')))}'>"
                 f"{html.escape(str(r.get('task_id', ''))[:8])}</td>",
                 f"<td class='l'>{html.escape(status)}</td>"]
        cells += [f"<td>{_fmt(f, _value(cond, k))}</td>" for k, _l, f in CONDITION_COLUMNS]
        cells += [f"<td>{_fmt(f, _value(r.get('outcome'), k))}</td>" for k, _l, f in OUTCOME_COLUMNS]
        cells.append(f"<td class='l'>{html.escape(str(r.get('message') or ''))}</td>")
        rows.append(f"<tr class='{cls}' id='experiment-{n}'>" + "".join(cells) + "</tr>")
    return "<table id='experiments'>\n" + "\n".join(rows) + "\n</table>"


def render_report(summary: dict[str, Any], *, schedule: Optional[list[dict[str, Any]]] = None) -> str:
    """The report page as HTML text."""
    points = experiment_points(summary)
    front_idx = pareto_front([(s, e) for _n, s, e in points])
    front = {points[i][0] for i in front_idx}
    hv = hypervolume([(s, e) for _n, s, e in points])
    results = summary.get("results") or []
    title = f"Campaign {summary.get('campaign') or ''}".strip()
    facts = [("experiments", summary.get("experiments", len(results))),
             ("succeeded", summary.get("succeeded", sum(r.get("status") == "succeeded" for r in results))),
             ("wall time", f"{summary['wall_s']:.0f} s" if isinstance(summary.get("wall_s"), (int, float)) else "?"),
             ("seed", summary.get("seed", "")), ("Pareto points", len(front)), ("hypervolume", f"{hv:,.1f}")]
    if points:
        best = max(points, key=lambda p: p[1])
        facts.append(("best STY", f"{best[1]:.1f} kg/m³/h (#{best[0]})"))
    if schedule:
        bounds = schedule_bounds(schedule)
        busiest = max(bounds["busy_s"], key=bounds["busy_s"].get)
        facts += [("simulated makespan", f"{bounds['makespan_s']:.0f} s"),
                  ("busiest resource", f"{busiest} {bounds['busy_s'][busiest]:.0f} s"
                   + (f" ({bounds['efficiency']:.0%} of the makespan)" if bounds["efficiency"] is not None else ""))]
    # the campaign's own bound (planner.scheduler.lower_bound_s: heads, tails, capacities) when it gives one
    if isinstance(summary.get("lower_bound_s"), (int, float)):
        facts.append(("resource lower bound", f"{summary['lower_bound_s']:.0f} s"))
    if isinstance(summary.get("efficiency"), (int, float)):
        facts.append(("efficiency", f"{summary['efficiency']:.2f}"))
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<div class='facts'>" + "".join(f"<div><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</div>"
                                        for k, v in facts) + "</div>",
        "<h2>Objectives</h2>",
        f"<figure id='objectives-figure'>{objectives_figure(summary)}"
        "<figcaption>Each objective of every succeeded experiment, with the best so far.</figcaption></figure>",
        "<h2>Pareto front</h2>",
        f"<figure id='pareto-figure'>{pareto_figure(summary, front, hv)}"
        "<figcaption>STY (maximised) against E-factor (minimised); labels are experiment numbers. "
        f"Hypervolume against the reference (STY {REFERENCE_STY_KG_M3_H:g} kg/m³/h, E-factor "
        f"{REFERENCE_E_FACTOR:g}): <b id='hypervolume'>{hv:.1f}</b>.</figcaption></figure>",
        "<h2>Resources</h2>",
    ]
    if schedule:
        parts.append(f"<figure id='gantt-figure'>{gantt_figure(schedule)}"
                     "<figcaption>Each bar is one step on one resource.</figcaption></figure>")
    else:
        parts.append("<p class='note' id='gantt-figure'>No resource schedule was recorded for this run.</p>")
    parts += ["<h2>Experiments</h2>", experiments_table(summary, front), "</body></html>"]
    return "\n".join(parts)


def write_report(run_dir: str | pathlib.Path, summary: dict[str, Any], *,
                 schedule: Optional[list[dict[str, Any]]] = None) -> pathlib.Path:
    """Write run_dir/report.html (self-contained) and return its path."""
    path = pathlib.Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(summary, schedule=schedule)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # never a half-written report
    return path


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m aichemist.report RUN_DIR  (reads summary.json and, if present, schedule.json)",
              file=sys.stderr)
        return 2
    run_dir = pathlib.Path(args[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    schedule_file = run_dir / "schedule.json"
    schedule = json.loads(schedule_file.read_text()) if schedule_file.exists() else None
    print(write_report(run_dir, summary, schedule=schedule))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
