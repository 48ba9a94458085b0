"""A ``Clock`` (aichemist.clock) on a node's ROS time: simulated time from /clock in the twin
(``use_sim_time``), the system time on hardware. The planner's executor runs on it, so step
timeouts, retry back-offs and the recorded schedule are on the lab's timeline."""

from __future__ import annotations

import threading
from typing import Any


class RosTimeClock:
    def __init__(self, node: Any, poll_s: float = 0.005) -> None:
        self._clock = node.get_clock()
        self._poll_s = poll_s
        self._never = threading.Event()  # waited on, never set: an interruptible pause

    def now(self) -> float:
        return self._clock.now().nanoseconds * 1e-9

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        end = self.now() + seconds
        # poll: with sim time the wall duration of ``seconds`` depends on the twin's speed (and a
        # stopped /clock stops the wait too, as it stops everything else on the lab's timeline)
        while self.now() < end:
            self._never.wait(min(self._poll_s * 10, max(self._poll_s, (end - self.now()) / 50.0)))
