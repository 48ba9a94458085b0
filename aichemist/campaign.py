"""The main job: a closed-loop campaign in the digital twin.

``TwinLab`` brings the whole lab up from launch/twin.yaml (the twin, the device nodes, the
planner, the bridge node and the bridge's HTTP API) on a run folder, with a bootstrap key.
``ReferenceModelService`` is the stand-in for the cloud's "chemical brain": it asks
``planner.optimizer.Optimizer`` for conditions, submits each as a task over HTTP, waits for the
result and tells the optimizer, until the budget is spent. ``aichemist campaign`` runs both and
writes a summary to the run folder.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO

import typer

from aichemist.errors import AIChemistError, StepTimeout

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = REPO / "launch" / "twin.yaml"

#: The SnAr process window (the twin reactor's limits) and the two objectives of the benchmark.
SNAR_VARIABLES = [
    {"name": "residence_time_min", "type": "continuous", "low": 0.5, "high": 2.0},
    {"name": "equivalents", "type": "continuous", "low": 1.0, "high": 5.0},
    {"name": "conc_dfnb_m", "type": "continuous", "low": 0.1, "high": 0.5},
    {"name": "temp_c", "type": "continuous", "low": 30.0, "high": 120.0},
]
SNAR_OBJECTIVES = [{"name": "sty_kg_m3_h", "direction": "max"}, {"name": "e_factor", "direction": "min"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_api_key() -> str:
    """A key in the bridge's format: ak_<12 hex id>_<secret>."""
    return f"ak_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"


