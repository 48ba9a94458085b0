"""Every task kind is validated against the lab's limits wherever it carries flow conditions."""

from __future__ import annotations

import pytest

from aichemist.errors import ValidationError
from cloud_bridge.validation import validate_task
from planner.tasks import LabLimits

GOOD = {"residence_time_min": 1.0, "temp_c": 90.0, "equivalents": 2.0, "conc_dfnb_m": 0.2}


def problems_of(doc):
    with pytest.raises(ValidationError) as err:
        validate_task(doc, LabLimits())
    return {p["field"]: p for p in err.value.problems}, err.value.message


def test_flow_experiment_limits():
    assert validate_task({"kind": "flow_experiment", "conditions": GOOD}, LabLimits()).kind == "flow_experiment"
    probs, msg = problems_of({"kind": "flow_experiment", "conditions": {**GOOD, "temp_c": 121.0}})
    assert probs["conditions.temp_c"]["value"] == 121.0 and probs["conditions.temp_c"]["limit"] == 120.0
    assert "lab's limits" in msg


def test_every_procedure_step_is_checked():
    doc = {"kind": "procedure", "steps": [
        {"op": "run_flow_experiment", "conditions": GOOD},
        {"op": "run_flow_experiment", "conditions": {**GOOD, "conc_dfnb_m": 0.9}},
        {"op": "wait", "duration_s": 5},
    ]}
    probs, _ = problems_of(doc)
    assert list(probs) == ["steps.1.conditions.conc_dfnb_m"]
    assert probs["steps.1.conditions.conc_dfnb_m"]["limit"] == 0.5
    doc["steps"][1]["conditions"]["conc_dfnb_m"] = 0.3
    assert validate_task(doc, LabLimits()).kind == "procedure"


def test_campaign_search_box_and_fixed_values_are_checked():
    doc = {"kind": "campaign", "budget": 5,
           "variables": [{"name": "temp_c", "type": "continuous", "low": 20, "high": 150},
                         {"name": "residence_time_min", "type": "continuous", "low": 0.5, "high": 2.0}],
           "fixed": {"equivalents": 7.0, "conc_dfnb_m": 0.2},
           "objectives": [{"name": "sty_kg_m3_h", "direction": "max"}]}
    probs, _ = problems_of(doc)
    assert set(probs) == {"variables.0.low", "variables.0.high", "fixed.equivalents"}
    assert probs["variables.0.high"]["limit"] == 120.0 and probs["fixed.equivalents"]["limit"] == 5.0
    doc["variables"][0].update(low=30, high=120)
    doc["fixed"]["equivalents"] = 2.0
    assert validate_task(doc, LabLimits()).kind == "campaign"


def test_the_openapi_examples_are_valid_tasks():
    from cloud_bridge.api import EXAMPLE_CAMPAIGN, EXAMPLE_PROCEDURE, EXAMPLE_TASK

    for doc in (EXAMPLE_TASK, EXAMPLE_CAMPAIGN, EXAMPLE_PROCEDURE):
        assert validate_task(doc, LabLimits()).kind == doc["kind"]
