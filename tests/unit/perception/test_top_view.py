"""Top-view inspection of a grid rack (the lab description's trays) on rendered scenes."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import UntrustworthyEstimate
from perception.geometry import invert, make_transform, rpy_to_matrix
from perception.inspection import TopViewParams, TopViewRackInspector
from perception.rack import GridRackGeometry

# the hplc_autosampler tray of sim/world/lab.yaml
GEOMETRY = GridRackGeometry(name="hplc_autosampler", marker_id=12, marker_xyz_m=(0.07, -0.17, 0.0005), rows=2,
                            cols=5, pitch_m=0.04, first_slot_xyz_m=(0.05, 0.08, 0.015))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_occupancy_and_caps_from_above(seed):
    from sim.cameras import CameraEffects, MujocoCamera
    from sim.perception_scenes import SceneBuilder, VialTruth, look_at

    rng = np.random.default_rng(seed)
    vials = [VialTruth(bool(rng.random() < 0.7), bool(rng.random() < 0.6)) for _ in range(10)]
    station = make_transform(rpy_to_matrix(0, 0, rng.uniform(-3, 3)), [0.0, 0.0, 0.0])
    builder = SceneBuilder()
    builder.add_grid_rack(GEOMETRY, station, vials)
    centre = (station @ np.array([0.07, 0.0, 0.0, 1.0]))[:3]
    eye = centre + [rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.35, 0.6)]
    builder.add_camera("cam", look_at(eye, centre, up=(1, 0, 0)), fovy_deg=60)
    scene = builder.build()
    with MujocoCamera(scene.model, scene.data, "cam", effects=CameraEffects(), seed=seed) as cam:
        result = TopViewRackInspector(GEOMETRY).inspect(cam.render_rgb(), cam.intrinsics)
    assert [s.occupied for s in result.slots] == [v.present for v in vials]
    assert [s.cap_present for s in result.slots] == [v.present and v.cap for v in vials]
    assert all(np.isnan(s.liquid_level_fraction) for s in result.slots)  # not visible from above
    assert result.slots[5].name == "hplc_autosampler/B1"


def test_tray_too_small_in_the_image_is_refused():
    from sim.cameras import MujocoCamera
    from sim.perception_scenes import SceneBuilder, VialTruth, look_at

    builder = SceneBuilder()
    builder.add_grid_rack(GEOMETRY, np.eye(4), [VialTruth(True)] * 10)
    builder.add_camera("cam", look_at([0.07, 0.0, 0.5], [0.07, 0.0, 0.0], up=(1, 0, 0)), fovy_deg=60)
    scene = builder.build()
    with MujocoCamera(scene.model, scene.data, "cam", width=320, height=240) as cam:
        image = cam.render_rgb(randomise=False)
        rack_in_camera = invert(cam.pose_world())  # the station frame is the world here
    with pytest.raises(UntrustworthyEstimate, match="px wide"):
        TopViewRackInspector(GEOMETRY, TopViewParams(min_slot_px=40.0)).inspect_at(image, cam.intrinsics,
                                                                                  rack_in_camera)
