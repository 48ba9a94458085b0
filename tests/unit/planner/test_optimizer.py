"""planner.optimizer: ask/tell, Sobol design, BoTorch proposals (single, Pareto, mixed), seeds."""

from __future__ import annotations

import math

import pytest

from aichemist.errors import ValidationError
from planner.optimizer import Optimizer

XY = [{"name": "x", "type": "continuous", "low": -2.0, "high": 2.0},
      {"name": "y", "type": "continuous", "low": 0.0, "high": 10.0}]


def bowl(c: dict) -> float:
    return (c["x"] - 0.7) ** 2 + ((c["y"] - 3.0) / 5.0) ** 2


def test_bad_setup_lists_every_problem() -> None:
    with pytest.raises(ValidationError) as exc:
        Optimizer([{"name": "x", "type": "continuous", "low": 5, "high": 1},
                   {"name": "c", "type": "categorical", "choices": []}],
                  [{"name": "f", "direction": "up"}])
    fields = {p["field"] for p in exc.value.problems}
    assert len(exc.value.problems) >= 2 and any(f.startswith("0") for f in fields)
    with pytest.raises(ValidationError, match="duplicate"):
        Optimizer(XY + [XY[0]], [{"name": "f", "direction": "min"}])


def test_initial_design_is_sobol_in_bounds_and_seeded() -> None:
    a = Optimizer(XY, [{"name": "f", "direction": "min"}], seed=7, n_initial=8)
    b = Optimizer(XY, [{"name": "f", "direction": "min"}], seed=7, n_initial=8)
    c = Optimizer(XY, [{"name": "f", "direction": "min"}], seed=8, n_initial=8)
    pa, pb, pc = a.ask(8), b.ask(8), c.ask(8)
    assert a.last_method == "sobol"
    assert pa == pb and pa != pc
    assert all(-2 <= p["x"] <= 2 and 0 <= p["y"] <= 10 for p in pa)
    assert len({(p["x"], p["y"]) for p in pa}) == 8
    # space filling: every quadrant of the box holds at least one point
    quadrants = {(p["x"] > 0, p["y"] > 5) for p in pa}
    assert len(quadrants) == 4


def test_single_objective_improves_on_the_initial_design() -> None:
    opt = Optimizer(XY, [{"name": "f", "direction": "min"}], seed=1, n_initial=6)
    initial = opt.ask(6)
    opt.tell(initial, [{"f": bowl(c)} for c in initial])
    best_initial = min(bowl(c) for c in initial)
    found = []
    for _ in range(5):
        (c,) = opt.ask(1)
        assert opt.last_method == "qLogNEI"
        found.append(bowl(c))
        opt.tell([c], [{"f": found[-1]}])
    assert min(found) < best_initial
    best = opt.pareto_front()
    assert len(best) == 1 and math.isclose(best[0][1]["f"], min(found + [best_initial]))


def test_model_proposals_are_reproducible_for_a_seed() -> None:
    def run(seed: int) -> dict:
        opt = Optimizer(XY, [{"name": "f", "direction": "max"}], seed=seed, n_initial=5)
        pts = opt.ask(5)
        opt.tell(pts, [{"f": -bowl(c)} for c in pts])
        return opt.ask(1)[0]

    assert run(3) == run(3)


def test_two_objectives_give_a_pareto_front_and_inferred_reference() -> None:
    objectives = [{"name": "f", "direction": "min"},
                  {"name": "g", "direction": "max", "transform": "none"}]
    opt = Optimizer(XY, objectives, seed=2, n_initial=6)
    pts = opt.ask(6)
    outs = [{"f": bowl(c), "g": c["y"]} for c in pts]
    opt.tell(pts, outs)
    batch = opt.ask(2)
    assert opt.last_method == "qLogNEHVI" and len(batch) == 2
    assert all(-2 <= c["x"] <= 2 and 0 <= c["y"] <= 10 for c in batch)
    ref = opt.reference_point()
    # inferred reference is worse than every Pareto point in each (maximised) objective
    front = opt.pareto_front()
    assert front
    assert all(-o["f"] > ref[0].item() and o["g"] > ref[1].item() for _, o in front)
    for _, a in front:  # no front member dominated by an observation
        for _, b in opt.observations():
            assert not (b["f"] < a["f"] and b["g"] > a["g"])


