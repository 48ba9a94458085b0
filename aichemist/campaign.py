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
                 log: Optional[TextIO] = None, extra_args: Optional[dict[str, str]] = None) -> None:
        from aichemist.launcher import Launcher

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
            self.wait_operational()
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


def _outcome_of(result: dict[str, Any]) -> dict[str, Any]:
    experiments = result.get("experiments") or []
    return dict(experiments[0]) if experiments else {}


class ReferenceModelService:
    """The reference "chemical brain": an ask/tell optimizer driving tasks through the bridge."""

    def __init__(self, client: Any, *, seed: int = 0, campaign: str = "", batch_size: int = 1,
                 variables: list[dict[str, Any]] | None = None, objectives: list[dict[str, Any]] | None = None,
                 task_timeout_s: float = 600.0) -> None:
        from planner.optimizer import Optimizer

        self.client = client
        self.campaign = campaign or f"snar-{int(time.time())}"
        self.batch_size = batch_size
        self.variables = variables or SNAR_VARIABLES
        self.objectives = objectives or SNAR_OBJECTIVES
        self.optimizer = Optimizer(self.variables, self.objectives, seed=seed)
        self.task_timeout_s = task_timeout_s

    def run(self, budget: int, on_event: Callable[[str, dict[str, Any]], None] = lambda *_: None) -> list[ExperimentOutcome]:
        outcomes: list[ExperimentOutcome] = []
        while len(outcomes) < budget:
            batch = self.optimizer.ask(min(self.batch_size, budget - len(outcomes)))
            submitted = []
            for conditions in batch:
                task = {"kind": "flow_experiment", "name": f"{self.campaign}-{len(outcomes) + len(submitted) + 1}",
                        "conditions": conditions, "proposed_by": f"reference-model-service/{type(self.optimizer).__name__}"}
                view = self.client.submit(task, campaign=self.campaign)
                submitted.append((view["id"], conditions, time.monotonic()))
                on_event("submitted", {"task_id": view["id"], "conditions": conditions, "n": len(outcomes) + len(submitted)})
            told_c, told_o = [], []
            for task_id, conditions, t0 in submitted:
                final = self.client.wait(task_id, timeout_s=self.task_timeout_s)
                out = ExperimentOutcome(task_id, conditions, final["status"], message=final.get("message") or "",
                                        wall_s=time.monotonic() - t0)
                if final["status"] == "succeeded":
                    out.outcome = _outcome_of(self.client.result(task_id))
                    told_c.append(conditions)
                    told_o.append({o["name"]: out.outcome.get(o["name"]) for o in self.objectives})
                outcomes.append(out)
                on_event("finished", {"n": len(outcomes), "outcome": out})
            if told_c:
                self.optimizer.tell(told_c, told_o)
        return outcomes


app = typer.Typer()


@app.command()
def campaign(experiments: int = typer.Option(20, min=1, max=500, help="experiment budget"),
             seed: int = typer.Option(0, help="optimizer seed"),
             batch_size: int = typer.Option(1, min=1, max=8),
             run_dir: Optional[pathlib.Path] = typer.Option(None, help="default: runs/<timestamp>"),
             verbose: bool = typer.Option(False, "--verbose", "-v", help="show every node's output")) -> None:
    """Run a closed-loop SnAr campaign in the digital twin (the main job)."""
    run_dir = run_dir or REPO / "runs" / time.strftime("%Y%m%d-%H%M%S")
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    say(f"campaign: {experiments} experiments, seed {seed}; run folder {run_dir}")
    t_start = time.monotonic()
    with TwinLab(run_dir, log=sys.stderr if verbose else None) as lab:
        say(f"lab up in {time.monotonic() - t_start:.1f} s: bridge {lab.url}, node logs in {run_dir / 'lab.log'}")
        with lab.client() as client:
            service = ReferenceModelService(client, seed=seed, batch_size=batch_size)

            def on_event(kind: str, data: dict[str, Any]) -> None:
                if kind == "submitted":
                    c = data["conditions"]
                    say(f"[{data['n']:>3}/{experiments}] submitted {data['task_id'][:8]}: tau {c['residence_time_min']:.2f} min, "
                        f"{c['temp_c']:.1f} C, {c['equivalents']:.2f} equiv, {c['conc_dfnb_m']:.3f} M")
                else:
                    o: ExperimentOutcome = data["outcome"]
                    if o.status == "succeeded":
                        say(f"[{data['n']:>3}/{experiments}] done in {o.wall_s:.1f} s: yield {o.outcome.get('yield_fraction', float('nan')):.3f}, "
                            f"STY {o.outcome.get('sty_kg_m3_h', float('nan')):.1f} kg/m3/h, E-factor {o.outcome.get('e_factor', float('nan')):.2f}")
                    else:
                        say(f"[{data['n']:>3}/{experiments}] {o.status}: {o.message}")

            outcomes = service.run(experiments, on_event)
    wall = time.monotonic() - t_start
    ok = [o for o in outcomes if o.status == "succeeded"]
    summary = {"experiments": len(outcomes), "succeeded": len(ok), "wall_s": round(wall, 1), "seed": seed,
               "campaign": service.campaign,
               "results": [{"task_id": o.task_id, "status": o.status, "conditions": o.conditions,
                            "outcome": o.outcome, "message": o.message} for o in outcomes]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    from aichemist.report import write_report

    report = write_report(run_dir, summary)
    if ok:
        best = max(ok, key=lambda o: o.outcome.get("sty_kg_m3_h") or 0.0)
        say(f"best STY {best.outcome.get('sty_kg_m3_h'):.1f} kg/m3/h at {best.conditions}")
    say(f"campaign finished: {len(ok)}/{len(outcomes)} succeeded in {wall:.0f} s")
    say(f"report {report}; summary {run_dir / 'summary.json'}; bag {run_dir / 'bag'}")
    if len(ok) != len(outcomes):
        raise typer.Exit(1)
