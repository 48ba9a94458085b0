"""Scheduler efficiency on a 20-experiment flow campaign with given step durations.

Each experiment (durations from config/lab/default.yaml): fetch an empty vial to the reactor
outlet (robot, 150 s), run the flow experiment (reactor; the heat-up allowance 600 s + 6 residence
times at the conditions drawn below), carry the vial to the HPLC (robot, 150 s), measure (HPLC,
600 s), return the vial to the rack (robot, 150 s). The reactor outlet holds two vials.
Efficiency = the resource lower bound on the makespan (planner.scheduler.lower_bound_s) over the
makespan of the schedule; 1.0 means no schedule can be shorter.

    .venv/bin/python bench/scheduler_bound.py

Last line: ``RESULT efficiency=... makespan_s=... lower_bound_s=... serial_s=...``.
"""

from __future__ import annotations

import random
import sys
import time

from planner.compiler import experiment_steps, link_experiments
from planner.lab import load_lab
from planner.scheduler import lower_bound_s, schedule, validate_schedule
from planner.tasks import FlowConditions

N_EXPERIMENTS = 20


def main() -> None:
    lab = load_lab("default")
    rng = random.Random(0)
    by_exp = []
    for k in range(N_EXPERIMENTS):
        cond = FlowConditions(residence_time_min=rng.uniform(0.5, 2.0), temp_c=rng.uniform(30, 120),
                              equivalents=rng.uniform(1, 5), conc_dfnb_m=rng.uniform(0.1, 0.5))
        by_exp.append(experiment_steps(lab, k, cond))
    link_experiments(lab, by_exp)
    steps = [s for exp in by_exp for s in exp]
    caps = {r.name: r.capacity for r in lab.resources}
    t0 = time.perf_counter()
    sched = schedule(steps, caps)
    elapsed = time.perf_counter() - t0
    validate_schedule(steps, sched, caps)
    bound = lower_bound_s(steps, caps)
    serial = sum(s.duration_s for s in steps)
    for r in ("robot", "reactor", "hplc"):
        print(f"{r}: busy {sched.busy_s(r):.0f} s of {sched.makespan_s:.0f} s", file=sys.stderr)
    print(f"{len(steps)} steps scheduled in {elapsed * 1000:.1f} ms; fully serial would take {serial:.0f} s",
          file=sys.stderr)
    print(f"RESULT efficiency={bound / sched.makespan_s:.3f} makespan_s={sched.makespan_s:.0f} "
          f"lower_bound_s={bound:.0f} serial_s={serial:.0f}")


if __name__ == "__main__":
    main()
