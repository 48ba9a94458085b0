"""Rack inspection on rendered racks with known vials, caps and liquid levels."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ImageQualityError, MarkerNotFound, UntrustworthyEstimate
from perception.geometry import make_transform, rpy_to_matrix
from perception.inspection import RackInspector
from perception.rack import RackGeometry

GEOMETRY = RackGeometry(slots=6)
ORANGE, GREEN = (0.85, 0.55, 0.1, 0.92), (0.2, 0.6, 0.25, 0.9)


@pytest.fixture(scope="module")
def rack_scene():
    from sim.cameras import CameraEffects, MujocoCamera
    from sim.perception_scenes import SceneBuilder, VialTruth, view_from

    vials = [VialTruth(True, True, 0.6, ORANGE), VialTruth(False), VialTruth(True, False, 0.0),
             VialTruth(True, False, 0.3, GREEN), VialTruth(True, True, 0.9, GREEN), VialTruth(True, True, 0.0)]
    builder = SceneBuilder()
    builder.add_rack(GEOMETRY, make_transform(rpy_to_matrix(0, 0, 0.15), [0.0, 0.0, 0.012]), vials)
    builder.add_camera("cam", view_from([0.06, 0.0, 0.045], 0.45, 10, 20))
    scene = builder.build()
    camera = MujocoCamera(scene.model, scene.data, "cam", effects=CameraEffects(), seed=11)
    yield scene, camera, vials
    camera.close()


def test_occupancy_caps_and_levels_match_truth(rack_scene):
    scene, camera, vials = rack_scene
    for _ in range(3):  # three differently lit, noisy frames
        result = RackInspector(GEOMETRY).inspect(camera.render_rgb(), camera.intrinsics)
        assert [s.occupied for s in result.slots] == [v.present for v in vials]
        assert [s.cap_present for s in result.slots] == [v.present and v.cap for v in vials]
        for slot, vial in zip(result.slots, vials):
            if vial.present:
                assert slot.liquid_level_fraction == pytest.approx(vial.level_fraction, abs=0.05), slot
            else:
                assert slot.liquid_level_fraction == 0.0
        assert result.slots[1].name == "rack/2"


def test_dark_backdrop_is_refused(rack_scene):
    _, camera, _ = rack_scene
    image = camera.render_rgb()
    inspector = RackInspector(GEOMETRY)
    rack_in_camera = inspector.inspect(image, camera.intrinsics).rack_in_camera
    dark = (image.astype(np.float32) * 0.08).astype(np.uint8)
    with pytest.raises(ImageQualityError, match="too dark"):
        inspector.inspect_at(dark, camera.intrinsics, rack_in_camera)


def test_rack_outside_the_image_is_refused(rack_scene):
    _, camera, _ = rack_scene
    image = camera.render_rgb()
    inspector = RackInspector(GEOMETRY)
    rack_in_camera = inspector.inspect(image, camera.intrinsics).rack_in_camera.copy()
    rack_in_camera[0, 3] += 0.4  # the rack assumed far to the right: its slots fall outside the image
    with pytest.raises(UntrustworthyEstimate, match="not fully inside the image"):
        inspector.inspect_at(image, camera.intrinsics, rack_in_camera)


def test_rack_without_its_marker_is_not_found(rack_scene):
    _, camera, _ = rack_scene
    other = RackGeometry(slots=6, marker_id=11)
    with pytest.raises(MarkerNotFound, match="marker 11 not found"):
        RackInspector(other).inspect(camera.render_rgb(), camera.intrinsics)


def test_geometry_rejects_overlapping_slots():
    from aichemist.errors import ValidationError

    with pytest.raises(ValidationError, match="pitch_m"):
        RackGeometry(pitch_m=0.01)
