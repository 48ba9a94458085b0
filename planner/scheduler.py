"""Resource-aware list scheduling of a plan's steps.

Each step needs all of its resources (robot, reactor, HPLC; each with a capacity) for its whole
duration and starts after its dependencies end. Steps are dispatched in time order (a serial
schedule-generation scheme): at each decision time every ready step whose resources are free is
started, the one with the longest remaining critical path (its ``tail``: its own duration plus
the longest chain of successors) first. Independent work of successive experiments overlaps:
while the HPLC measures experiment k, the reactor runs k+1 and the robot carries vials.

``lower_bound_s`` is the resource bound on any schedule's makespan: for each resource, the
shortest time before any of its steps can start (longest predecessor chain), plus all its busy
time, plus the shortest chain after its last step; and the longest dependency chain.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable

from aichemist.errors import PlanningError
from planner.compiler import Step


@dataclass(frozen=True)
class ScheduledStep:
    step_id: str
    start_s: float
    end_s: float
    resources: tuple[str, ...]


@dataclass
class Schedule:
    entries: list[ScheduledStep]

    @property
    def makespan_s(self) -> float:
        return max((e.end_s for e in self.entries), default=0.0)

    def order(self) -> list[str]:
        return [e.step_id for e in sorted(self.entries, key=lambda e: (e.start_s, e.step_id))]

    def busy_s(self, resource: str) -> float:
        return sum(e.end_s - e.start_s for e in self.entries if resource in e.resources)


def _graph(steps: list[Step]) -> tuple[dict[str, Step], dict[str, list[str]], list[str]]:
    by_id = {s.id: s for s in steps}
    succ: dict[str, list[str]] = {s.id: [] for s in steps}
    indeg = {s.id: 0 for s in steps}
    for s in steps:
        for d in s.depends_on:
            if d not in by_id:
                raise PlanningError(f"step {s.id} depends on unknown step {d}")
            succ[d].append(s.id)
            indeg[s.id] += 1
    order, queue = [], [i for i, n in indeg.items() if n == 0]
    while queue:
        i = queue.pop()
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                queue.append(j)
    if len(order) != len(steps):
        raise PlanningError("the plan's dependencies form a cycle: "
                            + ", ".join(sorted(i for i, n in indeg.items() if n > 0)))
    return by_id, succ, order


def heads_tails(steps: list[Step]) -> tuple[dict[str, float], dict[str, float]]:
    """head: longest chain before a step starts; tail: its duration plus the longest chain after."""
    by_id, succ, order = _graph(steps)
    head = {i: 0.0 for i in by_id}
    for i in order:
        for j in succ[i]:
            head[j] = max(head[j], head[i] + by_id[i].duration_s)
    tail = {i: by_id[i].duration_s for i in by_id}
    for i in reversed(order):
        for j in succ[i]:
            tail[i] = max(tail[i], by_id[i].duration_s + tail[j])
    return head, tail


def schedule(steps: list[Step], capacities: dict[str, int] | None = None) -> Schedule:
    """List-schedule ``steps``; ``capacities`` per resource (default 1 each)."""
    if not steps:
        return Schedule([])
    by_id, succ, _ = _graph(steps)
    caps = dict(capacities or {})
    for s in steps:
        for r in s.resources:
            caps.setdefault(r, 1)
    _, tail = heads_tails(steps)
    index = {s.id: n for n, s in enumerate(steps)}
    waiting = {s.id: len(s.depends_on) for s in steps}
    ready_at = {s.id: 0.0 for s in steps}
    in_use = {r: 0 for r in caps}
    ready = [i for i, n in waiting.items() if n == 0]
    running: list[tuple[float, int, str]] = []  # (end, order, id)
    entries: dict[str, ScheduledStep] = {}
    now = 0.0
    while len(entries) < len(steps):
        # start every ready step that fits now, most critical first
        ready.sort(key=lambda i: (-tail[i], index[i]))
        started = True
        while started:
            started = False
            for i in list(ready):
                s = by_id[i]
                if ready_at[i] <= now and all(in_use[r] < caps[r] for r in s.resources):
                    for r in s.resources:
                        in_use[r] += 1
                    entries[i] = ScheduledStep(i, now, now + s.duration_s, tuple(s.resources))
                    heapq.heappush(running, (now + s.duration_s, index[i], i))
                    ready.remove(i)
                    started = True
                    break
        if len(entries) == len(steps):
            break
        if not running:
            raise PlanningError("scheduler stalled: a step needs a resource nobody frees")
        # advance to the next completion and release its resources
        end, _, i = heapq.heappop(running)
        now = end
        finished = [i]
        while running and running[0][0] <= now:
            finished.append(heapq.heappop(running)[2])
        for f in finished:
            for r in by_id[f].resources:
                in_use[r] -= 1
            for j in succ[f]:
                waiting[j] -= 1
                ready_at[j] = max(ready_at[j], now)
                if waiting[j] == 0:
                    ready.append(j)
    return Schedule([entries[s.id] for s in steps])


def lower_bound_s(steps: list[Step], capacities: dict[str, int] | None = None) -> float:
    """A lower bound on the makespan of any feasible schedule."""
    if not steps:
        return 0.0
    head, tail = heads_tails(steps)
    bound = max(head[s.id] + tail[s.id] for s in steps)  # critical path
    caps = capacities or {}
    resources: set[str] = {r for s in steps for r in s.resources}
    for r in resources:
        on_r = [s for s in steps if r in s.resources]
        busy = sum(s.duration_s for s in on_r) / caps.get(r, 1)
        before = min(head[s.id] for s in on_r)
        after = min(tail[s.id] - s.duration_s for s in on_r)
        bound = max(bound, before + busy + after)
    return bound


def validate_schedule(steps: Iterable[Step], sched: Schedule, capacities: dict[str, int] | None = None) -> None:
    """Raise PlanningError if the schedule breaks a dependency or a resource capacity."""
    steps = list(steps)
    at = {e.step_id: e for e in sched.entries}
    for s in steps:
        for d in s.depends_on:
            if at[s.id].start_s < at[d].end_s - 1e-9:
                raise PlanningError(f"{s.id} starts before its dependency {d} ends")
    caps = capacities or {}
    events = sorted({e.start_s for e in sched.entries})
    for t in events:
        use: dict[str, int] = {}
        for e in sched.entries:
            if e.start_s <= t < e.end_s:
                for r in e.resources:
                    use[r] = use.get(r, 0) + 1
        for r, n in use.items():
            if n > caps.get(r, 1):
                raise PlanningError(f"resource {r} used {n} times at t={t}")


def executed_metrics(entries: list[dict]) -> dict[str, float]:
    """Makespan, resource lower bound and efficiency of what actually ran.

    ``entries``: executed steps {"task", "step", "resources", "start_s", "end_s"} (a task's steps
    ran in a chain). The bound is ``lower_bound_s`` over the same steps with their measured
    durations: no schedule of this work could be shorter."""
    if not entries:
        return {"makespan_s": 0.0, "lower_bound_s": 0.0, "efficiency": 0.0}
    steps: list[Step] = []
    last: dict[str, str] = {}
    for e in sorted(entries, key=lambda e: (e["start_s"], e["end_s"])):
        sid = f"{e['task']}:{e['step']}"
        prev = last.get(e["task"])
        steps.append(Step(sid, e.get("op") or "", list(e.get("resources") or []),
                          max(0.0, e["end_s"] - e["start_s"]), [prev] if prev else []))
        last[e["task"]] = sid
    makespan = max(e["end_s"] for e in entries) - min(e["start_s"] for e in entries)
    bound = lower_bound_s(steps)
    busy = {r: sum(s.duration_s for s in steps if r in s.resources) for r in {r for s in steps for r in s.resources}}
    return {"makespan_s": makespan, "lower_bound_s": bound, "efficiency": bound / makespan if makespan > 0 else 0.0,
            **{f"busy_{r}_s": v for r, v in sorted(busy.items())}}
