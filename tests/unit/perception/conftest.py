"""Rendered scenes with ground truth, shared by the perception unit tests (built once per module)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.geometry import make_transform
from perception.rack import R_RACK_MARKER

MARKER_ID = 7
MARKER_POS = np.array([0.0, 0.0, 0.3])


def view_from_marker(distance_m: float, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    from sim.perception_scenes import view_from

    return view_from(MARKER_POS, distance_m, azimuth_deg, elevation_deg)


@pytest.fixture(scope="module")
def view():
    return view_from_marker


@pytest.fixture(scope="module")
def marker_scene():
    from sim.cameras import MujocoCamera
    from sim.perception_scenes import SceneBuilder, look_at

    builder = SceneBuilder()
    marker_in_world = make_transform(R_RACK_MARKER, MARKER_POS)
    builder.add_marker(MARKER_ID, marker_in_world)
    builder.add_camera("cam", look_at(MARKER_POS + [0.05, -0.4, 0.1], MARKER_POS))
    scene = builder.build()
    camera = MujocoCamera(scene.model, scene.data, "cam", seed=3)
    yield scene, camera, marker_in_world
    camera.close()
