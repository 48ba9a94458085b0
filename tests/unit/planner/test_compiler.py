"""Task language, compiler, checks and dry run: bad input is rejected with every problem listed."""

from __future__ import annotations

import json

import pytest

from aichemist.errors import ValidationError
from planner import checks
from planner.compiler import compile_task, dry_run
from planner.lab import Reagent, load_lab
from planner.tasks import SCHEMA_PATH, parse_task, task_json_schema, write_task_json_schema

GOOD = {"residence_time_min": 1.0, "temp_c": 90.0, "equivalents": 2.0, "conc_dfnb_m": 0.3}


@pytest.fixture(scope="module")
def lab():
    return load_lab("default")


def lab_with(lab, *reagents: Reagent):
    return lab.model_copy(update={"inventory": list(lab.inventory) + list(reagents)})


def test_published_schema_file_matches_the_models(tmp_path):
    # the committed file is what write_task_json_schema produces now
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(json.dumps(task_json_schema()))
    out = write_task_json_schema(tmp_path / "s.json")
    schema = json.loads(out.read_text())
    kinds = {m["properties"]["kind"]["const"] for m in schema["$defs"].values()
             if "kind" in m.get("properties", {})}
    assert kinds == {"flow_experiment", "campaign", "procedure"}
    import jsonschema

    jsonschema.validate({"kind": "flow_experiment", "version": "1", "conditions": GOOD}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "flow_experiment", "conditions": {**GOOD, "temp_c": "hot"}}, schema)


def test_parse_all_three_kinds():
    assert parse_task({"kind": "flow_experiment", "conditions": GOOD}).kind == "flow_experiment"
    camp = parse_task({"kind": "campaign", "budget": 4, "batch_size": 2,
                       "variables": [{"name": "temp_c", "type": "continuous", "low": 30, "high": 120}],
                       "fixed": {"residence_time_min": 1, "equivalents": 2, "conc_dfnb_m": 0.3},
                       "objectives": [{"name": "sty_kg_m3_h", "direction": "max"}]})
    assert camp.budget == 4 and camp.variables[0].name == "temp_c"
    proc = parse_task({"kind": "procedure", "steps": [{"op": "wait", "duration_s": 5}]})
    assert proc.steps[0].op == "wait"
    with pytest.raises(ValidationError) as exc:
        parse_task({"kind": "flow_experiment", "version": "2", "conditions": GOOD})
    assert "version" in str(exc.value)


def test_flow_experiment_compiles_to_five_steps_and_dry_run_lists_every_check(lab):
    plan = compile_task({"kind": "flow_experiment", "conditions": GOOD}, lab)
    assert [s.op for s in plan.steps] == ["fetch_vial", "run_flow", "move_vial", "measure", "store_vial"]
    assert plan.steps[4].depends_on == ["e0.measure"] and plan.steps[4].params["to_station"] == "vial_rack"
    assert plan.steps[1].resources == ["reactor"] and plan.steps[1].depends_on == ["e0.fetch_vial"]
    # heat-up allowance + (3 + 1 + 2) residence times of 1 min
    assert plan.steps[1].duration_s == pytest.approx(lab.reactor.heat_up_s + 6 * 60)
    assert plan.reagent_use_ml["dfnb_stock"] == pytest.approx(0.3 / 2.0 * 3.0 * 4 + 1.0)
    text = dry_run(plan)
    for name in ("smiles", "process_window", "device_limits", "compatibility", "inventory"):
        assert f"[ok] {name}" in text
    assert "nothing was run" in text and "e0.measure" in text


def test_every_problem_is_listed_at_once(lab):
    task = {"kind": "procedure", "steps": [
        {"op": "dispense", "reagent": "unobtainium", "volume_ml": 1, "vial_id": "v1"},
        {"op": "dispense", "reagent": "water", "volume_ml": 5000, "vial_id": "v1", "smiles": "C1CC"},
        {"op": "measure", "vial_id": "v1"},
        {"op": "run_flow_experiment", "conditions": {**GOOD, "residence_time_min": 0.1, "temp_c": 200}},
    ]}
    with pytest.raises(ValidationError) as exc:
        compile_task(task, lab)
    fields = [p["field"] for p in exc.value.problems]
    assert "steps[0].reagent" in fields                      # missing reagent
    assert "steps[1].smiles" in fields                       # invalid SMILES
    assert "inventory.water.volume_ml" in fields             # not enough on hand
    assert "steps[2].vial_id" in fields                      # precondition: vial not at the HPLC
    assert "steps[3].conditions.temp_c" in fields            # process window
    assert "steps[3].conditions.pump_ethanol.flow_ml_min" in fields  # device limit
    assert len(exc.value.problems) >= 7


def test_incompatible_hazard_classes_are_rejected(lab):
    lab2 = lab_with(lab, Reagent(name="sodium_azide_soln", smiles="[Na+].[N-]=[N+]=[N-]", volume_ml=50),
                    Reagent(name="acetic_acid", smiles="CC(=O)O", volume_ml=50),
                    Reagent(name="h2o2", smiles="OO", volume_ml=50),
                    Reagent(name="nabh4", smiles="[Na+].[BH4-]", volume_ml=50))
    ok = {"kind": "procedure", "steps": [
        {"op": "dispense", "reagent": "sodium_azide_soln", "volume_ml": 1, "vial_id": "a"},
        {"op": "dispense", "reagent": "acetic_acid", "volume_ml": 1, "vial_id": "b"}]}
    compile_task(ok, lab2)  # apart: fine
    bad = {"kind": "procedure", "steps": [
        {"op": "dispense", "reagent": "sodium_azide_soln", "volume_ml": 1, "vial_id": "a"},
        {"op": "dispense", "reagent": "acetic_acid", "volume_ml": 1, "vial_id": "a"},
        {"op": "dispense", "reagent": "h2o2", "volume_ml": 1, "vial_id": "b"},
        {"op": "dispense", "reagent": "nabh4", "volume_ml": 1, "vial_id": "b"}]}
    with pytest.raises(ValidationError) as exc:
        compile_task(bad, lab2)
    messages = " ".join(p["message"] for p in exc.value.problems)
    assert "hydrazoic" in messages and "oxidizers with reducers" in messages


