"""The lab twin: subsystems stepped on one simulated clock.

A subsystem is anything with ``step(t, dt)`` (``TwinSubsystem``): the flow reactor twin, later
the robot world. Subsystems that own device emulators expose them as ``emulators`` (device name
-> emulator), so whoever hosts the twin (``twin_node``, tests, benchmarks) can serve each on a
pseudo-terminal or connect to it in-process.

Subsystems are plugins: the twin's params list an import path per subsystem
(``"package.module:factory"``) and keyword arguments; the factory returns the subsystem.

Two ways to run:
- lock-step (tests, benchmarks): the controller's ``SimClock.sleep`` advances the twin exactly as
  far as the controller waits (``LabTwin(clock=SimClock())`` registers itself as a stepper);
- free-running (``twin_node``): ``advance(dt)`` called from a real-time loop at a real-time
  factor, with the simulated time published on /clock.

State across a restart (``TwinStateStore``): subsystems that own state worth keeping (what is in
which vial) expose ``state_dict()`` / ``load_state_dict(state)`` and count their discrete changes
in ``state_revision``; the store writes the simulated time and those states to one JSON file,
atomically, and a restarted twin resumes from it, never earlier in simulated time than where the
killed one had got to.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
import time
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

from aichemist.clock import SimClock
from aichemist.errors import ConfigurationError

log = logging.getLogger(__name__)


@runtime_checkable
class TwinSubsystem(Protocol):
    def step(self, t: float, dt: float) -> None:
        """Advance this subsystem from simulated time ``t`` by ``dt`` seconds."""


def load_subsystem(target: str, **kwargs: Any) -> TwinSubsystem:
    """Build a subsystem from ``"package.module:factory"`` and keyword arguments."""
    if ":" not in target:
        raise ConfigurationError(f"twin subsystem {target!r} must look like 'package.module:factory'",
                                 problems=[{"field": "plugin", "value": target}])
    module_name, attr = target.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"twin subsystem {target!r} cannot be loaded: {exc}",
                                 problems=[{"field": "plugin", "value": target}]) from exc
    subsystem = factory(**kwargs)
    if not isinstance(subsystem, TwinSubsystem):
        raise ConfigurationError(f"twin subsystem {target!r} has no step(t, dt)")
    return subsystem


class LabTwin:
    """Named subsystems advanced together on one simulated timeline."""

    def __init__(self, subsystems: Mapping[str, TwinSubsystem] | None = None, *,
                 clock: SimClock | None = None, max_step_s: float = 0.05) -> None:
        self.subsystems: dict[str, TwinSubsystem] = dict(subsystems or {})
        self._owns_clock = clock is None
        self.clock = clock if clock is not None else SimClock(max_step=max_step_s)
        self.clock.add_stepper(self._step_all)
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, plugins: Iterable[Mapping[str, Any]], **kw: Any) -> "LabTwin":
        """``plugins``: [{"name": ..., "plugin": "module:factory", "params": {...},
        "links": {"attribute": "other subsystem name"}}, ...].

        ``links`` wire subsystems together after all are built, e.g. the reactor twin's
        ``chromatograph`` to the HPLC subsystem (collected vials reach its rack)."""
        plugins = list(plugins)
        subsystems = {}
        for entry in plugins:
            name = entry.get("name") or entry["plugin"].rsplit(":", 1)[-1]
            subsystems[name] = load_subsystem(entry["plugin"], **dict(entry.get("params") or {}))
        for entry in plugins:
            name = entry.get("name") or entry["plugin"].rsplit(":", 1)[-1]
            for attribute, other in dict(entry.get("links") or {}).items():
                if other not in subsystems:
                    raise ConfigurationError(
                        f"twin subsystem {name!r}: link {attribute!r} names unknown subsystem {other!r}",
                        problems=[{"field": "links", "value": other}])
                setattr(subsystems[name], attribute, subsystems[other])
        return cls(subsystems, **kw)

    def add(self, name: str, subsystem: TwinSubsystem) -> None:
        with self._lock:
            self.subsystems[name] = subsystem

    @property
    def emulators(self) -> dict[str, Any]:
        """Every device emulator of every subsystem (device name -> emulator)."""
        out: dict[str, Any] = {}
        for sub in self.subsystems.values():
            for name, emu in getattr(sub, "emulators", {}).items():
                if name in out:
                    raise ConfigurationError(f"twin: device name {name!r} is used by two subsystems")
                out[name] = emu
        return out

    def now(self) -> float:
        return self.clock.now()

    def resume_at(self, t_s: float) -> None:
        """Jump simulated time forward to ``t_s`` without stepping anything (a restarted twin
        continuing the timeline of the one before it). Only a twin that owns its clock can."""
        if not self._owns_clock:
            raise ConfigurationError("twin: cannot resume the time of a clock it does not own")
        if not math.isfinite(t_s) or t_s < self.now():
            raise ConfigurationError(f"twin: cannot resume at t = {t_s} s, before now ({self.now()} s)")
        with self._lock:
            self.clock = SimClock(start=float(t_s), max_step=self.clock.max_step)
            self.clock.add_stepper(self._step_all)

    def inject_fault(self, target: str, fault: str, **kwargs: Any) -> None:
        """Inject ``fault`` into the emulator or subsystem named ``target``; an empty ``fault``
        clears that target's faults. Unknown targets or faults: ConfigurationError naming them."""
        with self._lock:
            obj = self.emulators.get(target) or self.subsystems.get(target)
            if obj is None:
                known = sorted(set(self.emulators) | set(self.subsystems))
                raise ConfigurationError(f"twin: no device or subsystem {target!r}; known: {', '.join(known)}",
                                         problems=[{"field": "device", "value": target, "limit": known}])
            try:
                if fault:
                    obj.inject(fault, **kwargs)
                else:
                    obj.clear_faults()
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(f"twin: {target}: {exc}",
                                         problems=[{"field": "fault", "value": fault}]) from exc

    def _step_all(self, t: float, dt: float) -> None:
        with self._lock:
            for sub in self.subsystems.values():
                sub.step(t, dt)

    def advance(self, seconds: float) -> None:
        """Advance simulated time by ``seconds`` (in steps of at most the clock's max step)."""
        self.clock.sleep(seconds)


