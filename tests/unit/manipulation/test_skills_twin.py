"""Skills against the MuJoCo twin: transfers, bad input, re-localisation, slip, stop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aichemist.clock import SimClock
from aichemist.errors import EmergencyStop, NotFoundError
from manipulation.errors import GraspFailed, GripperNotEmpty, SlotEmpty, SlotOccupied, UnknownSlot, UnknownStation
from manipulation.hardware import StationFix
from manipulation.navigation import BaseRoutePlanner, footprint_collides

pytest.importorskip("mujoco")
pytest.importorskip("pinocchio")

from sim.robot_twin import RobotTwin, TwinArm, TwinBase, TwinGripper, TwinLocaliser  # noqa: E402
from manipulation.skills import Skills  # noqa: E402


def make(layout, planner, seed=0, localiser=None, should_stop=None):
    twin = RobotTwin(layout, seed=seed)
    clock = SimClock(max_step=0.02)
    clock.add_stepper(twin.step)
    planner.robot.detach()
    skills = Skills(layout, planner, TwinArm(twin), TwinGripper(twin), TwinBase(twin),
                    localiser or TwinLocaliser(twin), clock, should_stop=should_stop)
    return twin, clock, skills


def test_route_avoids_furniture(layout):
    routes = BaseRoutePlanner(layout)
    start = layout.station("charging_dock").dock_pose()
    route = routes.route(start, layout.station("hplc_autosampler"))
    pts = [(start.x, start.y)] + [(p.x, p.y) for p in route]
    assert route[-1] == layout.station("hplc_autosampler").dock_pose()
    # every leg but the backing-out and the final docking keeps the inflated clearance
    for a, b in zip(pts[1:-2], pts[2:-1]):
        assert routes.segment_free(a, b, 0.01)
    assert not footprint_collides(layout, route[-1])


@pytest.mark.parametrize("call, error", [
    (lambda s: s.transfer("no_such_station", "A1", "hplc_autosampler", "A1"), UnknownStation),
    (lambda s: s.transfer("reagent_rack", "Z9", "hplc_autosampler", "A1"), UnknownSlot),
    (lambda s: s.transfer("reagent_rack", "B4", "hplc_autosampler", "A1"), SlotEmpty),
    (lambda s: s.transfer("reagent_rack", "A1", "reagent_rack", "A2"), SlotOccupied),
    (lambda s: s.transfer("reagent_rack", "A1", "charging_dock", "A1"), UnknownSlot),
    (lambda s: s.place("hplc_autosampler", "A1"), GripperNotEmpty),
])
def test_bad_input_is_refused_before_any_motion(layout, planner, call, error):
    twin, clock, skills = make(layout, planner)
    q0, pose0 = twin.arm_q.copy(), twin.true_base_pose()
    with pytest.raises(error) as info:
        call(skills)
    assert isinstance(info.value, (NotFoundError, SlotEmpty, SlotOccupied, GripperNotEmpty))
    assert clock.now() == 0.0 and np.array_equal(twin.arm_q, q0) and twin.true_base_pose() == pose0
    assert str(info.value)  # a clear reason


def test_transfer_puts_the_vial_in_the_target_slot(layout, planner):
    twin, clock, skills = make(layout, planner, seed=3)
    vial = skills.transfer("reagent_rack", "A2", "hplc_autosampler", "B3")
    assert vial == "vial_r02"
    assert twin.vial_slot("vial_r02") == "hplc_autosampler/B3"          # ground truth
    assert skills.inventory.slots["hplc_autosampler/B3"] == "vial_r02"
    assert "reagent_rack/A2" not in skills.inventory.slots
    assert skills.stats["relocalisations"] >= 2 and twin.base_collisions == 0
    # the odometry drifted on the way, the re-localised belief is within a few mm of the truth
    odo, true = TwinBase(twin).odometry(), twin.true_base_pose()
    assert math.hypot(odo.x - true.x, odo.y - true.y) < 0.01
    assert clock.now() < 120.0


class BlindLocaliser:
    """'Locates' the station from the odometry belief: what the robot would do without fiducials."""

    def __init__(self, twin, layout):
        self.twin, self.layout = twin, layout

    def locate_station(self, station):
        odo = TwinBase(self.twin).odometry()
        return StationFix(station, np.linalg.inv(odo.matrix()) @ self.layout.station(station).matrix())


def test_without_relocalisation_drift_makes_the_grasp_fail_with_a_typed_error(layout, planner):
    twin, clock, skills = make(layout, planner, seed=0)
    skills.localiser = BlindLocaliser(twin, layout)
    twin.scale_error = np.array([0.03, -0.03, 0.03])   # a worn base: 3 % odometry error
    with pytest.raises(GraspFailed, match="closed to"):
        skills.pick("reagent_rack", "A1")
    assert skills.stats["regrasps"] == 1  # it retried once before giving up
    assert skills.inventory.held is None and "reagent_rack/A1" in skills.inventory.slots


def test_slip_while_lifting_is_detected_and_the_vial_falls(layout, planner):
    twin, clock, skills = make(layout, planner, seed=1)
    twin.inject("slip")
    with pytest.raises(GraspFailed, match="slipped"):
        skills.pick("reagent_rack", "A3")
    assert skills.inventory.held is None and twin.held is None
    clock.sleep(1.0)
    assert twin.vial_slot("vial_r03") != "reagent_rack/A3" or twin.vial_position("vial_r03")[2] < 0.94
    assert TwinGripper(twin).opening_m() < 0.005  # closed on the space the vial left


def test_emergency_stop_halts_the_base_within_200_ms(layout, planner):
    state = {"estop_at": None}

    def should_stop():
        if clock.now() > 2.0 and state["estop_at"] is None:
            state["estop_at"] = clock.now()
        return EmergencyStop("estop") if state["estop_at"] is not None else None

    twin, clock, skills = make(layout, planner, seed=2, should_stop=should_stop)
    with pytest.raises(EmergencyStop):
        skills.dock("hplc_autosampler")
    halted_at = clock.now()
    assert halted_at - state["estop_at"] <= 0.2
    p0 = twin.true_base_pose()
    clock.sleep(0.5)
    assert twin.true_base_pose() == p0 and not twin.arm_moving()


def test_a_transfer_cancelled_after_the_pick_is_resumed_with_the_vial_in_hand(layout, planner):
    from aichemist.errors import Cancelled

    state = {"stop": False}
    twin, clock, skills = make(layout, planner, seed=4, should_stop=lambda: Cancelled("cancel") if state["stop"] else None)
    phases = []

    def feedback(phase, _progress):
        phases.append(phase)
        if phase == "lifting" and skills.inventory.held is not None:
            state["stop"] = True  # cancelled while carrying

    skills.feedback = feedback
    with pytest.raises(Cancelled):
        skills.transfer("reagent_rack", "B1", "reactor_collection", "A2")
    assert skills.inventory.held == "vial_r05" and "reactor_collection/A2" not in skills.inventory.slots
    state["stop"] = False
    skills.feedback = lambda phase, _progress: phases.append(phase)
    assert skills.transfer("reagent_rack", "B1", "reactor_collection", "A2") == "vial_r05"
    assert twin.vial_slot("vial_r05") == "reactor_collection/A2" and skills.inventory.held is None
    assert "resuming: placing the held vial" in phases


def test_a_vial_left_in_hand_by_an_interrupted_transfer_goes_back_before_another_transfer(layout, planner):
    from aichemist.errors import Cancelled

    state = {"stop": False}
    twin, clock, skills = make(layout, planner, seed=5, should_stop=lambda: Cancelled("cancel") if state["stop"] else None)

    def feedback(phase, _progress):
        if phase == "lifting" and skills.inventory.held is not None:
            state["stop"] = True

    skills.feedback = feedback
    with pytest.raises(Cancelled):
        skills.transfer("reagent_rack", "B2", "reactor_collection", "A1")
    assert skills.inventory.held == "vial_r06"
    state["stop"] = False
    skills.feedback = lambda *_: None
    with pytest.raises(SlotEmpty):  # a bad request still moves nothing: the vial stays in hand
        skills.transfer("reagent_rack", "B4", "reactor_collection", "A1")
    assert skills.inventory.held == "vial_r06"
    assert skills.transfer("reagent_rack", "A1", "reactor_collection", "A1") == "vial_r01"
    assert twin.vial_slot("vial_r06") == "reagent_rack/B2" and twin.vial_slot("vial_r01") == "reactor_collection/A1"
