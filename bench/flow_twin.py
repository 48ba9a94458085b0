"""Benchmark: a sequence of flow experiments in the reactor twin.

The controller (flow_reactor.controller) runs each experiment against the twin exactly as on
hardware: real drivers speaking their devices' protocols to the emulators (in-process loopback
transports), the twin's physics advanced in lock-step with the controller's waits (SimClock).

Reports:
- speedup = simulated time / wall time over the whole sequence (goal >= 50); also
  cpu_speedup = simulated time / this process's CPU time, which does not depend on how busy the
  host is (on a shared host the wall-time figure drops with the load);
- steady_state_ratio = detected time to steady state / (3 residence times), mean over the runs
  (goal 0.5-1.5), with its min and max;
- premature = runs whose reading at detection is more than 2 % away from the twin's own
  asymptotic steady state (goal 0).

Usage: .venv/bin/python bench/flow_twin.py [--experiments 10] [--seed 0]
Last line on stdout: RESULT speedup=... steady_state_ratio=... (progress on stderr).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aichemist.clock import SimClock  # noqa: E402
from flow_reactor.config import DEVICE_ROLES, load_params_file  # noqa: E402
from flow_reactor.controller import FlowConditions, FlowReactorController, create_devices  # noqa: E402
from sim.emulators.loopback import LoopbackTransport  # noqa: E402
from sim.lab_twin import LabTwin  # noqa: E402
from sim.reactor_twin import ReactorPhysics, build_flow_reactor_twin  # noqa: E402


def conditions(n: int, seed: int) -> list[FlowConditions]:
    """A space-filling sequence over the SnAr bounds (tau 0.5-2 min, 30-120 C, 1-5 eq, 0.1-0.5 M)."""
    rng = np.random.default_rng(seed)
    # Latin hypercube: one sample per stratum in each dimension
    u = (np.stack([rng.permutation(n) for _ in range(4)], axis=1) + rng.uniform(size=(n, 4))) / n
    out = []
    for tau_u, temp_u, eq_u, c_u in u:
        out.append(FlowConditions(residence_time_min=round(0.5 + 1.5 * tau_u, 3),
                                  temp_c=round(30.0 + 90.0 * temp_u, 1),
                                  equivalents=round(1.0 + 4.0 * eq_u, 2),
                                  conc_dfnb_m=round(0.1 + 0.4 * c_u, 3)))
    return out


def asymptotic_ortho_m(twin_config, flows: dict[str, float], temp_c: float, tau_min: float) -> float:
    """The twin's own steady state for these flows (long run of the same physics, no devices)."""
    physics = ReactorPhysics(twin_config)
    for _ in range(int(10 * tau_min * 60 / 0.1)):
        physics.step(0.1, flows, temp_c)
    return float(physics.detector_m[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    twin = build_flow_reactor_twin(seed=args.seed)
    clock = SimClock(max_step=0.05)
    LabTwin({"flow_reactor": twin}, clock=clock)
    params = load_params_file(str(REPO / "config" / "twin" / "flow_reactor.yaml"),
                              substitutions={"twin_dir": "/nonexistent"})
    transports = {name: LoopbackTransport(twin.emulators[name]) for name in DEVICE_ROLES}
    controller = FlowReactorController(params, create_devices(params, transports, clock=clock), clock)
    controller.connect()

    ratios, premature, sim_total, wall_total, cpu_total = [], 0, 0.0, 0.0, 0.0
    for i, cond in enumerate(conditions(args.experiments, args.seed)):
        t_sim, t_wall, t_cpu = clock.now(), time.perf_counter(), time.process_time()
        result = controller.run_experiment(cond, experiment_id=f"bench-{i}", collect=True)
        wall = time.perf_counter() - t_wall
        cpu_total += time.process_time() - t_cpu
        sim = clock.now() - t_sim
        wall_total += wall
        sim_total += sim
        tau_s = cond.residence_time_min * 60.0
        ratio = result.time_to_steady_state_s / (3.0 * tau_s)
        ratios.append(ratio)
        truth = asymptotic_ortho_m(twin.config, {k: v for k, v in result.flows_ml_min.items()}, cond.temp_c,
                                   cond.residence_time_min)
        measured = result.conc_m.get("ortho", 0.0)
        off = abs(measured - truth) / max(truth, 1e-3)
        early = off > 0.02
        premature += int(early)
        print(f"[{i + 1}/{args.experiments}] tau={cond.residence_time_min} min T={cond.temp_c} C "
              f"eq={cond.equivalents} c={cond.conc_dfnb_m} M: yield={result.yield_fraction:.3f} "
              f"t_ss={result.time_to_steady_state_s:.0f} s ratio={ratio:.2f} "
              f"ortho={measured:.4f} M (asymptote {truth:.4f}, {100 * off:.1f} %"
              f"{' PREMATURE' if early else ''}) "
              f"sim={sim:.0f} s wall={wall:.1f} s", file=sys.stderr, flush=True)
    speedup = sim_total / wall_total
    print(f"sim={sim_total:.0f} s wall={wall_total:.1f} s ratios min={min(ratios):.2f} max={max(ratios):.2f}",
          file=sys.stderr)
    print(f"RESULT speedup={speedup:.1f} steady_state_ratio={float(np.mean(ratios)):.2f} "
          f"cpu_speedup={sim_total / cpu_total:.1f} "
          f"steady_state_ratio_min={min(ratios):.2f} steady_state_ratio_max={max(ratios):.2f} "
          f"premature={premature} experiments={len(ratios)} sim_s={sim_total:.0f} wall_s={wall_total:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