# --- parameters of a hosted twin (twin_node) ----------------------------------------------
from pydantic import Field  # noqa: E402

from aichemist.params import Params  # noqa: E402
from sim.vial_hand_over import HandOverParams  # noqa: E402


def default_twin_dir() -> str:
    import os
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"aichemist-twin-{os.getuid()}")


class TwinParams(Params):
    twin_dir: str = Field("", description="directory of the emulators' pty symlinks "
                                          "(empty: /tmp/aichemist-twin-<uid>)")
    real_time_factor: float = Field(20.0, gt=0.0, le=1000.0, description="simulated s per wall s")
    max_step_s: float = Field(0.05, gt=0.0, le=1.0, description="largest physics step")
    clock_rate_hz: float = Field(50.0, gt=0.0, le=1000.0, description="/clock publication rate (wall)")
    subsystems: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"name": "hplc", "plugin": "sim.emulators.online_hplc:build_online_hplc",
             "params": {"name": "hplc",
                        "vial_positions": {f"vial_{i}": i for i in range(1, 6)} | {"std": 8}}},
            {"name": "flow_reactor", "plugin": "sim.reactor_twin:build_flow_reactor_twin", "params": {},
             "links": {"chromatograph": "hplc"}}],
        description="[{name, plugin: 'module:factory', params: {...}, links: {attribute: subsystem}}]")
    robot_carries_vials: bool = Field(False, description="collected vials reach the HPLC only when the robot "
                                                         "places them (/manipulator/vial_transfers)")
    vial_hand_over: HandOverParams = Field(default_factory=HandOverParams)
    state_path: str = Field("", description="file of the twin's state (simulated time, vial contents), "
                                            "restored at start (empty: nothing kept, time starts at 0)")
    state_save_period_s: float = Field(0.5, gt=0.0, le=10.0,
                                       description="write the state at least this often (wall s)")


