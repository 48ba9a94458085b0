"""The campaign report: Pareto set and hypervolume by hand-checkable numbers, the schedule's
bounds, and the HTML page (three figures inlined, one table row per experiment, nothing fetched)."""

from __future__ import annotations

import math
import re

import pytest

from aichemist.report import (hypervolume, pareto_front, render_report, running_best, schedule_bounds,
                              write_report)


def _result(n: int, status: str, sty: float | None = None, ef: float | None = None, message: str = "") -> dict:
    outcome = {} if sty is None else {"sty_kg_m3_h": sty, "e_factor": ef, "yield_fraction": sty / 10000}
    return {"task_id": f"{n:08d}-task", "status": status, "message": message, "outcome": outcome,
            "conditions": {"residence_time_min": 0.5 + n / 10, "temp_c": 30.0 + n, "equivalents": 1.5,
                           "conc_dfnb_m": 0.2}}


SUMMARY = {
    "experiments": 6, "succeeded": 5, "wall_s": 123.4, "seed": 7, "campaign": "snar-test",
    "results": [
        _result(1, "succeeded", 3000.0, 5.0),
        _result(2, "succeeded", 4000.0, 8.0),
        _result(3, "succeeded", 3500.0, 9.0),   # dominated by 2
        _result(4, "failed", message="InterlockTripped: pressure 21.3 bar > 20 bar <reactor>"),
        _result(5, "succeeded", 2000.0, 1.0),   # on the front, below the reference STY
        _result(6, "succeeded", 5000.0, 12.0),  # on the front, above the reference E-factor
    ],
}

SCHEDULE = [
    {"resource": "robot", "start_s": 100.0, "end_s": 110.0, "label": "carry vial", "experiment": 1},
    {"resource": "robot", "start_s": 120.0, "end_s": 130.0, "label": "carry vial", "experiment": 2},
    {"resource": "reactor", "start_s": 100.0, "end_s": 150.0, "label": "run", "experiment": 1},
    {"resource": "reactor", "start_s": 110.0, "end_s": 120.0, "label": "flush", "experiment": 1},
    {"resource": "hplc", "start_s": 140.0, "end_s": 170.0, "label": "measure", "experiment": 1},
]


def test_pareto_front_maximises_sty_and_minimises_e_factor():
    points = [(3000, 5), (4000, 8), (3500, 9), (2000, 1), (5000, 12)]
    assert pareto_front(points) == [0, 1, 3, 4]
    assert pareto_front([(1, 1), (1, 1), (0, 2)]) == [0, 1]  # equal points do not dominate each other
    assert pareto_front([]) == []


def test_hypervolume_by_hand():
    # only (3000, 5) and (4000, 8) lie inside the reference box (STY > 2957, E < 10.7):
    # (3000-2957)*(8-5) + (4000-2957)*(10.7-8) = 129 + 2816.1
    points = [(3000, 5), (4000, 8), (3500, 9), (2000, 1), (5000, 12)]
    assert hypervolume(points) == pytest.approx(2945.1)
    assert hypervolume([(3957, 9.7)]) == pytest.approx(1000.0)
    assert hypervolume([(3957, 9.7), (3957, 9.7), (3500, 10.0)]) == pytest.approx(1000.0)
    assert hypervolume([(2000, 1)]) == 0.0
    assert hypervolume([(10, 2), (20, 4)], reference=(0, 5)) == pytest.approx(10 * 2 + 20 * 1)


def test_running_best_follows_direction_and_skips_missing():
    assert running_best([3, None, 5, 4], "max") == [3, 3, 5, 5]
    assert running_best([None, 9, 7, 8], "min") == [None, 9, 7, 7]
    assert running_best([math.nan, 2], "min") == [None, 2]


def test_schedule_bounds_count_overlaps_once():
    bounds = schedule_bounds(SCHEDULE)
    assert bounds["makespan_s"] == pytest.approx(70.0)
    assert bounds["busy_s"] == {"hplc": 30.0, "reactor": 50.0, "robot": 20.0}
    assert bounds["lower_bound_s"] == pytest.approx(50.0)
    assert bounds["efficiency"] == pytest.approx(50.0 / 70.0)


def test_report_page_has_three_figures_and_a_row_per_experiment(tmp_path):
    path = write_report(tmp_path, SUMMARY, schedule=SCHEDULE)
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    for figure in ("objectives-figure", "pareto-figure", "gantt-figure"):
        block = re.search(rf"<figure id='{figure}'>(.*?)</figure>", page, re.S)
        assert block and "<svg" in block.group(1), figure
    assert re.search(r"<b id='hypervolume'>2945\.1</b>", page)
    rows = re.findall(r"<tr class='(\w*)' id='experiment-(\d+)'>", page)
    assert [int(n) for _c, n in rows] == [1, 2, 3, 4, 5, 6]
    classes = dict((int(n), c) for c, n in rows)
    assert classes[4] == "failed" and classes[3] == "" and {classes[n] for n in (1, 2, 5, 6)} == {"front"}
    row2 = re.search(r"id='experiment-2'>(.*?)</tr>", page).group(1)
    for cell in ("0.70", "32.0", "4000.0", "8.00", "succeeded"):
        assert f">{cell}<" in row2, cell
    # messages are escaped, the page fetches nothing
    assert "&lt;reactor&gt;" in page and "<reactor>" not in page
    assert not re.search(r"""(src|href)=["']https?:""", page) and "<script" not in page and "<link" not in page
    assert "busiest resource</b>: reactor 50 s (71% of the makespan)" in page
    assert "efficiency</b>" not in page  # only the campaign's own bound is called efficiency
    page = render_report({**SUMMARY, "lower_bound_s": 60.0, "efficiency": 0.857}, schedule=SCHEDULE)
    assert "resource lower bound</b>: 60 s" in page and "efficiency</b>: 0.86" in page
    for resource in ("robot", "reactor", "hplc"):
        assert f">{resource}<" in page or f"{resource}</text>" in page


def test_report_without_schedule_or_successes_still_renders(tmp_path):
    summary = {"experiments": 1, "succeeded": 0, "wall_s": 3.0, "seed": 0, "campaign": "x",
               "results": [_result(1, "failed", message="no reactor")]}
    page = render_report(summary)
    assert "No resource schedule was recorded" in page
    assert "<figure id='objectives-figure'>" in page and "<figure id='pareto-figure'>" in page
    assert "id='experiment-1'" in page and "<b id='hypervolume'>0.0</b>" in page


def test_report_command_rebuilds_from_the_run_folder(tmp_path, capsys):
    import json

    from aichemist.report import main

    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    (tmp_path / "schedule.json").write_text(json.dumps(SCHEDULE))
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<figure id='gantt-figure'>" in page and "id='experiment-6'" in page
    assert main([]) == 2
