"""Records: ORD reactions (validated by ord-schema) from executor runs, and MCAP rosbag2 bags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aichemist.clock import SimClock
from aichemist.errors import ConfigurationError
from planner.executor import Executor, StepJournal
from planner.lab import load_lab
from planner.records import BagRecorder, OrdRecorder, ord_record, read_bag
from planner.runner import run_task

COND = {"residence_time_min": 1.0, "temp_c": 90.0, "equivalents": 2.0, "conc_dfnb_m": 0.3}


def test_ord_record_carries_conditions_outcomes_and_provenance(tmp_path):
    from google.protobuf import json_format
    from ord_schema import validations
    from ord_schema.proto import reaction_pb2

    lab = load_lab("default")
    raw = tmp_path / "hplc_chromatogram.csv"
    raw.write_text("t,mAU\n0,0\n")
    exp = {"index": 3, "conditions": COND, "yield_fraction": 0.81, "sty_kg_m3_h": 5000.0, "e_factor": 3.2,
           "flow_record": {"yield_fraction": 0.79}, "hplc": {"yield_fraction": 0.81}}
    rxn = ord_record(exp, lab, task_id="task-9", proposed_by="brain-v2", data_files=[str(raw)])
    assert validations.validate_message(rxn, raise_on_error=False).errors == []
    assert rxn.conditions.temperature.setpoint.value == 90.0
    assert rxn.inputs["DFNB"].flow_rate.value == pytest.approx(0.3 / 2.0 * 3.0)
    assert rxn.inputs["pyrrolidine"].components[0].identifiers[0].value == "C1CCNC1"
    yields = {m.analysis_key: m.percentage.value for m in rxn.outcomes[0].products[0].measurements
              if m.type == reaction_pb2.ProductMeasurement.YIELD}
    assert yields == {"inline_uv": pytest.approx(79.0), "hplc": pytest.approx(81.0)}
    assert rxn.outcomes[0].analyses["hplc"].data["raw0"].url.endswith("hplc_chromatogram.csv")
    prov = json.loads(rxn.provenance.record_created.details)
    assert prov == {"task_id": "task-9", "proposed_by": "brain-v2", "experiment": 3}
    assert json.loads(rxn.conditions.flow.details)["pump_flows_ml_min"]["pump_ethanol"] > 0
    # JSON round trip
    back = json_format.Parse(json_format.MessageToJson(rxn), reaction_pb2.Reaction())
    assert back == rxn


def test_ord_recorder_writes_one_record_per_experiment_from_the_document_stream(tmp_path):
    from google.protobuf import json_format
    from ord_schema.proto import dataset_pb2

    lab = load_lab("default").model_copy(update={"analysis": "inline"})

    def run_flow(step, ctx):
        c = step.params["conditions"]
        return {"yield_fraction": c["temp_c"] / 200, "sty_kg_m3_h": 10.0 * c["temp_c"], "e_factor": 5.0}

    j = StepJournal(tmp_path / "j.db")
    ex = Executor({"run_flow": run_flow}, j, clock=SimClock())
    recorder = OrdRecorder(lab, tmp_path / "ord")
    ex.subscribe(recorder)
    run_task("t7", {"kind": "procedure", "proposed_by": "chemist", "steps": [
        {"op": "run_flow_experiment", "conditions": COND},
        {"op": "run_flow_experiment", "conditions": {**COND, "temp_c": 60.0}}]}, lab, ex)
    j.close()
    assert sorted(p.name for p in recorder.written) == ["t7.dataset.ord.json", "t7_e0.ord.json", "t7_e1.ord.json"]
    recorder.written.clear()
    j = StepJournal(tmp_path / "j2.db")
    ex = Executor({"run_flow": run_flow}, j, clock=SimClock())
    ex.subscribe(recorder)
    run_task("t8", {"kind": "flow_experiment", "conditions": COND, "proposed_by": "brain"}, lab, ex)
    names = sorted(p.name for p in recorder.written)
    assert names == ["t8.dataset.ord.json", "t8_e0.ord.json"]
    ds = json_format.Parse((tmp_path / "ord" / "t8.dataset.ord.json").read_text(), dataset_pb2.Dataset())
    assert len(ds.reactions) == 1
    assert ds.reactions[0].provenance.reaction_metadata["proposed_by"].string_value == "brain"
    j.close()


def test_bag_recorder_writes_mcap_rosbag2_that_reads_back(tmp_path):
    path = tmp_path / "run_bag"
    with BagRecorder(path) as bag:
        bag.add_topic("/flow_reactor/state", "aichemist_interfaces/msg/FlowReactorState")
        bag.add_topic("/safety/estop", "aichemist_interfaces/msg/SafetyState")
        ts = bag.typestore.types
        header = ts["std_msgs/msg/Header"](stamp=ts["builtin_interfaces/msg/Time"](sec=5, nanosec=0), frame_id="")
        state = ts["aichemist_interfaces/msg/FlowReactorState"](
            header=header, lifecycle_state="active", phase="measuring", safe=False, active_interlock="",
            pump_names=["pump_dfnb"], pump_flow_ml_min=np.array([0.45]), pump_flow_setpoint_ml_min=np.array([0.45]),
            pressure_bar=7.1, temp_c=89.9, temp_setpoint_c=90.0, detector_absorbance=0.31)
        for k in range(3):
            bag.write_message("/flow_reactor/state", 1_000_000_000 * (k + 1), state)
        raw = bag.typestore.serialize_cdr(ts["aichemist_interfaces/msg/SafetyState"](
            header=header, estop=True, source="operator", reason="test"), "aichemist_interfaces/msg/SafetyState")
        bag.write("/safety/estop", 4_000_000_000, bytes(raw))  # as a raw rclpy subscription hands it over
    assert (path / "metadata.yaml").exists() and any(p.suffix == ".mcap" for p in path.iterdir())
    msgs = read_bag(path)
    assert [m[0] for m in msgs] == ["/flow_reactor/state"] * 3 + ["/safety/estop"]
    assert msgs[0][3].temp_c == pytest.approx(89.9) and msgs[3][3].estop is True
    with pytest.raises(ConfigurationError, match="already exists"):
        BagRecorder(path)
