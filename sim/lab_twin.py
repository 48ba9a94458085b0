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
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

from aichemist.clock import SimClock
from aichemist.errors import ConfigurationError


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


class RealTimeRunner:
    """Advances a ``LabTwin`` against the wall clock at ``real_time_factor`` (twin_node's loop).

    ``on_tick(sim_time_s)`` is called after every advance (the node publishes /clock there).
    Pure threading; the wall clock is injected for tests."""

    def __init__(self, twin: LabTwin, real_time_factor: float, tick_s: float,
                 on_tick: Any = None, wall: Any = None) -> None:
        import time as _time

        self.twin = twin
        self.real_time_factor = real_time_factor
        self.tick_s = tick_s
        self.on_tick = on_tick
        self._wall = wall or _time.monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lag_s = 0.0

    def start(self) -> "RealTimeRunner":
        self._thread = threading.Thread(target=self._loop, name="twin-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        wall0, sim0 = self._wall(), self.twin.now()
        while not self._stop.is_set():
            target = sim0 + (self._wall() - wall0) * self.real_time_factor
            behind = target - self.twin.now()
            if behind > 0:
                # never more than 1 s of simulated time per tick: a stalled host catches up gently
                self.twin.advance(min(behind, max(1.0, self.real_time_factor * self.tick_s)))
            self.lag_s = max(0.0, target - self.twin.now())
            if self.on_tick is not None:
                self.on_tick(self.twin.now())
            self._stop.wait(self.tick_s)