def test_hazard_classes_by_smarts():
    assert "azide" in checks.hazard_classes("[Na+].[N-]=[N+]=[N-]")
    assert "acid" in checks.hazard_classes("OS(=O)(=O)O")
    assert "oxidizer" in checks.hazard_classes("OO")
    assert "reducer" in checks.hazard_classes("[Na+].[BH4-]")
    assert "reducer" not in checks.hazard_classes("[Na+].[OH-]")
    # the SnAr reagents are not flagged, so the lab's own reaction compiles
    for smiles in ("O=[N+]([O-])c1ccc(F)cc1F", "C1CCNC1", "CCO"):
        assert checks.hazard_classes(smiles) == set()
    assert checks.hazard_classes("CCO", declared=["flammable"]) == {"flammable"}


def test_campaign_checks_variables_against_the_lab(lab):
    task = {"kind": "campaign", "budget": 3, "batch_size": 4,
            "variables": [{"name": "temp_c", "type": "continuous", "low": 30, "high": 180},
                          {"name": "pressure_bar", "type": "continuous", "low": 1, "high": 5}],
            "fixed": {"residence_time_min": 1},
            "objectives": [{"name": "happiness", "direction": "max"}]}
    with pytest.raises(ValidationError) as exc:
        compile_task(task, lab)
    fields = {p["field"] for p in exc.value.problems}
    assert {"variables[0].high", "variables[1].name", "objectives[0].name", "batch_size"} <= fields
    assert any(p["value"] == "equivalents" for p in exc.value.problems)  # neither variable nor fixed


def test_campaign_compiles_budget_experiments_with_worst_case_inventory(lab):
    task = {"kind": "campaign", "budget": 5,
            "variables": [{"name": "temp_c", "type": "continuous", "low": 30, "high": 120},
                          {"name": "residence_time_min", "type": "continuous", "low": 0.5, "high": 2}],
            "fixed": {"equivalents": 2, "conc_dfnb_m": 0.3},
            "objectives": [{"name": "sty_kg_m3_h", "direction": "max"}]}
    plan = compile_task(task, lab)
    assert len(plan.steps) == 25 and plan.steps[-1].id == "e4.store_vial"
    assert plan.step("e2.fetch_vial").depends_on == ["e0.move_vial"]  # two vial slots at the outlet
    small = lab.model_copy(update={"inventory": [r if r.name != "dfnb_stock" else r.model_copy(update={"volume_ml": 5})
                                                 for r in lab.inventory]})
    with pytest.raises(ValidationError, match="dfnb_stock: needs"):
        compile_task(task, small)


def test_device_limit_beyond_the_pump(lab):
    fast = lab.model_copy(update={"reactor": lab.reactor.model_copy(update={"volume_ml": 30.0})})
    with pytest.raises(ValidationError) as exc:
        compile_task({"kind": "flow_experiment", "conditions": {**GOOD, "residence_time_min": 0.5}}, fast)
    assert any(p["field"].endswith("pump_ethanol.flow_ml_min") and p["bound"] == "max"
               for p in exc.value.problems)


def test_procedure_preconditions_track_vials(lab):
    ok = {"kind": "procedure", "steps": [
        {"op": "move_vial", "id": "place", "vial_id": "v1", "from_station": "vial_rack", "to_station": "reactor_outlet"},
        {"op": "run_flow_experiment", "id": "run", "conditions": GOOD, "collect_vial": "v1"},
        {"op": "move_vial", "id": "carry", "vial_id": "v1", "from_station": "reactor_outlet",
         "to_station": "hplc_autosampler"},
        {"op": "measure", "id": "hplc", "vial_id": "v1"},
        {"op": "wait", "id": "cool", "duration_s": 30, "after": ["run"]}]}
    plan = compile_task(ok, lab)
    assert plan.step("carry").depends_on == ["run"] and plan.step("cool").depends_on == ["run"]
    bad = {"kind": "procedure", "steps": [
        {"op": "run_flow_experiment", "conditions": GOOD, "collect_vial": "v9"},
        {"op": "move_vial", "vial_id": "v9", "from_station": "hplc_autosampler", "to_station": "moon"},
        {"op": "wait", "duration_s": 1, "after": ["nope"]}]}
    with pytest.raises(ValidationError) as exc:
        compile_task(bad, lab)
    msgs = " | ".join(p["message"] for p in exc.value.problems)
    assert "not at the reactor outlet" in msgs and "no such station" in msgs and "no such step" in msgs


def test_command_line_dry_run(tmp_path, capsys):
    from planner.__main__ import main

    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"kind": "flow_experiment", "conditions": GOOD}))
    assert main(["dry-run", str(ok)]) == 0
    out = capsys.readouterr().out
    assert "schedule: makespan" in out and "[ok] inventory" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "flow_experiment", "conditions": {**GOOD, "temp_c": 300}}))
    assert main(["dry-run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "REJECTED" in err and "conditions.temp_c" in err
