"""Skills re-localising through the wrist camera of the MuJoCo twin (no ROS): the arm points the
camera at the station's tag (``look_q``) before every fix, the real fiducial pipeline
(perception.fiducials) measures the station from the rendered image, and a whole transfer docks,
picks and places on those fixes. Without the look pose the camera sees no tag."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aichemist.clock import SimClock  # noqa: E402
from aichemist.errors import ValidationError  # noqa: E402
from manipulation.hardware import StationFix  # noqa: E402
from manipulation.layout import load_layout  # noqa: E402
from manipulation.planning import EmbeddedPlanner  # noqa: E402

pytest.importorskip("mujoco")
pytest.importorskip("pinocchio")

from manipulation.skills import Skills  # noqa: E402
from perception.errors import MarkerNotFound  # noqa: E402
from perception.fiducials import FiducialDetector, FiducialParams, locate_station  # noqa: E402
from sim.cameras import MujocoCamera  # noqa: E402
from sim.robot_twin import RobotTwin, TwinArm, TwinBase, TwinGripper  # noqa: E402

# manipulator_node's default wrist_camera_look_q
LOOK_Q = [-0.917, -1.919, 0.514, -0.803, -1.268, 0.0]


class WristCameraLocaliser:
    """What perception_node does for /perception/locate_station, in-process."""

    def __init__(self, twin: RobotTwin) -> None:
        self.twin = twin
        self.camera = MujocoCamera(twin.model, twin.data, "wrist_camera", width=640, height=480)
        self.detector = FiducialDetector(FiducialParams())
        self.arm_at_fix: list[np.ndarray] = []

    def locate_station(self, station: str) -> StationFix:
        st = self.twin.layout.station(station)
        with self.twin.lock:
            self.arm_at_fix.append(self.twin.arm_q.copy())
            image = self.camera.render_rgb()
            camera_in_robot = self.camera.pose_in_body("base_footprint")
        loc = locate_station(self.detector, image, self.camera.intrinsics, station=station, marker_id=st.fiducial.id,
                             camera_in_robot=camera_in_robot, marker_in_station=st.fiducial_matrix_in_station())
        return StationFix(station, loc.station_in_robot, distance_m=loc.distance_m,
                          reprojection_error_px=loc.reprojection_error_px)


def make(look_q):
    layout = load_layout()
    planner = EmbeddedPlanner()
    twin = RobotTwin(layout, seed=3)
    clock = SimClock(max_step=0.02)
    clock.add_stepper(twin.step)
    localiser = WristCameraLocaliser(twin)
    skills = Skills(layout, planner, TwinArm(twin), TwinGripper(twin), TwinBase(twin), localiser, clock,
                    look_q=look_q)
    return twin, localiser, skills


def test_transfer_on_fixes_from_the_wrist_camera():
    twin, localiser, skills = make(LOOK_Q)
    phases = []
    skills.feedback = lambda phase, progress: phases.append(phase)
    vial = skills.transfer("reagent_rack", "A2", "hplc_autosampler", "B3")
    assert twin.vial_slot(vial) == "hplc_autosampler/B3" and twin.base_collisions == 0
    assert len(localiser.arm_at_fix) >= 4  # pre-dock and dock, at both stations
    assert all(np.allclose(q, LOOK_Q, atol=1e-6) for q in localiser.arm_at_fix)
    assert "pointing the wrist camera" in phases


def test_without_the_look_pose_the_wrist_camera_sees_no_tag():
    twin, localiser, skills = make(None)
    with pytest.raises(MarkerNotFound):
        skills.dock("reagent_rack")


def test_look_q_must_be_six_joints():
    with pytest.raises(ValidationError, match="6 joint angles"):
        make([0.0, 1.0])


class TagTooSmallFromAfar(WristCameraLocaliser):
    """The first ``untrusted`` fixes see the tag but too small to trust (as the twin's 640 x 480
    wrist camera does from some pre-dock poses); the later fixes are real."""

    def __init__(self, twin: RobotTwin, error: type, untrusted: int = 1) -> None:
        super().__init__(twin)
        self.error, self.untrusted, self.calls = error, untrusted, 0
        self.base_at_call: list = []

    def locate_station(self, station: str) -> StationFix:
        self.calls += 1
        self.base_at_call.append(self.twin.true_base_pose())
        if self.calls <= self.untrusted:
            raise self.error("marker 10 pose untrustworthy: tag too small: 17.6 px < 18 px")
        return super().locate_station(station)


def test_an_untrusted_pre_dock_fix_gets_a_closer_look_before_the_last_leg():
    from perception.errors import UntrustworthyEstimate

    twin, _, skills = make(LOOK_Q)
    skills.localiser = localiser = TagTooSmallFromAfar(twin, UntrustworthyEstimate)
    fix = skills.dock("reagent_rack")
    assert skills.stats["coarse_creeps"] == 1 and localiser.calls >= 3  # pre-dock, closer, dock
    first, closer = localiser.base_at_call[:2]
    moved = np.hypot(closer.x - first.x, closer.y - first.y)
    assert 0.06 < moved < 0.1  # one creep of 8 cm towards the dock
    assert skills.docked_at == "reagent_rack" and fix.station == "reagent_rack" and twin.base_collisions == 0
    dock = twin.layout.station("reagent_rack").dock_pose()
    truth = twin.true_base_pose()
    assert np.hypot(truth.x - dock.x, truth.y - dock.y) < 0.02


def test_no_last_leg_without_a_trusted_fix():
    from perception.errors import UntrustworthyEstimate

    twin, _, skills = make(LOOK_Q)
    skills.localiser = localiser = TagTooSmallFromAfar(twin, UntrustworthyEstimate, untrusted=99)
    with pytest.raises(UntrustworthyEstimate):
        skills.dock("reagent_rack")
    assert skills.stats["coarse_creeps"] == 2 and skills.docked_at is None
    dock = twin.layout.station("reagent_rack").dock_pose()
    truth = twin.true_base_pose()
    assert np.hypot(truth.x - dock.x, truth.y - dock.y) > 0.15  # stopped short of the last leg
    assert twin.base_collisions == 0


def test_a_tag_not_seen_at_the_pre_dock_pose_stops_the_robot():
    twin, _, skills = make(LOOK_Q)
    skills.localiser = TagTooSmallFromAfar(twin, MarkerNotFound)
    with pytest.raises(MarkerNotFound):
        skills.dock("reagent_rack")
    assert skills.docked_at is None and skills.stats["coarse_creeps"] == 0