class TwinLab:
    """Every process of the twin lab, started and stopped together."""

    def __init__(self, run_dir: str | os.PathLike[str], *, manifest: str | os.PathLike[str] = DEFAULT_MANIFEST,
                 port: Optional[int] = None, database_url: Optional[str] = None,
                 log: Optional[TextIO] = None, extra_args: Optional[dict[str, str]] = None,
                 devices: tuple[str, ...] = ("flow_reactor",)) -> None:
        from aichemist.launcher import Launcher

        self.devices = devices
        self.run_dir = pathlib.Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = new_api_key()
        self.database_url = database_url or f"sqlite:///{self.run_dir / 'bridge.db'}"
        self._log_file = None
        if log is None:
            self._log_file = open(self.run_dir / "lab.log", "a", buffering=1)
            log = self._log_file
        args = {"run_dir": str(self.run_dir), "bridge_port": str(self.port), "database_url": self.database_url,
                **(extra_args or {})}
        self.launcher = Launcher(manifest, args, run_dir=self.run_dir, out=log, colour=False,
                                 extra_env={"AICHEMIST_BOOTSTRAP_ADMIN_KEY": self.api_key})

    def client(self) -> Any:
        from cloud_bridge.client import BridgeClient

        return BridgeClient(self.url, self.api_key)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Wait until the bridge answers /readyz (it has migrated its database)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise StepTimeout(f"the bridge at {self.url} was not ready within {timeout_s:g} s ({last}); "
                          f"see {self.run_dir / 'lab.log'}")

    def wait_operational(self, devices: tuple[str, ...] = ("flow_reactor",),
                         nodes: tuple[str, ...] = ("/planner_node", "/bridge_node"), timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait until the lab reports (GET /v1/lab/status) the given nodes up and the given
        devices' lifecycle nodes active, so the first task does not meet a lab still starting."""
        import httpx

        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while time.monotonic() < deadline:
            try:
                status = httpx.get(self.url + "/v1/lab/status", headers=headers, timeout=5.0).json()
            except (httpx.HTTPError, ValueError):
                status = {}
            up = set(status.get("nodes") or [])
            states = {d: (status.get("devices") or {}).get(d, {}).get("lifecycle_state") for d in devices}
            if set(nodes) <= up and all(st == "active" for st in states.values()):
                return status
            time.sleep(0.25)
        raise StepTimeout(f"the lab did not become operational within {timeout_s:g} s: nodes up "
                          f"{sorted(status.get('nodes') or [])}, devices {status.get('devices', {})}; "
                          f"see {self.run_dir / 'lab.log'}")

    def __enter__(self) -> "TwinLab":
        self.launcher.start()
        try:
            self.wait_ready()
            self.wait_operational(self.devices)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.launcher.stop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@dataclass
class ExperimentOutcome:
    task_id: str
    conditions: dict[str, Any]
    status: str
    outcome: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    wall_s: float = 0.0
    n: int = 0                                   # the experiment's number in the campaign (1-based)
    attempts: list[dict[str, Any]] = field(default_factory=list)   # earlier failed tries (task id, message)
    schedule: list[dict[str, Any]] = field(default_factory=list)   # the planner's executed steps (sim time)


def _outcome_of(result: dict[str, Any]) -> dict[str, Any]:
    experiments = result.get("experiments") or []
    return dict(experiments[0]) if experiments else {}


# experiments the model service keeps in flight: enough that the reactor (the bottleneck) has the
# next one fetched and waiting when a short run ends (bench/campaign.py: efficiency 0.89 with 3,
# 0.90-0.92 with 4, 0.95 with 5; docs/benchmarks.md)
DEFAULT_IN_FLIGHT = 5


class ReferenceModelService:
    """The reference "chemical brain": an ask/tell optimizer driving tasks through the bridge.

    It keeps ``parallel`` (5) experiments in flight (asynchronous Bayesian optimisation: each new
    proposal accounts for the pending ones), so the lab's reactor, robot and HPLC are never idle
    waiting for the next conditions. A task that fails is submitted again with the same conditions
    (up to ``retries`` times, each a new task); one that still fails is told to the optimizer as a
    failed measurement."""

    def __init__(self, client: Any, *, seed: int = 0, campaign: str = "", parallel: int = DEFAULT_IN_FLIGHT,
                 retries: int = 2,
                 variables: list[dict[str, Any]] | None = None, objectives: list[dict[str, Any]] | None = None,
                 task_timeout_s: float = 900.0, poll_s: float = 0.25, bridge_outage_s: float = 120.0) -> None:
        from planner.optimizer import Optimizer

        self.client = client
        self.campaign = campaign or f"snar-{int(time.time())}"
        self.parallel = parallel
        self.retries = retries
        self.variables = variables or SNAR_VARIABLES
        self.objectives = objectives or SNAR_OBJECTIVES
        self.optimizer = Optimizer(self.variables, self.objectives, seed=seed)
        self.task_timeout_s = task_timeout_s
        self.poll_s = poll_s
        self.bridge_outage_s = bridge_outage_s

    def _submit(self, n: int, conditions: dict[str, Any], attempt: int) -> str:
        task = {"kind": "flow_experiment", "name": f"{self.campaign}-{n}" + (f"-try{attempt}" if attempt > 1 else ""),
                "conditions": conditions, "proposed_by": f"reference-model-service/{type(self.optimizer).__name__}"}
        # the idempotency key makes a re-sent submission (after a bridge outage) the same task
        view = self._call(lambda: self.client.submit(task, campaign=self.campaign,
                                                     idempotency_key=f"{self.campaign}-{n}-{attempt}"))
        return str(view["id"])

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Call the bridge, riding out an outage (the API restarting) of up to ``bridge_outage_s``."""
        import httpx

        deadline = time.monotonic() + self.bridge_outage_s
        while True:
            try:
                return fn()
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run(self, budget: int, on_event: Callable[[str, dict[str, Any]], None] = lambda *_: None) -> list[ExperimentOutcome]:
        outcomes: list[ExperimentOutcome] = []
        in_flight: dict[str, ExperimentOutcome] = {}
        asked = 0
        while len(outcomes) < budget:
            while len(in_flight) < self.parallel and asked < budget:
                t_ask = time.monotonic()
                (conditions,) = self.optimizer.ask(1)   # the pending experiments are in the model
                asked += 1
                exp = ExperimentOutcome("", conditions, "submitted", n=asked, wall_s=time.monotonic())
                exp.task_id = self._submit(asked, conditions, 1)
                in_flight[exp.task_id] = exp
                on_event("submitted", {"task_id": exp.task_id, "conditions": conditions, "n": asked,
                                       "ask_s": exp.wall_s - t_ask, "submit_s": time.monotonic() - exp.wall_s,
                                       "method": self.optimizer.last_method})
            for task_id, view in self._wait_any(in_flight):
                exp = in_flight.pop(task_id)
                exp.status, exp.message = view["status"], view.get("message") or ""
                if exp.status == "succeeded":
                    result = self._call(lambda: self.client.result(task_id))
                    exp.outcome = _outcome_of(result)
                    raw = result.get("raw") if isinstance(result.get("raw"), dict) else {}
                    exp.schedule = [{**e, "task": task_id} for e in result.get("schedule") or raw.get("schedule") or []]
                elif len(exp.attempts) < self.retries:
                    exp.attempts.append({"task_id": task_id, "status": exp.status, "message": exp.message})
                    exp.task_id = self._submit(exp.n, exp.conditions, len(exp.attempts) + 1)
                    in_flight[exp.task_id] = exp
                    on_event("retried", {"n": exp.n, "task_id": exp.task_id, "failed": exp.attempts[-1]})
                    continue
                exp.wall_s = time.monotonic() - exp.wall_s
                self.optimizer.tell([exp.conditions], [{o["name"]: exp.outcome.get(o["name"]) for o in self.objectives}])
                outcomes.append(exp)
                on_event("finished", {"n": len(outcomes), "outcome": exp})
        return outcomes

    def _wait_any(self, in_flight: dict[str, ExperimentOutcome]) -> list[tuple[str, dict[str, Any]]]:
        """Block until at least one in-flight task is terminal; returns those (id, view)."""
        from cloud_bridge.client import TERMINAL

        while True:
            done = []
            for task_id, exp in in_flight.items():
                view = self._call(lambda: self.client.get(task_id))
                if view["status"] in TERMINAL:
                    done.append((task_id, view))
                elif time.monotonic() - exp.wall_s > self.task_timeout_s:
                    raise StepTimeout(f"task {task_id} (experiment {exp.n}) not finished within "
                                      f"{self.task_timeout_s:g} s; status {view['status']}")
            if done:
                return done
            time.sleep(self.poll_s)


def campaign_metrics(outcomes: list[ExperimentOutcome], wall_s: float) -> dict[str, Any]:
    """Makespan (simulated), resource lower bound, efficiency and speedup of the steps that ran."""
    from planner.scheduler import executed_metrics

    entries = [e for o in outcomes for e in o.schedule]
    metrics = executed_metrics(entries)
    metrics["speedup"] = metrics["makespan_s"] / wall_s if wall_s > 0 else 0.0
    return metrics


def gantt_entries(outcomes: list[ExperimentOutcome]) -> list[dict[str, Any]]:
    """The report's per-resource schedule rows."""
    return [{"resource": r, "start_s": e["start_s"], "end_s": e["end_s"], "label": e.get("op") or e["step"],
             "experiment": o.n}
            for o in outcomes for e in o.schedule for r in e.get("resources") or []]


app = typer.Typer()


ANALYSIS_DEVICES = {"inline": ("flow_reactor",), "hplc": ("flow_reactor", "hplc"),
                    "hplc_robot": ("flow_reactor", "hplc", "manipulator")}


def run_campaign(experiments: int, *, seed: int = 0, parallel: int = DEFAULT_IN_FLIGHT, analysis: str = "hplc_robot",
                 speed: float = 60.0, run_dir: pathlib.Path, log: Optional[TextIO] = None,
                 say: Callable[[str], None] = lambda _m: None, manifest: str | os.PathLike[str] = DEFAULT_MANIFEST,
                 extra_args: Optional[dict[str, str]] = None,
                 during: Optional[Callable[["TwinLab", "ReferenceModelService"], Any]] = None) -> dict[str, Any]:
    """Bring the twin lab up, run the closed loop, write summary.json + report.html; returns the
    summary. ``during(lab, service)`` (tests: fault injection) runs in a thread alongside."""
    import threading

    run_dir = pathlib.Path(run_dir)
    say(f"campaign: {experiments} experiments, seed {seed}, {parallel} in flight, analysis {analysis}, "
        f"twin at {speed:g}x real time; run folder {run_dir}")
    t_start = time.monotonic()
    args = {"analysis": analysis, "real_time_factor": f"{speed:.1f}", **(extra_args or {})}
    lab = TwinLab(run_dir, manifest=manifest, log=log, extra_args=args, devices=ANALYSIS_DEVICES[analysis])
    with lab:
        t_up = time.monotonic()
        say(f"lab up in {t_up - t_start:.1f} s: bridge {lab.url}, node logs in {run_dir / 'lab.log'}")
        with lab.client() as client:
            service = ReferenceModelService(client, seed=seed, parallel=parallel)
            side = None
            if during is not None:
                side = threading.Thread(target=during, args=(lab, service), name="campaign-during", daemon=True)
                side.start()

            def on_event(kind: str, data: dict[str, Any]) -> None:
                if kind == "submitted":
                    c = data["conditions"]
                    say(f"[{data['n']:>3}/{experiments}] submitted {data['task_id'][:8]}: tau {c['residence_time_min']:.2f} min, "
                        f"{c['temp_c']:.1f} C, {c['equivalents']:.2f} equiv, {c['conc_dfnb_m']:.3f} M "
                        f"({data.get('method')} {data.get('ask_s', 0):.1f} s, POST {data.get('submit_s', 0):.1f} s)")
                elif kind == "retried":
                    say(f"[{data['n']:>3}/{experiments}] failed ({data['failed']['message']}); retried as "
                        f"{data['task_id'][:8]}")
                else:
                    o: ExperimentOutcome = data["outcome"]
                    if o.status == "succeeded":
                        hplc = "HPLC " if "hplc" in o.outcome else ""
                        say(f"[{data['n']:>3}/{experiments}] experiment {o.n} done in {o.wall_s:.1f} s: "
                            f"{hplc}yield {o.outcome.get('yield_fraction', float('nan')):.3f}, "
                            f"STY {o.outcome.get('sty_kg_m3_h', float('nan')):.1f} kg/m3/h, "
                            f"E-factor {o.outcome.get('e_factor', float('nan')):.2f}")
                    else:
                        say(f"[{data['n']:>3}/{experiments}] experiment {o.n} {o.status}: {o.message}")

            outcomes = service.run(experiments, on_event)
            t_done = time.monotonic()
            if side is not None:
                side.join(timeout=60)
    wall = time.monotonic() - t_start
    ok = [o for o in outcomes if o.status == "succeeded"]
    metrics = campaign_metrics(outcomes, t_done - t_up)
    summary = {"experiments": len(outcomes), "succeeded": len(ok), "wall_s": round(wall, 1),
               "campaign_wall_s": round(t_done - t_up, 1), "seed": seed, "campaign": service.campaign,
               "analysis": analysis, "parallel": parallel, "real_time_factor": speed,
               "retried": sum(len(o.attempts) for o in outcomes), **{k: round(v, 3) for k, v in metrics.items()},
               "results": [{"task_id": o.task_id, "n": o.n, "status": o.status, "conditions": o.conditions,
                            "outcome": o.outcome, "message": o.message, "attempts": o.attempts} for o in outcomes]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    schedule = gantt_entries(outcomes)
    (run_dir / "schedule.json").write_text(json.dumps(schedule, indent=1))
    from aichemist.report import write_report

    report = write_report(run_dir, summary, schedule=schedule)
    if ok:
        best = max(ok, key=lambda o: o.outcome.get("sty_kg_m3_h") or 0.0)
        say(f"best STY {best.outcome.get('sty_kg_m3_h'):.1f} kg/m3/h at {best.conditions}")
    say(f"campaign finished: {len(ok)}/{len(outcomes)} succeeded in {wall:.0f} s wall "
        f"({summary['campaign_wall_s']:.0f} s after start-up); simulated makespan {metrics['makespan_s']:.0f} s, "
        f"efficiency {metrics['efficiency']:.2f} (resource bound {metrics['lower_bound_s']:.0f} s), "
        f"speedup {metrics['speedup']:.1f}x")
    say(f"report {report}; summary {run_dir / 'summary.json'}; bag {run_dir / 'bag'}")
    return summary


@app.command()
def campaign(experiments: int = typer.Option(20, min=1, max=500, help="experiment budget"),
             seed: int = typer.Option(0, help="optimizer seed"),
             parallel: int = typer.Option(DEFAULT_IN_FLIGHT, min=1, max=8,
                                          help="experiments in flight (asynchronous BO)"),
             analysis: str = typer.Option("hplc_robot", help="hplc_robot (the robot carries vials to the HPLC) | "
                                                             "hplc | inline (the reactor's detector only)"),
             speed: float = typer.Option(60.0, min=1.0, max=200.0, help="the twin's simulated s per wall s"),
             run_dir: Optional[pathlib.Path] = typer.Option(None, help="default: runs/<timestamp>"),
             verbose: bool = typer.Option(False, "--verbose", "-v", help="show every node's output")) -> None:
    """Run a closed-loop SnAr campaign in the digital twin (the main job)."""
    if analysis not in ANALYSIS_DEVICES:
        raise typer.BadParameter(f"analysis={analysis!r}: one of {', '.join(ANALYSIS_DEVICES)}", param_hint="--analysis")
    run_dir = run_dir or REPO / "runs" / time.strftime("%Y%m%d-%H%M%S")
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    summary = run_campaign(experiments, seed=seed, parallel=parallel, analysis=analysis, speed=speed,
                           run_dir=run_dir, log=sys.stderr if verbose else None, say=say)
    if summary["succeeded"] != summary["experiments"]:
        raise typer.Exit(1)
