"""The thin end-to-end slice, over real ROS 2 between separate processes:
HTTP POST -> SQLite -> bridge_node -> planner ExecuteTask -> flow reactor RunFlowExperiment ->
drivers over pseudo-terminals -> emulators + reactor physics (SnAr) -> detector -> yield ->
back to GET /v1/tasks/{id}."""

from __future__ import annotations

import httpx
import pytest

from sim.kinetics.snar import outlet_concentrations

pytestmark = [pytest.mark.twin, pytest.mark.slow]

CONDITIONS = {"residence_time_min": 0.5, "temp_c": 40.0, "equivalents": 2.0, "conc_dfnb_m": 0.2}


def test_flow_experiment_task_succeeds_with_the_kinetic_yield(twin_lab):
    with twin_lab.client() as client:
        view = client.submit({"kind": "flow_experiment", "name": "thin-slice", "conditions": CONDITIONS})
        assert view["status"] in ("queued", "running")
        final = client.wait(view["id"], timeout_s=240)
        assert final["status"] == "succeeded", final
        experiment = client.result(view["id"])["experiments"][0]
    expected = outlet_concentrations(CONDITIONS["residence_time_min"], CONDITIONS["equivalents"],
                                     CONDITIONS["conc_dfnb_m"], CONDITIONS["temp_c"])[2] / CONDITIONS["conc_dfnb_m"]
    # the inline detector's reading of the twin's steady-state outlet, within its noise
    assert experiment["yield_fraction"] == pytest.approx(expected, abs=0.05)
    assert experiment["sty_kg_m3_h"] > 0 and experiment["e_factor"] > 0
    assert experiment["time_to_steady_state_s"] > 0


@pytest.mark.parametrize("conditions, field, limit", [
    ({**CONDITIONS, "temp_c": 150.0}, "conditions.temp_c", 120.0),
    ({**CONDITIONS, "residence_time_min": 0.1}, "conditions.residence_time_min", 0.5),
])
def test_out_of_limit_task_gets_422_naming_field_value_and_limit_and_is_not_stored(twin_lab, conditions, field, limit):
    headers = {"Authorization": f"Bearer {twin_lab.api_key}", "Idempotency-Key": f"bad-{field}"}
    before = httpx.get(twin_lab.url + "/v1/tasks", headers=headers, timeout=10).json()
    r = httpx.post(twin_lab.url + "/v1/tasks", json={"kind": "flow_experiment", "conditions": conditions},
                   headers=headers, timeout=10)
    assert r.status_code == 422
    body = r.text
    value = conditions[field.split(".")[1]]
    assert field in body and str(value) in body and str(limit) in body
    after = httpx.get(twin_lab.url + "/v1/tasks", headers=headers, timeout=10).json()
    assert after == before


def test_unknown_field_and_malformed_body_get_422(twin_lab):
    headers = {"Authorization": f"Bearer {twin_lab.api_key}"}
    r = httpx.post(twin_lab.url + "/v1/tasks", headers={**headers, "Idempotency-Key": "u1"}, timeout=10,
                   json={"kind": "flow_experiment", "conditions": {**CONDITIONS, "colour": "red"}})
    assert r.status_code == 422 and "colour" in r.text
    r = httpx.post(twin_lab.url + "/v1/tasks", headers={**headers, "Idempotency-Key": "u2",
                                                        "Content-Type": "application/json"},
                   content=b"{not json", timeout=10)
    assert r.status_code in (400, 422)


def test_cli_submit_wait_shows_progress_and_the_result(twin_lab, tmp_path):
    import json
    import os
    import subprocess
    import sys

    task = tmp_path / "task.json"
    task.write_text(json.dumps({"kind": "flow_experiment", "name": "cli", "conditions": CONDITIONS}))
    env = {**os.environ, "AICHEMIST_BRIDGE_URL": twin_lab.url, "AICHEMIST_API_KEY": twin_lab.api_key}
    proc = subprocess.run([sys.executable, "-m", "aichemist.cli", "submit", str(task), "--wait"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "succeeded"
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert any("flow_reactor" in line for line in progress), proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "finished: succeeded"
    assert twin_lab.api_key not in proc.stderr + proc.stdout
