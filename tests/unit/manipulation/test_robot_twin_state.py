"""The robot twin's world outlives the process (sim.robot_twin_state): saved after picks and places,
restored into a new twin, the held vial standing back in the slot it was picked from."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from aichemist.clock import SimClock
from aichemist.errors import ConfigurationError

pytest.importorskip("mujoco")
pytest.importorskip("pinocchio")

from manipulation.skills import Inventory, Skills  # noqa: E402
from sim.robot_twin import RobotTwin, TwinArm, TwinBase, TwinGripper, TwinLocaliser  # noqa: E402
from sim.robot_twin_state import RobotWorldState, load_world_state, save_world_state  # noqa: E402


def make(layout, planner, twin, inventory=None, on_change=None):
    clock = SimClock(max_step=0.02)
    clock.add_stepper(twin.step)
    planner.robot.detach()
    return Skills(layout, planner, TwinArm(twin), TwinGripper(twin), TwinBase(twin), TwinLocaliser(twin), clock,
                  inventory=inventory, on_inventory_change=on_change)


def restored(layout, path, seed=0):
    """A new twin (as a respawned node builds it) put into the world saved at ``path``."""
    twin = RobotTwin(layout, seed=seed)
    state = load_world_state(path)
    assert state is not None
    twin.restore_world(state)
    return twin


def test_a_transferred_vial_is_where_it_was_put_in_a_new_twin(layout, planner, tmp_path):
    path = tmp_path / "robot_twin_state.json"
    twin = RobotTwin(layout, seed=3)
    saved = []

    def on_change():  # what manipulator_node does: save the twin's world at each pick and place
        save_world_state(path, twin.world_state())
        saved.append(json.loads(path.read_text()))

    skills = make(layout, planner, twin, on_change=on_change)
    assert skills.transfer("reagent_rack", "A2", "hplc_autosampler", "B3") == "vial_r02"
    # saved after the pick (vial in the gripper, from A2) and after the place
    assert [(s["held_vial"], s["held_from"]) for s in saved] == [("vial_r02", "reagent_rack/A2"), (None, None)]
    assert saved[1]["vials"]["vial_r02"]["slot"] == "hplc_autosampler/B3"
    assert skills.inventory_snapshot() == Inventory({**{k: v for k, v in layout.initial_vials.items()
                                                        if k != "reagent_rack/A2"}, "hplc_autosampler/B3": "vial_r02"})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    truth = twin.true_base_pose()

    new = restored(layout, path)
    assert new.vial_slot("vial_r02") == "hplc_autosampler/B3"          # ground truth, within 4 mm
    for key, vial in layout.initial_vials.items():
        if vial != "vial_r02":
            assert new.vial_slot(vial) == key
    pose = new.true_base_pose()
    assert (pose.x, pose.y, pose.yaw) == pytest.approx((truth.x, truth.y, truth.yaw), abs=1e-9)
    assert np.array_equal(new.odom_pose, new.true_pose)  # the odometry belief restarts from the true pose
    assert new.world_state().slots() == skills.inventory_snapshot().slots


def test_a_vial_in_the_gripper_stands_back_in_its_slot_and_can_be_picked_again(layout, planner, tmp_path):
    path = tmp_path / "state.json"
    twin = RobotTwin(layout, seed=4)
    skills = make(layout, planner, twin, on_change=lambda: save_world_state(path, twin.world_state()))
    assert skills.pick("reagent_rack", "B1") == "vial_r05"
    state = load_world_state(path)
    assert (state.held_vial, state.held_from) == ("vial_r05", "reagent_rack/B1")
    assert "vial_r05" not in state.vials and "reagent_rack/B1" not in state.slots()
    assert twin.vial_slot("vial_r05") is None  # it really is in the air, in the gripper

    new = restored(layout, path, seed=4)      # the process died with the vial in the gripper
    assert new.held is None and new.vial_slot("vial_r05") == "reagent_rack/B1"
    assert new.vial_upright("vial_r05")
    assert TwinGripper(new).opening_m() == pytest.approx(0.085) and not new.arm_moving()
    # the belief restarts from the restored world; the robot picks the vial again from its slot
    inventory = Inventory(new.world_state().slots())
    assert inventory.slots["reagent_rack/B1"] == "vial_r05" and inventory.held is None
    skills = make(layout, planner, new, inventory=inventory)
    assert skills.transfer("reagent_rack", "B1", "reactor_collection", "A2") == "vial_r05"
    assert new.vial_slot("vial_r05") == "reactor_collection/A2" and new.base_collisions == 0


def test_a_fallen_vial_is_restored_where_it_lies(layout, tmp_path):
    twin = RobotTwin(layout)
    adr = twin.model.jnt_qposadr[twin.model.body_jntadr[twin._vial_body["vial_r03"]]]
    # lying on its side on the floor in front of the reagent rack
    twin.data.qpos[adr:adr + 7] = [1.5, 1.2, 0.006, math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0]
    for _ in range(300):
        twin.step(0.0, 0.002)
    lying = twin.vial_position("vial_r03")
    state = twin.world_state()
    assert state.vials["vial_r03"].slot is None and "reagent_rack/A3" not in state.slots()
    save_world_state(tmp_path / "s.json", state)
    new = restored(layout, tmp_path / "s.json")
    assert np.allclose(new.vial_position("vial_r03"), lying, atol=2e-3) and not new.vial_upright("vial_r03")
    assert new.vial_slot("vial_r01") == "reagent_rack/A1"


def test_the_write_is_atomic_and_a_failed_write_keeps_the_previous_file(layout, tmp_path, monkeypatch):
    twin = RobotTwin(layout)
    path = tmp_path / "deeper" / "state.json"
    first = twin.world_state()
    save_world_state(path, first)
    assert load_world_state(path) == first

    def broken_fsync(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    moved = first.model_copy(update={"base_pose": first.base_pose.model_copy(update={"x": 3.0})})
    with pytest.raises(OSError, match="disk full"):
        save_world_state(path, moved)
    assert load_world_state(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_unusable_files_are_configuration_errors_that_name_the_problem(layout, tmp_path):
    assert load_world_state(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"format": 1, "layout": ')
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_world_state(tmp_path / "bad.json")
    (tmp_path / "extra.json").write_text(json.dumps({"layout": "aichemist_lab", "base_pose": {"x": 0, "y": 0, "yaw": 0},
                                                     "colour": "red"}))
    with pytest.raises(ConfigurationError, match="colour"):
        load_world_state(tmp_path / "extra.json")

    twin = RobotTwin(layout)
    good = twin.world_state()
    pose0 = twin.true_base_pose()
    v = dict(good.vials)
    cases = {
        "layout is 'other_lab'": good.model_copy(update={"layout": "other_lab"}),
        "vials \\['vial_r06'\\] are missing": good.model_copy(update={"vials": {k: x for k, x in v.items()
                                                                              if k != "vial_r06"}}),
        "both in slot reagent_rack/A1": good.model_copy(update={"vials": {
            **v, "vial_r02": v["vial_r02"].model_copy(update={"slot": "reagent_rack/A1"})}}),
        "not a rack slot": good.model_copy(update={"vials": {
            **v, "vial_r02": v["vial_r02"].model_copy(update={"slot": "charging_dock/A1"})}}),
        "held_from reagent_rack/A1 is occupied": good.model_copy(update={
            "vials": {k: x for k, x in v.items() if k != "vial_r02"}, "held_vial": "vial_r02",
            "held_from": "reagent_rack/A1"}),
    }
    for message, state in cases.items():
        with pytest.raises(ConfigurationError, match=message):
            twin.restore_world(RobotWorldState.model_validate(state.model_dump()))
    assert twin.true_base_pose() == pose0  # refused before anything changed
