"""Clocks: the one seam between real time and the twin's simulated time.

Cores never call ``time.sleep`` or ``time.monotonic`` directly: they take a ``Clock``. On hardware
it is ``WallClock``; in the twin's in-process tests and benchmarks it is a ``SimClock`` that
advances simulated time (and steps the twin's physics) only when the core waits, so a run is
deterministic and far faster than real time; in ROS nodes it is the node's clock (sim time from
/clock when ``use_sim_time`` is set).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock's timeline."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock's timeline."""


class WallClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimClock:
    """Lock-step simulated time.

    ``sleep(dt)`` advances time by ``dt`` in steps of at most ``max_step`` and calls every
    registered stepper with (t, dt) per step, so physics advances exactly as far as the
    controller waits. Thread-safe: one advance at a time.
    """

    def __init__(self, start: float = 0.0, max_step: float = 0.05) -> None:
        self._t = start
        self.max_step = max_step
        self._steppers: list[Callable[[float, float], None]] = []
        self._lock = threading.RLock()

    def add_stepper(self, stepper: Callable[[float, float], None]) -> None:
        self._steppers.append(stepper)

    def now(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds``. Any positive wait moves time forward, however small, so a
        caller that waits in a loop for a deadline always gets there."""
        with self._lock:
            remaining = seconds
            while remaining > 0:
                dt = min(self.max_step, remaining)
                for step in self._steppers:
                    step(self._t, dt)
                new_t = self._t + dt
                self._t = new_t if new_t > self._t else math.nextafter(self._t, math.inf)
                remaining -= dt
