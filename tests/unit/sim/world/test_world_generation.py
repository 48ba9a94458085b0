"""The one lab description and its two generated worlds (MJCF for MuJoCo, SDF for Gazebo)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import yaml

from aichemist.errors import ConfigurationError, NotFoundError
from manipulation.layout import DEFAULT_LAYOUT_PATH, load_layout

STATIONS = {"reagent_rack", "reactor_collection", "hplc_autosampler", "charging_dock"}


def test_lab_has_the_four_stations_with_distinct_fiducials():
    layout = load_layout()
    assert set(layout.station_names()) == STATIONS
    ids = [s.fiducial.id for s in layout.stations]
    assert len(set(ids)) == 4 and all(s.fiducial.family == "tag36h11" for s in layout.stations)


def test_unknown_station_and_slot_are_named_in_the_error():
    layout = load_layout()
    with pytest.raises(NotFoundError, match="no_such_station.*known stations"):
        layout.station("no_such_station")
    with pytest.raises(NotFoundError, match="slot 'Z9'"):
        layout.station("reagent_rack").slot_world_xyz("Z9")


def test_slot_positions_lie_on_the_rack_in_front_of_the_dock():
    layout = load_layout()
    st = layout.station("hplc_autosampler")
    dock = st.dock_pose()
    a1 = st.slot_world_xyz("A1")
    b5 = st.slot_world_xyz("B5")
    # the robot faces +x at the HPLC bench: slots are ahead of it, A1 on its left
    assert a1[0] > dock.x and b5[0] > a1[0] and a1[1] > b5[1]
    assert a1[2] == pytest.approx(0.9 + 0.015)


def test_duplicate_fiducial_ids_are_a_configuration_error(tmp_path):
    data = yaml.safe_load(DEFAULT_LAYOUT_PATH.read_text())
    data["stations"][1]["fiducial"]["id"] = data["stations"][0]["fiducial"]["id"]
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigurationError, match="duplicate fiducial ids"):
        load_layout(path)


def test_mjcf_compiles_with_robot_cameras_vials_and_matches_the_urdf(tmp_path):
    mujoco = pytest.importorskip("mujoco")
    pin = pytest.importorskip("pinocchio")
    from manipulation import robot_spec as rs
    from sim.world.mjcf import build_mjcf

    model = mujoco.MjModel.from_xml_string(build_mjcf(asset_dir=tmp_path))
    for name in ["reagent_rack_camera", "reactor_collection_camera", "hplc_autosampler_camera",
                 "charging_dock_camera", "wrist_camera"]:
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name) >= 0, name
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "vial_vial_r01") >= 0
    data = mujoco.MjData(model)
    q_arm = np.array([0.3, -1.2, 1.4, -0.7, 0.5, 0.2])
    for j, v in zip(rs.ARM_JOINTS, q_arm):
        data.qpos[model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)]] = v
    mujoco.mj_forward(model, data)
    pm = pin.buildModelFromUrdf(str(rs.description_dir() / "urdf" / "aichemist_robot.urdf"))
    pd = pm.createData()
    q = np.zeros(pm.nq)
    q[:6] = q_arm
    pin.framesForwardKinematics(pm, pd, q)
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "wrist_camera_optical_frame")
    np.testing.assert_allclose(data.xpos[body], pd.oMf[pm.getFrameId("wrist_camera_optical_frame")].translation,
                               atol=1e-9)


def test_mjcf_vials_rest_in_their_slots(tmp_path):
    mujoco = pytest.importorskip("mujoco")
    from sim.world.mjcf import build_mjcf

    layout = load_layout()
    model = mujoco.MjModel.from_xml_string(build_mjcf(layout, tmp_path))
    data = mujoco.MjData(model)
    for _ in range(500):  # 1 s
        mujoco.mj_step(model, data)
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "vial_vial_r05")
    slot = layout.station("reagent_rack").slot_world_xyz("B1")
    np.testing.assert_allclose(data.xpos[body][:2], slot[:2], atol=1e-3)
    assert data.xpos[body][2] == pytest.approx(slot[2] + layout.vial.height_m / 2, abs=2e-3)


def test_sdf_world_is_valid_for_the_real_sdformat_parser(tmp_path):
    from sim.world.sdf import write_sdf

    ign = shutil.which("ign")
    assert ign is not None, ("ign is missing (Debian ignition-tools + libsdformat-dev + sdformat-sdf): "
                            "run scripts/setup.sh, which installs them")
    path = write_sdf(tmp_path / "lab.sdf")
    out = subprocess.run([ign, "sdf", "-k", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Valid" in out.stdout, out.stdout + out.stderr
    text = path.read_text()
    assert text.count("<sensor name=") == 4 and "reagent_rack_camera" in text


def test_sdf_parser_rejects_a_broken_world(tmp_path):
    """The validation can fail: a duplicated model name is an error for sdformat."""
    from sim.world.sdf import build_sdf

    ign = shutil.which("ign")
    assert ign is not None, ("ign is missing (Debian ignition-tools + libsdformat-dev + sdformat-sdf): "
                            "run scripts/setup.sh, which installs them")
    text = build_sdf(asset_dir=tmp_path)
    start = text.index('<model name="pillar">')
    end = text.index("</model>", start) + len("</model>")
    broken = text[:end] + text[start:end] + text[end:]
    path = tmp_path / "broken.sdf"
    path.write_text(broken)
    out = subprocess.run([ign, "sdf", "-k", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


def test_robot_urdf_converts_with_sdformat(tmp_path):
    from manipulation import robot_spec as rs

    ign = shutil.which("ign")
    assert ign is not None, ("ign is missing (Debian ignition-tools + libsdformat-dev + sdformat-sdf): "
                            "run scripts/setup.sh, which installs them")
    out = subprocess.run([ign, "sdf", "-p", str(rs.description_dir() / "urdf" / "aichemist_robot.urdf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "shoulder_pan_joint" in out.stdout


def test_station_camera_sees_the_fiducial_with_the_declared_id_and_pose(tmp_path):
    """The tag texture is the right code and orientation: OpenCV reads id 10 from the render of
    reagent_rack_camera and its marker frame matches the fiducial site."""
    mujoco = pytest.importorskip("mujoco")
    cv2 = pytest.importorskip("cv2")
    from sim.world.mjcf import build_mjcf

    model = mujoco.MjModel.from_xml_string(build_mjcf(asset_dir=tmp_path))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "reagent_rack_camera")
    width, height = 1280, 960
    renderer = mujoco.Renderer(model, height, width)  # scripts/setup.sh installs headless EGL/OSMesa
    try:
        renderer.update_scene(data, camera=cam)
        gray = cv2.cvtColor(renderer.render(), cv2.COLOR_RGB2GRAY)
    finally:
        renderer.close()
    detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_APRILTAG_36h11))
    corners, ids, _ = detector.detectMarkers(gray)
    assert ids is not None and list(ids.ravel()) == [10]
    f = height / 2 / np.tan(np.radians(model.cam_fovy[cam]) / 2)
    k = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    s = 0.025
    obj = np.array([[-s, s, 0], [s, s, 0], [s, -s, 0], [-s, -s, 0]], dtype=np.float32)
    ok, rvec, tvec = cv2.solvePnP(obj, corners[0].reshape(4, 2), k, None, flags=cv2.SOLVEPNP_IPPE_SQUARE)
    assert ok
    r_world_cam = data.cam_xmat[cam].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])  # MuJoCo camera -> optical
    r_world_marker = r_world_cam @ cv2.Rodrigues(rvec)[0]
    p_world_marker = r_world_cam @ tvec.ravel() + data.cam_xpos[cam]
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "reagent_rack_fiducial")
    np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3).T @ r_world_marker, np.eye(3), atol=0.05)
    np.testing.assert_allclose(p_world_marker[:2], data.site_xpos[site][:2], atol=0.003)
