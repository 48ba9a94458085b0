"""perception_node on the lab world of sim/world: stations and trays from the lab description.

Both nodes run with the twin's params files (config/twin/sim_camera_node.yaml,
config/twin/perception_node.yaml). sim_camera_node renders the lab (scene: lab) with its fixed
station cameras and publishes their pose in the world frame; perception_node (lab_layout:
default) locates each station from its tag
and must give the station's pose of the lab description; the HPLC tray, seen from above, holds
no vial at the start (the lab's initial vials are in the reagent rack and the reactor collection).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.ros

STATIONS = ("reagent_rack", "reactor_collection", "hplc_autosampler")


@pytest.fixture(scope="module")
def lab_nodes(tmp_path_factory):
    run = tmp_path_factory.mktemp("perception_lab")
    config = pathlib.Path(__file__).resolve().parents[2] / "config" / "twin"  # the twin's shipped params
    perception_params = run / "perception_node.yaml"  # with ${run_dir} as the launcher substitutes it
    perception_params.write_text((config / "perception_node.yaml").read_text().replace("${run_dir}", str(run)))
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONUNBUFFERED="1")
    logs = [open(run / f"{n}.log", "w") for n in ("cam", "perception")]
    procs = [subprocess.Popen([sys.executable, "-m", "aichemist_nodes.sim_camera_node", "--ros-args",
                               "--params-file", str(config / "sim_camera_node.yaml")], env=env, stdout=logs[0],
                              stderr=subprocess.STDOUT),
             subprocess.Popen([sys.executable, "-m", "aichemist_nodes.perception_node", "--ros-args",
                               "--params-file", str(perception_params)], env=env, stdout=logs[1],
                              stderr=subprocess.STDOUT)]
    yield run
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    for f in logs:
        f.close()


def _call(node, srv_type, name, request, timeout_s=20.0):
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=15.0), f"{name} not available"
    future = client.call_async(request)
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    assert done.wait(timeout_s), f"{name} did not answer in {timeout_s} s"
    node.destroy_client(client)
    return future.result()


def test_stations_located_in_the_lab(lab_nodes, ros_probe):
    from aichemist_interfaces.srv import LocateStation

    from manipulation.layout import load_layout
    from perception.geometry import make_transform, pose_error, quat_to_matrix

    layout = load_layout()
    for station in STATIONS:
        res = _call(ros_probe, LocateStation, "/perception/locate_station",
                    LocateStation.Request(station=station, camera=f"{station}_camera", timeout_s=10.0))
        assert res.code == 0, (station, res.error_type, res.message)
        p, q = res.station_pose.pose.position, res.station_pose.pose.orientation
        est = make_transform(quat_to_matrix([q.x, q.y, q.z, q.w]), [p.x, p.y, p.z])
        err_m, err_deg = pose_error(est, layout.station(station).matrix())
        assert err_m < 0.005 and err_deg < 1.0, (station, err_m, err_deg)
        assert res.station_pose.header.frame_id == "map"


def test_initial_vials_seen_from_above(lab_nodes, ros_probe):
    from aichemist_interfaces.srv import InspectRack

    from manipulation.layout import load_layout

    layout = load_layout()
    for station in STATIONS:
        res = _call(ros_probe, InspectRack, "/perception/inspect_rack",
                    InspectRack.Request(rack=station, camera=f"{station}_camera", timeout_s=10.0))
        assert res.code == 0, (station, res.error_type, res.message)
        occupied = {s.name for s in res.inspection.slots if s.occupied}
        expected = {key for key in layout.initial_vials if key.startswith(station + "/")}
        assert occupied == expected, (station, occupied, expected)
        assert all(s.cap_present for s in res.inspection.slots if s.occupied)  # the lab's vials are capped


def test_wrist_camera_not_running_is_a_clear_failure(lab_nodes, ros_probe):
    from aichemist_interfaces.srv import LocateStation

    # what the manipulator's perception_service localiser sends: a station, no camera name
    res = _call(ros_probe, LocateStation, "/perception/locate_station",
                LocateStation.Request(station="hplc_autosampler", timeout_s=0.5))
    assert (res.code, res.error_type) == (31, "CameraUnavailable")
    # the twin's wrist camera is triggered: nobody serves its trigger here (no manipulator_node)
    assert "wrist_camera" in res.message and "/wrist_camera/trigger is not available" in res.message
