"""Fiducial pose on MuJoCo renders with ground truth, and refusal of every kind of bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.camera import CameraIntrinsics
from perception.errors import ImageQualityError, MarkerNotFound, UntrustworthyEstimate
from perception.fiducials import FiducialDetector, FiducialParams, locate_station
from perception.geometry import invert, make_transform, pose_error, rpy_to_matrix
from aichemist.errors import PerceptionError, ResultCode

MARKER_ID = 7  # the tag in the marker_scene fixture (conftest)


def _render(scene, camera, optical_in_world, *, randomise=True):
    scene.set_camera_pose("cam", optical_in_world)
    return camera.render_rgb(randomise=randomise)


@pytest.mark.parametrize("backend", ["apriltag", "opencv"])
def test_pose_at_045_m_within_goal(view, marker_scene, backend):
    scene, camera, marker_in_world = marker_scene
    detector = FiducialDetector(FiducialParams(backend=backend))
    errors = []
    for az, el in [(0, 5), (20, 10), (-25, 15), (10, -10), (30, 20)]:
        pose = view(0.45, az, el)
        det = detector.locate_marker(_render(scene, camera, pose), camera.intrinsics, MARKER_ID)
        errors.append(pose_error(det.marker_in_camera, invert(pose) @ marker_in_world))
        assert det.trusted and det.reprojection_error_px < 1.0
    err_m, err_deg = np.median(np.array(errors), axis=0)
    assert err_m < 1e-3 and err_deg < 0.3, (backend, errors)


def test_station_pose_in_robot_frame(view, marker_scene):
    scene, camera, marker_in_world = marker_scene
    pose = view(0.5, 15, 10)
    # the robot's base somewhere in the world; the camera's pose in it is what kinematics would give
    robot_in_world = make_transform(rpy_to_matrix(0, 0, 0.7), [-0.4, -0.9, 0.0])
    camera_in_robot = invert(robot_in_world) @ pose
    # station frame: 0.2 m below and 0.1 m behind the tag, z up
    station_in_world = make_transform(np.eye(3), marker_in_world[:3, 3] + [0.0, 0.1, -0.2])
    marker_in_station = invert(station_in_world) @ marker_in_world
    loc = locate_station(FiducialDetector(), _render(scene, camera, pose), camera.intrinsics,
                         station="reactor", marker_id=MARKER_ID, camera_in_robot=camera_in_robot,
                         marker_in_station=marker_in_station)
    err_m, err_deg = pose_error(loc.station_in_robot, invert(robot_in_world) @ station_in_world)
    assert err_m < 2e-3 and err_deg < 0.3
    assert 0.45 < loc.distance_m < 0.55 and loc.reprojection_error_px < 1.0


def test_no_marker_in_view_is_not_found(view, marker_scene):
    scene, camera, _ = marker_scene
    away = view(0.5, 0, 0)
    away[:3, 3] += [0.8, 0.0, 0.0]  # same orientation, the tag now far outside the field of view
    with pytest.raises(MarkerNotFound) as info:
        FiducialDetector().locate_marker(_render(scene, camera, away), camera.intrinsics, MARKER_ID)
    assert info.value.code == ResultCode.PERCEPTION_FAILED
    assert "not found" in str(info.value)


def test_wrong_id_is_not_found_and_names_what_was_seen(view, marker_scene):
    scene, camera, _ = marker_scene
    with pytest.raises(MarkerNotFound, match=r"marker 3 not found.*saw ids \[7\]"):
        FiducialDetector().locate_marker(_render(scene, camera, view(0.4, 0, 5)), camera.intrinsics, 3)


def test_dark_image_is_refused(view, marker_scene):
    scene, camera, _ = marker_scene
    image = (_render(scene, camera, view(0.4, 0, 5)).astype(np.float32) * 0.12).astype(np.uint8)
    with pytest.raises(ImageQualityError, match="too dark"):
        FiducialDetector().locate_marker(image, camera.intrinsics, MARKER_ID)


def test_underexposed_tag_is_refused_even_if_decoded(view, marker_scene):
    scene, camera, _ = marker_scene
    image = _render(scene, camera, view(0.4, 0, 5), randomise=False).astype(np.float32)
    image = np.clip(image * 0.2 + 20, 0, 255).astype(np.uint8)  # grey fog: little contrast, p99.8 still > 40
    with pytest.raises(PerceptionError) as info:
        FiducialDetector().locate_marker(image, camera.intrinsics, MARKER_ID)
    assert isinstance(info.value, (MarkerNotFound, UntrustworthyEstimate))


@pytest.mark.parametrize("sigma_px", [3.0, 5.0, 9.0])
def test_blurred_image_never_gives_a_pose(view, marker_scene, sigma_px):
    scene, camera, _ = marker_scene
    image = cv2.GaussianBlur(_render(scene, camera, view(0.4, 10, 5)), (0, 0), sigma_px)
    with pytest.raises((MarkerNotFound, UntrustworthyEstimate), match="blur|not found"):
        FiducialDetector().locate_marker(image, camera.intrinsics, MARKER_ID)


def test_mild_blur_is_accepted_and_accurate(view, marker_scene):
    scene, camera, marker_in_world = marker_scene
    pose = view(0.4, 10, 5)
    image = cv2.GaussianBlur(_render(scene, camera, pose), (0, 0), 0.8)
    det = FiducialDetector().locate_marker(image, camera.intrinsics, MARKER_ID)
    err_m, err_deg = pose_error(det.marker_in_camera, invert(pose) @ marker_in_world)
    assert err_m < 1.5e-3 and err_deg < 0.5


def test_grazing_view_is_untrustworthy_or_not_found(view, marker_scene):
    scene, camera, _ = marker_scene
    with pytest.raises((UntrustworthyEstimate, MarkerNotFound)):
        FiducialDetector(FiducialParams(max_view_angle_deg=60)).locate_marker(
            _render(scene, camera, view(0.35, 75, 0)), camera.intrinsics, MARKER_ID)


def test_high_reprojection_error_is_refused(view, marker_scene):
    scene, camera, _ = marker_scene
    # wrong intrinsics (a camera info that belongs to another lens): corners no longer fit a square
    image = _render(scene, camera, view(0.4, 30, 20))
    k = camera.intrinsics
    skewed = CameraIntrinsics(k.width, k.height, k.fx, k.fy * 1.4, k.cx, k.cy)
    with pytest.raises(UntrustworthyEstimate, match="reprojection"):
        FiducialDetector(FiducialParams(max_reprojection_error_px=0.5)).locate_marker(image, skewed, MARKER_ID)


@pytest.mark.parametrize("image", [None, np.zeros((0, 0), np.uint8), np.zeros((10, 10, 2), np.uint8)])
def test_missing_or_malformed_image_is_refused(view, marker_scene, image):
    _, camera, _ = marker_scene
    with pytest.raises(ImageQualityError):
        FiducialDetector().locate_marker(image, camera.intrinsics, MARKER_ID)


def test_image_size_must_match_camera_info(view, marker_scene):
    scene, camera, _ = marker_scene
    image = _render(scene, camera, view(0.4, 0, 5))[:240, :320]
    with pytest.raises(ImageQualityError, match="does not match the camera info"):
        FiducialDetector().locate_marker(image, camera.intrinsics, MARKER_ID)


def test_two_copies_of_the_station_tag_are_refused(view, marker_scene):
    scene, camera, _ = marker_scene
    image = _render(scene, camera, view(0.5, 0, 5))
    doubled = image.copy()
    doubled[:, :240] = image[:, 200:440]  # the tag (centred) pasted again on the left
    with pytest.raises(UntrustworthyEstimate, match="seen 2 times"):
        FiducialDetector().locate_marker(doubled, camera.intrinsics, MARKER_ID)


def test_camera_info_round_trip():
    k = CameraIntrinsics.from_fovy(640, 480, 45.0, frame_id="wrist_camera_optical_frame")
    fields = k.to_camera_info_fields()
    back = CameraIntrinsics.from_camera_info_fields(width=fields["width"], height=fields["height"],
                                                    k=fields["k"], d=fields["d"], frame_id=fields["frame_id"])
    assert back == k and back.cx == pytest.approx(319.5)
    assert k.fy == pytest.approx(240 / np.tan(np.radians(22.5)))
