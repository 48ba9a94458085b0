"""sim.cameras: intrinsics, optical-frame pose, depth and the randomisation of rendered images."""

from __future__ import annotations

import numpy as np
import pytest

from aichemist.errors import ConfigurationError, DeviceNotFoundError
from perception.geometry import invert


@pytest.fixture(scope="module")
def ball_scene():
    import mujoco

    from sim.cameras import MUJOCO_TO_OPTICAL  # noqa: F401  (sets MUJOCO_GL before mujoco renders)

    xml = """<mujoco><visual><global offwidth="640" offheight="480"/><quality shadowsize="0"/></visual>
      <worldbody><light directional="true" dir="0 0 -1" diffuse="0.8 0.8 0.8" castshadow="false"/>
      <geom name="floor" type="plane" size="2 2 0.1" rgba="0.3 0.3 0.3 1"/>
      <geom name="ball" type="sphere" size="0.01" pos="0.02 -0.01 0.02" rgba="1 0 0 1"/>
      <camera name="top" pos="0 0 0.5" xyaxes="1 0 0 0 1 0" fovy="50"/></worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return model, data


def test_ball_projects_where_the_intrinsics_say(ball_scene):
    from sim.cameras import MujocoCamera

    model, data = ball_scene
    with MujocoCamera(model, data, "top") as cam:
        rgb = cam.render_rgb(randomise=False)
        red = (rgb[:, :, 0] > 150) & (rgb[:, :, 1] < 60)
        vs, us = np.nonzero(red)
        ball_cam = invert(cam.pose_world()) @ np.array([0.02, -0.01, 0.02, 1.0])
        expected = cam.intrinsics.project(ball_cam[:3])[0]
        assert np.hypot(us.mean() - expected[0], vs.mean() - expected[1]) < 0.3
        # optical frame: z forward (down here), y down the image (-y of the world for this camera)
        assert np.allclose(cam.pose_world()[:3, 2], [0, 0, -1]) and np.allclose(cam.pose_world()[:3, 1], [0, -1, 0])


def test_depth_is_metric_distance_along_the_axis(ball_scene):
    from sim.cameras import MujocoCamera

    model, data = ball_scene
    with MujocoCamera(model, data, "top") as cam:
        depth = cam.render_depth(randomise=False)
        assert depth.dtype == np.float32 and depth.shape == (480, 640)
        assert depth[10, 10] == pytest.approx(0.5, abs=1e-3)                  # the floor
        assert depth[int(cam.intrinsics.cy), int(cam.intrinsics.cx)] == pytest.approx(0.5, abs=1e-3)


def test_effects_randomise_but_none_is_deterministic(ball_scene):
    from sim.cameras import CameraEffects, MujocoCamera

    model, data = ball_scene
    with MujocoCamera(model, data, "top", effects=CameraEffects(), seed=1) as cam:
        a, b = cam.render_rgb(), cam.render_rgb()
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0
        depth = cam.render_depth()
        assert 0.0 < np.count_nonzero(depth == 0) / depth.size < 0.01  # dropouts
        patch = depth[200:280, 200:280]
        assert 0.0 < np.std(patch[patch > 0]) < 0.01
    with MujocoCamera(model, data, "top", seed=1) as cam:
        assert np.array_equal(cam.render_rgb(), cam.render_rgb())


def test_missing_camera_names_the_available_ones(ball_scene):
    from sim.cameras import MujocoCamera

    model, data = ball_scene
    with pytest.raises(DeviceNotFoundError, match=r"camera 'wrist' is not in the MuJoCo model.*top"):
        MujocoCamera(model, data, "wrist")


def test_resolution_beyond_the_offscreen_buffer_is_a_configuration_error(ball_scene):
    from sim.cameras import MujocoCamera

    model, data = ball_scene
    with pytest.raises(ConfigurationError, match="offscreen buffer"):
        MujocoCamera(model, data, "top", width=1920, height=1080)


def test_effects_limits_are_validated():
    from aichemist.errors import ValidationError
    from aichemist.params import validate
    from sim.cameras import CameraEffects

    with pytest.raises(ValidationError, match="noise_sigma"):
        validate(CameraEffects, {"noise_sigma": -1.0})
