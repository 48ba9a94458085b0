"""The robot description: generated files in sync, UR5e DH kinematics, SRDF, frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from manipulation import robot_spec as rs

pin = pytest.importorskip("pinocchio")


def _dh(theta, d, a, alpha):
    ct, st, ca, sa = math.cos(theta), math.sin(theta), math.cos(alpha), math.sin(alpha)
    return np.array([[ct, -st * ca, st * sa, a * ct], [st, ct * ca, -ct * sa, a * st], [0, sa, ca, d], [0, 0, 0, 1]])


def test_committed_description_files_equal_the_generator():
    directory = rs.description_dir()
    assert (directory / "urdf" / "aichemist_robot.urdf").read_text() == rs.urdf_text()
    assert (directory / "srdf" / "aichemist_robot.srdf").read_text() == rs.srdf_text()


def test_urdf_forward_kinematics_equal_ur5e_standard_dh():
    directory = rs.description_dir()
    model = pin.buildModelFromUrdf(str(directory / "urdf" / "aichemist_robot.urdf"))
    data = model.createData()
    rng = np.random.default_rng(1)
    for _ in range(20):
        q_arm = rng.uniform(-math.pi, math.pi, 6)
        q = np.zeros(model.nq)
        q[:6] = q_arm
        pin.framesForwardKinematics(model, data, q)
        base = data.oMf[model.getFrameId("arm_base_link")].homogeneous
        flange = data.oMf[model.getFrameId("flange")].homogeneous
        expected = np.eye(4)
        for i in range(6):
            expected = expected @ _dh(q_arm[i], rs.UR5E_DH_D_M[i], rs.UR5E_DH_A_M[i], rs.UR5E_DH_ALPHA_RAD[i])
        np.testing.assert_allclose(np.linalg.inv(base) @ flange, expected, atol=1e-9)


def test_description_has_the_frames_other_areas_use():
    text = rs.urdf_text()
    for frame in ("base_footprint", "tcp", "wrist_camera_optical_frame", "finger_left_link", "finger_right_link"):
        assert f'name="{frame}"' in text
    model = pin.buildModelFromUrdf(str(rs.description_dir() / "urdf" / "aichemist_robot.urdf"))
    assert [model.names[i] for i in range(1, 7)] == list(rs.ARM_JOINTS)


def test_srdf_disables_only_pairs_of_real_links():
    from manipulation.robot_model import srdf_disabled_pairs

    pairs = srdf_disabled_pairs(rs.description_dir() / "srdf" / "aichemist_robot.srdf")
    links = {ln for ln in rs.urdf_text().split('<link name="')[1:]}
    names = {ln.split('"')[0] for ln in links}
    assert pairs and all(set(p) <= names for p in pairs)
    assert frozenset(("upper_arm_link", "forearm_link")) in pairs
