"""The main job as a benchmark: a closed-loop SnAr campaign in the twin with a fixed seed.

    .venv/bin/python bench/campaign.py [--experiments 20] [--speed 60] [--seed 0]

Brings the whole twin lab up (launch/twin.yaml), runs the reference model service through the
bridge's HTTP API with the robot carrying every vial to the HPLC, and prints the campaign's
numbers. Last line:
``RESULT experiments=... wall_s=... efficiency=... speedup=...`` where wall_s is the whole run
(lab start-up included), efficiency the resource lower bound on the makespan over the simulated
makespan (planner.scheduler.executed_metrics) and speedup the simulated makespan over the wall
time of the campaign after start-up.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from aichemist.campaign import DEFAULT_IN_FLIGHT, run_campaign  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", type=int, default=20)
    ap.add_argument("--speed", type=float, default=60.0, help="the twin's real-time factor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=DEFAULT_IN_FLIGHT, help="experiments in flight")
    ap.add_argument("--run-dir", type=pathlib.Path, default=None)
    args = ap.parse_args()
    run_dir = args.run_dir or pathlib.Path(tempfile.mkdtemp(prefix="aichemist-bench-campaign-"))
    summary = run_campaign(args.experiments, seed=args.seed, parallel=args.parallel, speed=args.speed,
                           run_dir=run_dir, say=lambda m: print(m, flush=True))
    print(f"succeeded={summary['succeeded']}/{summary['experiments']} retried={summary['retried']} "
          f"makespan_s={summary['makespan_s']:.0f} lower_bound_s={summary['lower_bound_s']:.0f} "
          f"campaign_wall_s={summary['campaign_wall_s']:.1f} run_dir={run_dir}")
    print(f"RESULT experiments={summary['experiments']} wall_s={summary['wall_s']:.1f} "
          f"efficiency={summary['efficiency']:.3f} speedup={summary['speedup']:.1f}")
    return 0 if summary["succeeded"] == summary["experiments"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
