"""The fiducial pipeline on the lab world of sim/world (the manipulation engineer's MJCF).

Each station camera looks down at its station; the tag pose from the image (through the same
FiducialDetector the perception node uses) must match the ``<station>_fiducial`` site of the
model, for every station of the lab description.
"""

from __future__ import annotations

import numpy as np

from perception.fiducials import FiducialDetector
from perception.geometry import invert, pose_error


def test_station_tags_located_from_station_cameras():
    import mujoco

    from sim.cameras import MujocoCamera
    from sim.world.mjcf import load_model, station_camera_names

    model = load_model()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    detector = FiducialDetector()
    located = {}
    for name in station_camera_names():
        station = name[: -len("_camera")]
        with MujocoCamera(model, data, name) as cam:
            image = cam.render_rgb(randomise=False)
            site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"{station}_fiducial")
            tag_in_world = np.eye(4)
            tag_in_world[:3, :3] = data.site_xmat[site].reshape(3, 3)
            tag_in_world[:3, 3] = data.site_xpos[site]
            dets = [d for d in detector.detect(image, cam.intrinsics) if d.trusted]
            if dets:
                located[station] = pose_error(dets[0].marker_in_camera, invert(cam.pose_world()) @ tag_in_world)
    assert sorted(located) == sorted(n[: -len("_camera")] for n in station_camera_names()), located
    for station, (err_m, err_deg) in located.items():
        assert err_m < 0.003 and err_deg < 1.0, (station, err_m, err_deg)
