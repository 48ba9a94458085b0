"""Embedded planning backend: IK, collision (URDF + SRDF + scene + attached vial), OMPL, toppra."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aichemist.errors import ConfigurationError, PlanningError
from manipulation.errors import PathInCollision, Unreachable
from manipulation.layout import load_layout, se3_matrix
from manipulation.planning import EmbeddedPlanner, make_planner, moveit_available
from manipulation.robot_model import SceneObject
from manipulation.scene import build_scene, vial_object_name

pytest.importorskip("pinocchio")
pytest.importorskip("ompl")
pytest.importorskip("toppra")

DOWN = (math.pi, 0.0, 0.0)


@pytest.fixture(scope="module")
def planner():
    return EmbeddedPlanner()


@pytest.fixture
def hplc(planner):
    layout = load_layout()
    station = layout.station("hplc_autosampler")
    base = station.dock_pose()
    occupancy = {"hplc_autosampler/A1": "v1", "hplc_autosampler/A3": "v3", "hplc_autosampler/B2": "v2"}
    planner.set_scene(build_scene(layout, base, occupancy))
    planner.robot.detach()
    planner.robot.finger_opening_m = 0.03
    to_station = np.linalg.inv(base.matrix()) @ station.matrix()
    return layout, station, to_station


def _dense_collision_free(planner, traj, step_rad=0.002) -> bool:
    robot = planner.robot
    planner._set_margin(0.0)
    try:
        for a, b in zip(traj.positions[:-1], traj.positions[1:]):
            n = max(1, int(np.ceil(np.abs(b - a).max() / step_rad)))
            for k in range(n + 1):
                if robot.in_collision(a + (b - a) * k / n):
                    return False
    finally:
        planner._margin = None
    return True


def test_plan_to_pregrasp_is_collision_free_timed_and_within_limits(planner, hplc):
    _, station, to_station = hplc
    pre = to_station @ se3_matrix(station.rack.slot_xyz("A2") + [0, 0, 0.1], DOWN)
    traj = planner.plan_pose(planner.robot.spec.stow_q, pre)
    np.testing.assert_allclose(traj.start, planner.robot.spec.stow_q, atol=1e-9)
    np.testing.assert_allclose(planner.robot.fk(traj.goal), pre, atol=1e-4)
    assert np.all(np.abs(traj.velocities) <= planner.robot.velocity_limits * 1.01)
    assert np.all(np.diff(traj.times_s) > 0) and traj.duration_s > 0.2
    assert _dense_collision_free(planner, traj)


def test_approach_line_stays_vertical_and_fingers_must_straddle_the_vial(planner, hplc):
    _, station, to_station = hplc
    grasp = to_station @ se3_matrix(station.rack.slot_xyz("A3") + [0, 0, 0.012], DOWN)
    pre = grasp.copy()
    pre[2, 3] += 0.09
    transit = planner.plan_pose(planner.robot.spec.ready_q, pre)
    line = planner.plan_linear(transit.goal, grasp)
    xy = np.array([planner.robot.fk(q)[:2, 3] for q in line.positions])
    assert np.abs(xy - grasp[:2, 3]).max() < 2e-3
    np.testing.assert_allclose(planner.robot.fk(line.goal), grasp, atol=1e-4)
    # fingers opened narrower than the vial would land on it: refused, unless explicitly allowed
    planner.robot.finger_opening_m = 0.008
    try:
        with pytest.raises(PathInCollision):
            planner.plan_linear(transit.goal, grasp)
        allowed = [(link, vial_object_name("v3")) for link in ("finger_left_link", "finger_right_link")]
        planner.plan_linear(transit.goal, grasp, allowed)
    finally:
        planner.robot.finger_opening_m = 0.03


def test_unreachable_pose_is_refused_with_the_position(planner, hplc):
    far = se3_matrix((2.5, 0.0, 1.0), DOWN)
    with pytest.raises(Unreachable, match=r"\(2.500, 0.000, 1.000\)"):
        planner.plan_pose(planner.robot.spec.stow_q, far)


def test_goal_inside_the_bench_is_refused(planner, hplc):
    _, station, to_station = hplc
    inside = to_station @ se3_matrix((0.1, 0.0, -0.1), DOWN)  # 10 cm below the bench top
    with pytest.raises(PlanningError):
        planner.plan_pose(planner.robot.spec.ready_q, inside)


def test_verification_catches_a_thin_obstacle_between_samples(planner):
    """A 1 cm plate between two free configurations: the straight move is refused and a detour found."""
    robot = planner.robot
    start, goal = np.array(robot.spec.ready_q), np.array(robot.spec.ready_q)
    goal[0] += 1.2   # swing the pan joint
    mid = robot.fk((start + goal) / 2)[:3, 3]
    radial = mid[:2] - np.array(robot.spec.arm_mount_xyz_m[:2])
    # thin along the TCP's path, long along the arm's radius: endpoints stay ~25 cm away
    yaw = math.atan2(radial[1], radial[0]) - math.pi / 2
    plate = SceneObject("plate", "box", (0.01, 0.2, 0.1), se3_matrix(mid, (0, 0, yaw)))
    planner.set_scene([plate])
    robot.detach()
    robot.finger_opening_m = 0.03
    assert planner.valid(start) and planner.valid(goal)
    import toppra as ta

    line = ta.SplineInterpolator([0.0, 1.0], np.vstack([start, goal]), bc_type="natural")
    assert not planner._verify_path(line, planner.params.free_margin_m)
    traj = planner.plan_joints(start, goal)
    assert traj.stats["ompl"] or traj.stats["via_ready"]
    assert _dense_collision_free(planner, traj)


def test_attached_vial_is_checked_against_the_world(planner):
    robot = planner.robot
    q = np.array(robot.spec.ready_q)
    tcp = robot.fk(q)
    block = SceneObject("block", "box", (0.1, 0.1, 0.02), tcp @ se3_matrix((0, 0, 0.03)))  # 3 cm below the TCP
    planner.set_scene([block])
    robot.finger_opening_m = 0.012
    robot.detach()
    assert planner.valid(q, margin=0.001)
    robot.attach("cylinder", (0.006, 0.032), se3_matrix((0, 0, 0.012)))  # vial hangs 2.8 cm below
    try:
        assert not planner.valid(q, margin=0.001)
    finally:
        robot.detach()


def test_planner_factory(planner):
    with pytest.raises(ConfigurationError, match="backend"):
        make_planner("bogus")
    if not moveit_available():
        with pytest.raises(ConfigurationError, match="moveit_py"):
            make_planner("moveit")
        assert make_planner("auto", robot=planner.robot).name == "embedded"
