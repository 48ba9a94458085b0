"""The published SnAr multi-objective benchmark (Felton et al. 2021, Summit) for planner.optimizer.

The earlier ("published") version of the SnAr kinetics (sim.kinetics.snar, model="published"),
noise-free; variables residence time 0.5-2 min, pyrrolidine 1-5 equivalents, DFNB 0.1-0.5 M,
temperature 30-120 C; maximise space-time yield, minimise E-factor; 50 experiments, batch
size 1, 20 seeds. Hypervolume (BoTorch) with reference point STY 2957 kg m^-3 h^-1,
E-factor 10.7. Published: TSEMO 5,803 +- 2,659 at 42 s per suggestion.

    .venv/bin/python bench/optimizer_snar.py [--seeds 20] [--experiments 50] [--jobs 2]
        [--results-file seeds.jsonl]   # resumable: finished seeds are kept and not run again

Progress on stderr; the last stdout line is
``RESULT hv_mean=... hv_sd=... s_per_suggestion=... cpu_s_per_suggestion=...`` (wall-clock and
process CPU seconds per model-based suggestion; the Sobol initial points cost nothing and are
not counted).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated

from planner.optimizer import Optimizer
from sim.kinetics.snar import evaluate

REFERENCE_STY = 2957.0
REFERENCE_E_FACTOR = 10.7

VARIABLES = [
    {"name": "tau_min", "type": "continuous", "low": 0.5, "high": 2.0},
    {"name": "equiv", "type": "continuous", "low": 1.0, "high": 5.0},
    {"name": "conc_dfnb_m", "type": "continuous", "low": 0.1, "high": 0.5},
    {"name": "temp_c", "type": "continuous", "low": 30.0, "high": 120.0},
]
OBJECTIVES = [
    {"name": "sty_kg_m3_h", "direction": "max"},
    {"name": "e_factor", "direction": "min", "transform": "log"},
]


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Hypervolume of (STY, E-factor) points: STY maximised, E-factor minimised."""
    if not points:
        return 0.0
    y = torch.tensor([[sty, -ef] for sty, ef in points], dtype=torch.double)
    ref = torch.tensor([REFERENCE_STY, -REFERENCE_E_FACTOR], dtype=torch.double)
    y = y[(y > ref).all(dim=-1)]
    if len(y) == 0:
        return 0.0
    return float(Hypervolume(ref_point=ref).compute(y[is_non_dominated(y)]))


def run_seed(seed: int, experiments: int, n_initial: int | None) -> tuple[float, list[float], list[float]]:
    opt = Optimizer(VARIABLES, OBJECTIVES, seed=seed, n_initial=n_initial)
    points: list[tuple[float, float]] = []
    suggestion_s: list[float] = []
    suggestion_cpu_s: list[float] = []
    for k in range(experiments):
        t0, c0 = time.perf_counter(), time.process_time()
        (cond,) = opt.ask(1)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if opt.last_method != "sobol":
            suggestion_s.append(dt)
            suggestion_cpu_s.append(dc)
        out = evaluate(cond["tau_min"], cond["equiv"], cond["conc_dfnb_m"], cond["temp_c"], model="published")
        opt.tell([cond], [{"sty_kg_m3_h": out["sty_kg_m3_h"], "e_factor": out["e_factor"]}])
        points.append((out["sty_kg_m3_h"], out["e_factor"]))
        if (k + 1) % 10 == 0:
            print(f"  seed {seed} experiment {k + 1}: hv={hypervolume(points):.0f} "
                  f"last ask {dt:.2f} s wall {dc:.2f} s cpu ({opt.last_method} {opt.last_timing})", file=sys.stderr, flush=True)
    return hypervolume(points), suggestion_s, suggestion_cpu_s


def _run_seed_star(item: tuple[int, int, int | None]) -> tuple[float, list[float], list[float]]:
    return run_seed(*item)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--n-initial", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--results-file", default="",
                        help="JSON lines, one per finished seed; seeds already there are not run again")
    args = parser.parse_args()
    done: dict[int, dict] = {}
    if args.results_file and pathlib.Path(args.results_file).exists():
        for line in pathlib.Path(args.results_file).read_text().splitlines():
            rec = json.loads(line)
            if rec["experiments"] == args.experiments:
                done[rec["seed"]] = rec
    work = [(seed, args.experiments, args.n_initial) for seed in range(args.seeds) if seed not in done]

    def record(seed: int, hv: float, s: list[float], c: list[float]) -> None:
        done[seed] = {"seed": seed, "experiments": args.experiments, "hv": hv, "wall_s": s, "cpu_s": c}
        if args.results_file:
            with open(args.results_file, "a") as f:
                f.write(json.dumps(done[seed]) + "\n")
        hvs_so_far = [r["hv"] for r in done.values()]
        print(f"seed {seed}: hv={hv:.0f} (mean so far {statistics.mean(hvs_so_far):.0f} over {len(hvs_so_far)})",
              file=sys.stderr, flush=True)

    if args.jobs > 1 and work:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for item, (hv, s, c) in zip(work, pool.imap(_run_seed_star, work)):
                record(item[0], hv, s, c)
    else:
        for item in work:
            hv, s, c = run_seed(*item)
            record(item[0], hv, s, c)
    recs = [done[k] for k in range(args.seeds)]
    hvs = [r["hv"] for r in recs]
    times = [t for r in recs for t in r["wall_s"]]
    cpu_times = [t for r in recs for t in r["cpu_s"]]
    sd = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
    print(f"RESULT hv_mean={statistics.mean(hvs):.0f} hv_sd={sd:.0f} "
          f"s_per_suggestion={statistics.mean(times) if times else 0.0:.3f} "
          f"cpu_s_per_suggestion={statistics.mean(cpu_times) if cpu_times else 0.0:.3f}")


if __name__ == "__main__":
    main()