def test_mixed_categorical_learns_the_better_category() -> None:
    variables = XY[:1] + [{"name": "solvent", "type": "categorical", "choices": ["MeCN", "EtOH", "THF"]}]
    bonus = {"MeCN": 0.0, "EtOH": 3.0, "THF": 0.5}
    opt = Optimizer(variables, [{"name": "yield", "direction": "max"}], seed=0, n_initial=6)
    pts = opt.ask(6)
    assert {p["solvent"] for p in pts} <= set(bonus)
    opt.tell(pts, [{"yield": bonus[p["solvent"]] - (p["x"] - 1) ** 2} for p in pts])
    picks = []
    for _ in range(3):
        (c,) = opt.ask(1)
        picks.append(c["solvent"])
        opt.tell([c], [{"yield": bonus[c["solvent"]] - (c["x"] - 1) ** 2}])
    assert picks.count("EtOH") >= 2


def test_noisy_repeats_and_failed_measurements() -> None:
    opt = Optimizer(XY, [{"name": "f", "direction": "min"}], seed=4, n_initial=5)
    pts = opt.ask(5)
    outs = [{"f": bowl(c)} for c in pts]
    outs[2] = {"f": None}  # failed measurement: kept as missing, not modelled
    opt.tell(pts, outs)
    opt.tell([pts[0], pts[0]], [{"f": bowl(pts[0]) + 0.05}, {"f": bowl(pts[0]) - 0.05}])
    assert opt.n_observations == 7
    (c,) = opt.ask(1)
    assert opt.last_method == "qLogNEI" and -2 <= c["x"] <= 2
    assert [o["f"] for _, o in opt.observations()].count(None) == 1


def test_tell_rejects_bad_outcomes_and_changes_nothing() -> None:
    opt = Optimizer(XY, [{"name": "f", "direction": "min", "transform": "log"}], seed=0)
    with pytest.raises(ValidationError) as exc:
        opt.tell([{"x": 0.0, "y": 1.0}, {"x": 0.0}],
                 [{"f": 1.0}, {"g": 2.0}])
    fields = {p["field"] for p in exc.value.problems}
    assert "conditions[1].y" in fields and "outcomes[1].f" in fields
    with pytest.raises(ValidationError):
        opt.tell([{"x": 0.0, "y": 1.0}], [{"f": -1.0}])  # log of a negative
    with pytest.raises(ValidationError, match="0 outcomes"):
        opt.tell([{"x": 0.0, "y": 1.0}], [])
    assert opt.n_observations == 0


def test_linear_constraints_hold_for_sobol_and_model_proposals() -> None:
    # x + y / 5 <= 1 cuts off the upper-right part of the box, where the optimum of -bowl would lie
    constraint = {"coefficients": {"x": 1.0, "y": 0.2}, "bound": 1.0}
    opt = Optimizer(XY, [{"name": "f", "direction": "max"}], seed=5, n_initial=5, constraints=[constraint])
    pts = opt.ask(5)
    assert all(p["x"] + p["y"] / 5 <= 1.0 + 1e-9 for p in pts)
    opt.tell(pts, [{"f": -((p["x"] - 1.5) ** 2) - ((p["y"] - 9) / 5) ** 2} for p in pts])
    (c,) = opt.ask(1)
    assert opt.last_method == "qLogNEI" and c["x"] + c["y"] / 5 <= 1.0 + 1e-6
    with pytest.raises(ValidationError, match="constraints"):
        Optimizer(XY, [{"name": "f", "direction": "max"}], constraints=[{"coefficients": {"zz": 1}, "bound": 0}])
