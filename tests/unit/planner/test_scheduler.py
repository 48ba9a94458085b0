"""Scheduler: resource-aware list scheduling overlaps successive experiments."""

from __future__ import annotations

import pytest

from aichemist.errors import PlanningError
from planner.compiler import Step, experiment_steps, link_experiments
from planner.lab import load_lab
from planner.scheduler import lower_bound_s, schedule, validate_schedule
from planner.tasks import FlowConditions


def test_successive_experiments_overlap_on_different_resources():
    lab = load_lab("default")
    cond = FlowConditions(residence_time_min=1.0, temp_c=90, equivalents=2, conc_dfnb_m=0.3)
    by_exp = [experiment_steps(lab, k, cond) for k in range(4)]
    link_experiments(lab, by_exp)
    steps = [s for e in by_exp for s in e]
    sched = schedule(steps)
    validate_schedule(steps, sched)
    at = {e.step_id: e for e in sched.entries}
    # the reactor runs experiment 1 while the HPLC measures experiment 0
    assert at["e1.run_flow"].start_s < at["e0.measure"].end_s
    assert at["e1.run_flow"].end_s > at["e0.measure"].start_s
    # back-to-back reactor use: run 1 starts when run 0 ends (its vial was staged meanwhile)
    assert at["e1.run_flow"].start_s == pytest.approx(at["e0.run_flow"].end_s)
    serial = sum(s.duration_s for s in steps)
    assert sched.makespan_s < 0.7 * serial
    assert lower_bound_s(steps) <= sched.makespan_s
    assert lower_bound_s(steps) / sched.makespan_s > 0.9


def test_capacity_and_dependencies_respected():
    steps = [Step("a", "x", ["r"], 10), Step("b", "x", ["r"], 10), Step("c", "x", ["r"], 5, ["a"]),
             Step("d", "wait", [], 3, ["b", "c"])]
    s1 = schedule(steps)
    validate_schedule(steps, s1)
    assert s1.makespan_s == pytest.approx(28)
    s2 = schedule(steps, {"r": 2})
    validate_schedule(steps, s2, {"r": 2})
    assert s2.makespan_s == pytest.approx(18)


def test_cycles_and_unknown_dependencies_are_planning_errors():
    with pytest.raises(PlanningError, match="cycle"):
        schedule([Step("a", "x", [], 1, ["b"]), Step("b", "x", [], 1, ["a"])])
    with pytest.raises(PlanningError, match="unknown"):
        schedule([Step("a", "x", [], 1, ["zz"])])


def test_validate_schedule_catches_overlap():
    from planner.scheduler import Schedule, ScheduledStep

    steps = [Step("a", "x", ["r"], 10), Step("b", "x", ["r"], 10)]
    bad = Schedule([ScheduledStep("a", 0, 10, ("r",)), ScheduledStep("b", 5, 15, ("r",))])
    with pytest.raises(PlanningError, match="resource r"):
        validate_schedule(steps, bad)