class TwinStateStore:
    """The hosted twin's state in one JSON file: simulated time, the states of the subsystems
    that have ``state_dict()`` / ``load_state_dict(state)``, and those of extra ``parts`` (e.g.
    the vial hand-over). Device states are not kept: a restarted twin's devices are in their
    power-on state, as a power-cycled rig's would be.

    ``save()`` writes atomically (a temporary file, then ``os.replace``): a reader finds the old
    file or the new one, never half of one. ``maybe_save()`` (the runner calls it after every
    advance) writes when ``period_s`` of wall time or ``max_sim_gap_s`` of simulated time have
    passed since the last write, or when some part's ``state_revision`` changed (a vial event).
    So the twin's time is never more than ``resume_margin_s`` = ``max_sim_gap_s`` + one advance
    (``max_tick_advance_s``) past the last saved time, and ``restore()`` resumes at saved +
    margin: simulated time never goes backwards across a restart, whatever the moment of the kill.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str], twin: LabTwin, parts: Mapping[str, Any] | None = None, *,
                 period_s: float = 0.5, max_sim_gap_s: float, max_tick_advance_s: float,
                 wall: Any = None) -> None:
        self.path = os.fspath(path)
        self.twin = twin
        self.parts = {name: part for name, part in (parts or {}).items() if part is not None}
        self.period_s = float(period_s)
        self.max_sim_gap_s = float(max_sim_gap_s)
        self.resume_margin_s = self.max_sim_gap_s + float(max_tick_advance_s)
        self._wall = wall or time.monotonic
        self._lock = threading.Lock()
        self._last_wall = -math.inf
        self._last_t = -math.inf
        self._last_revision: int | None = None
        self._failing = False
        self.saves = 0

    def _holders(self) -> dict[str, dict[str, Any]]:
        return {"subsystems": {n: s for n, s in self.twin.subsystems.items() if hasattr(s, "state_dict")},
                "parts": self.parts}

    def revision(self) -> int:
        """Sum of the parts' ``state_revision`` counters: changes on every vial event."""
        return sum(int(getattr(obj, "state_revision", 0))
                   for group in self._holders().values() for obj in group.values())

    def snapshot(self) -> dict[str, Any]:
        with self.twin._lock:
            return {"version": self.VERSION, "t_s": self.twin.now(), "resume_margin_s": self.resume_margin_s,
                    **{group: {name: obj.state_dict() for name, obj in objs.items()}
                       for group, objs in self._holders().items()}}

    def save(self) -> dict[str, Any]:
        """Write the state now (atomically); returns what was written."""
        with self._lock:
            wall, revision = self._wall(), self.revision()
            state = self.snapshot()
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(state, f)
            os.replace(tmp, self.path)
            self._last_wall, self._last_t, self._last_revision = wall, state["t_s"], revision
            self.saves += 1
            return state

    def maybe_save(self) -> bool:
        """Save if due (see the class); a failed write is logged once and retried next time."""
        if (self._wall() - self._last_wall < self.period_s and self.twin.now() - self._last_t < self.max_sim_gap_s
                and self.revision() == self._last_revision):
            return False
        try:
            self.save()
        except OSError as exc:
            if not self._failing:
                log.error("twin state: cannot write %s: %s (the twin runs on; a restart would lose it)",
                          self.path, exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("twin state: %s written again", self.path)
        self._failing = False
        return True

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is no file. An unreadable file is a
        ConfigurationError naming it (delete it to start the twin afresh)."""
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(text)
            if not isinstance(state, dict) or state.get("version") != self.VERSION:
                raise ValueError(f"not a version-{self.VERSION} twin state")
            t = float(state["t_s"]) + float(state.get("resume_margin_s", 0.0))
            if not math.isfinite(t) or t < 0:
                raise ValueError(f"bad time {state['t_s']!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"twin state {self.path} is unreadable ({exc}); delete it to start the "
                                     "twin from t = 0", problems=[{"field": "state_path", "value": self.path}]) from exc
        return state

    def restore(self, state: Mapping[str, Any]) -> float:
        """Put the twin into ``state`` (from ``load``): time = saved time + the saver's margin,
        then each part's state. Returns the simulated time the twin resumes at."""
        t = float(state["t_s"]) + float(state.get("resume_margin_s", 0.0))
        self.twin.resume_at(t)
        holders = self._holders()
        with self.twin._lock:
            for group in ("subsystems", "parts"):
                for name, sub_state in dict(state.get(group) or {}).items():
                    obj = holders[group].get(name)
                    if obj is None or not hasattr(obj, "load_state_dict"):
                        log.warning("twin state: no %s %r to restore into; its state is dropped", group[:-1], name)
                        continue
                    obj.load_state_dict(sub_state)
        self._last_revision = None  # the restored state is written at the next tick
        return t


class RealTimeRunner:
    """Advances a ``LabTwin`` against the wall clock at ``real_time_factor`` (twin_node's loop).

    ``on_tick(sim_time_s)`` is called after every advance (the node publishes /clock there).
    Pure threading; the wall clock is injected for tests."""

    def __init__(self, twin: LabTwin, real_time_factor: float, tick_s: float,
                 on_tick: Any = None, wall: Any = None, state_store: TwinStateStore | None = None) -> None:
        self.twin = twin
        self.real_time_factor = real_time_factor
        self.tick_s = tick_s
        self.on_tick = on_tick
        self.state_store = state_store  # saved after every advance when due (``maybe_save``)
        self._wall = wall or time.monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lag_s = 0.0

    @property
    def max_advance_s(self) -> float:
        """The most simulated time one tick advances (a stalled host catches up gently)."""
        return max(1.0, self.real_time_factor * self.tick_s)

    def start(self) -> "RealTimeRunner":
        self._thread = threading.Thread(target=self._loop, name="twin-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.state_store is not None:
            try:
                self.state_store.save()
            except OSError as exc:
                log.error("twin state: final save to %s failed: %s", self.state_store.path, exc)

    def _loop(self) -> None:
        wall0, sim0 = self._wall(), self.twin.now()
        while not self._stop.is_set():
            target = sim0 + (self._wall() - wall0) * self.real_time_factor
            behind = target - self.twin.now()
            if behind > 0:
                # never more than 1 s of simulated time per tick: a stalled host catches up gently
                self.twin.advance(min(behind, self.max_advance_s))
            self.lag_s = max(0.0, target - self.twin.now())
            if self.state_store is not None:
                self.state_store.maybe_save()
            if self.on_tick is not None:
                self.on_tick(self.twin.now())
            self._stop.wait(self.tick_s)
