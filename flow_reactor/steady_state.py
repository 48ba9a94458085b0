"""Steady-state detection from the inline detector's signal.

A flow reactor is at steady state when what leaves it no longer changes. The detector sees the
outlet, so the decision is made on its signal, never on a fixed sleep:

1. nothing can be steady before the new feed has physically reached the detector: the first
   ``min_wait_s`` (the plug-flow transit time of the reactor plus the dead volume to the detector,
   times a factor) are never accepted;
2. the last ``window_s`` of samples must be flat: their spread (max - min) within
   ``rel_tol`` x |mean| + ``abs_tol``, and the least-squares trend over the window must change the
   signal by less than half of that, so a slow creep is not mistaken for a plateau;
3. past ``max_wait_s`` without a plateau the wait fails (the caller raises a typed timeout).

Pure logic: times and values are passed in, so it is tested without a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SteadyStateCriteria:
    min_wait_s: float
    window_s: float
    max_wait_s: float
    rel_tol: float = 0.01
    abs_tol: float = 1e-3

    def __post_init__(self) -> None:
        if not (0 < self.window_s and 0 <= self.min_wait_s < self.max_wait_s):
            raise ValueError(f"inconsistent steady-state criteria: {self}")


class SteadyStateDetector:
    """Feed ``update(t_s, value)``; ``steady`` turns true once, at ``steady_at_s``."""

    def __init__(self, criteria: SteadyStateCriteria, t0_s: float) -> None:
        self.criteria = criteria
        self.t0_s = t0_s
        self._samples: deque[tuple[float, float]] = deque()
        self.steady = False
        self.steady_at_s: float | None = None
        self.steady_value: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self._samples[-1][0] - self.t0_s) if self._samples else 0.0

    def timed_out(self, t_s: float) -> bool:
        return not self.steady and t_s - self.t0_s > self.criteria.max_wait_s

    def update(self, t_s: float, value: float) -> bool:
        if self.steady:
            return True
        if not np.isfinite(value):
            return False
        c = self.criteria
        self._samples.append((t_s, float(value)))
        while self._samples and self._samples[0][0] < t_s - c.window_s:
            self._samples.popleft()
        if t_s - self.t0_s < c.min_wait_s:
            return False
        # the window must be covered by samples taken after the minimum wait
        first_t = self._samples[0][0]
        if first_t - self.t0_s < c.min_wait_s - 1e-9 or t_s - first_t < 0.9 * c.window_s:
            return False
        times = np.fromiter((s[0] for s in self._samples), float)
        values = np.fromiter((s[1] for s in self._samples), float)
        mean = float(values.mean())
        tolerance = c.rel_tol * abs(mean) + c.abs_tol
        if float(values.max() - values.min()) > tolerance:
            return False
        if len(values) >= 3:
            slope = float(np.polyfit(times - times[0], values, 1)[0])
            if abs(slope) * (times[-1] - times[0]) > tolerance / 2:
                return False
        self.steady = True
        self.steady_at_s = t_s
        self.steady_value = mean
        return True
