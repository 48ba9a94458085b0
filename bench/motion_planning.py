"""Benchmark: 100 fixed pick and place planning queries around the lab's benches.

Each query puts the base at a station's dock pose with a fixed random error (+-2 cm, +-2 deg,
what re-localisation leaves at most), fills the racks, and plans with the embedded backend:
  transit  = IK for the pre-grasp (or pre-place) pose 9 cm above the slot + joint path (direct,
             via the ready pose, or OMPL RRTConnect + shortcutting) + toppra timing + verification;
  approach = the straight TCP line down to the grasp (or release) pose, verified at 2 mm margin.
Place queries carry a vial attached to the TCP. The queries are fixed (seeded), so runs compare.

    .venv/bin/python bench/motion_planning.py [--queries 100]

Last line: RESULT success_rate=... median_ms=... p95_ms=... (transit, wall clock) plus the
approach line's times and CPU times.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from aichemist.errors import PlanningError  # noqa: E402
from manipulation.layout import Pose2D, load_layout, se3_matrix  # noqa: E402
from manipulation.planning import EmbeddedPlanner  # noqa: E402
from manipulation.scene import build_scene, vial_object_name  # noqa: E402

RACK_STATIONS = ("reagent_rack", "reactor_collection", "hplc_autosampler")
GRASP_HEIGHT_M = 0.012
PRE_HEIGHT_M = 0.09
RELEASE_CLEARANCE_M = 0.003  # a placed vial is let go just above the rack plate
APPROACH_OPENING_M = 0.030


def make_queries(n: int, seed: int = 42) -> list[dict]:
    layout = load_layout()
    rng = np.random.default_rng(seed)
    queries = []
    for k in range(n):
        station = layout.station(RACK_STATIONS[k % 3])
        slots = station.rack.slot_names()
        occupied = {s for s in slots if rng.random() < 0.5}
        kind = "pick" if k % 2 == 0 else "place"
        if kind == "pick" and not occupied:
            occupied.add(slots[0])
        if kind == "place" and len(occupied) == len(slots):
            occupied.discard(slots[-1])
        candidates = sorted(occupied) if kind == "pick" else sorted(set(slots) - occupied)
        slot = candidates[int(rng.integers(len(candidates)))]
        dock = station.dock_pose()
        base = Pose2D(x=dock.x + rng.uniform(-0.02, 0.02), y=dock.y + rng.uniform(-0.02, 0.02),
                      yaw=dock.yaw + math.radians(rng.uniform(-2, 2)))
        queries.append({"station": station.name, "slot": slot, "kind": kind, "base": base,
                        "occupied": sorted(occupied), "start": ["stow", "ready"][int(rng.integers(2))]})
    return queries


def run(n: int) -> dict:
    layout = load_layout()
    planner = EmbeddedPlanner()
    robot = planner.robot
    vial = layout.vial
    transit_ms, approach_ms, cpu_ms, failures = [], [], [], []
    for i, q in enumerate(make_queries(n)):
        station = layout.station(q["station"])
        occupancy = {f"{station.name}/{s}": f"{station.name}_{s}" for s in q["occupied"]}
        planner.set_scene(build_scene(layout, q["base"], occupancy))
        if q["kind"] == "place":
            robot.finger_opening_m = vial.diameter_m
            robot.attach("cylinder", (vial.diameter_m / 2, vial.height_m),
                         se3_matrix((0, 0, GRASP_HEIGHT_M - vial.height_m / 2)))  # tcp z points down
        else:
            robot.finger_opening_m = APPROACH_OPENING_M
            robot.detach()
        base_to_station = np.linalg.inv(q["base"].matrix()) @ station.matrix()
        bottom = station.rack.slot_xyz(q["slot"])
        lift = GRASP_HEIGHT_M + (RELEASE_CLEARANCE_M if q["kind"] == "place" else 0.0)
        grasp = base_to_station @ se3_matrix(bottom + [0, 0, lift], (math.pi, 0.0, 0.0))
        pre = grasp.copy()
        pre[2, 3] += PRE_HEIGHT_M
        start = np.array(robot.spec.stow_q if q["start"] == "stow" else robot.spec.ready_q)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            transit = planner.plan_pose(start, pre)
            t1, c1 = time.perf_counter(), time.process_time()
            allowed = []
            if q["kind"] == "pick":
                name = vial_object_name(occupancy[f"{station.name}/{q['slot']}"])
                allowed = [(link, name) for link in ("finger_left_link", "finger_right_link", "gripper_base_link")]
            planner.plan_linear(transit.goal, grasp, allowed)
            t2 = time.perf_counter()
            transit_ms.append((t1 - t0) * 1e3)
            cpu_ms.append((c1 - c0) * 1e3)
            approach_ms.append((t2 - t1) * 1e3)
            print(f"[{i:3d}] {q['kind']:5s} {q['station']:18s} {q['slot']:3s} ok transit {transit_ms[-1]:6.1f} ms "
                  f"approach {approach_ms[-1]:6.1f} ms {transit.stats}", file=sys.stderr)
        except PlanningError as exc:
            failures.append((i, q, str(exc)))
            print(f"[{i:3d}] {q['kind']:5s} {q['station']:18s} {q['slot']:3s} FAILED: {exc}", file=sys.stderr)
    return {"n": n, "ok": len(transit_ms), "transit_ms": transit_ms, "approach_ms": approach_ms, "cpu_ms": cpu_ms,
            "failures": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    r = run(args.queries)
    t = np.array(r["transit_ms"]) if r["transit_ms"] else np.array([math.nan])
    a = np.array(r["approach_ms"]) if r["approach_ms"] else np.array([math.nan])
    c = np.array(r["cpu_ms"]) if r["cpu_ms"] else np.array([math.nan])
    print(f"RESULT success_rate={r['ok'] / r['n']:.3f} median_ms={np.median(t):.1f} p95_ms={np.percentile(t, 95):.1f} "
          f"cpu_median_ms={np.median(c):.1f} approach_median_ms={np.median(a):.1f} "
          f"approach_p95_ms={np.percentile(a, 95):.1f} queries={r['n']}")


if __name__ == "__main__":
    main()
