"""The docking loop closed through the perception node, in the twin.

manipulator_node (its MuJoCo robot twin inside) renders the robot's wrist camera when
perception_node triggers it (``/wrist_camera/trigger``, as in the twin lab) and re-localises with ``localiser: perception_service``; perception_node,
a process of its own with the twin's params (config/twin/perception_node.yaml), answers
/perception/locate_station from those images. The robot points the wrist camera at the station's
tag (``wrist_camera_look_q``) before each fix: at the pre-dock pose and at the dock.

The perception node's station table gives ``reagent_rack`` a tag id that is not printed on the
bench (7 instead of 10): the robot reaches the pre-dock pose, sees tag 10 but not 7, and the goal
ends PERCEPTION_FAILED / MarkerNotFound with the base and arm halted; it does not drive the final
leg blind. An unknown station is refused before anything moves.
"""

from __future__ import annotations

import json
import math
import pathlib
import threading

import pytest
import yaml
from ros_helpers import change_state, send_goal, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = pathlib.Path(__file__).resolve().parents[2]
WRONG_TAG_ID = 7  # reagent_rack carries tag 10


def _setup(tmp_path: pathlib.Path) -> pathlib.Path:
    from aichemist_nodes.perception_node import config_from_layout

    params_dir = tmp_path / "params"
    params_dir.mkdir()
    twin = REPO / "config" / "twin"
    manip = yaml.safe_load((twin / "manipulator_node.yaml").read_text())["manipulator_node"]["ros__parameters"]
    manip.update(localiser="perception_service", pace_with="wall", twin_real_time_factor=40.0, twin_seed=3,
                 twin_state_path=str(tmp_path / "robot_twin_state.json"),
                 wrist_camera_rate_hz=0.0, wrist_camera_trigger=True, wrist_camera_width=640,
                 wrist_camera_height=480)
    (params_dir / "manipulator_node.yaml").write_text(yaml.safe_dump({"manipulator_node": {"ros__parameters": manip}}))

    perception = yaml.safe_load((twin / "perception_node.yaml").read_text())["perception_node"]["ros__parameters"]
    cameras = json.loads(perception["cameras"])
    assert perception["default_camera"] == "wrist_camera"
    stations, _trays = config_from_layout(perception["lab_layout"])
    stations = {name: st.model_dump() for name, st in stations.items()}
    assert stations["reagent_rack"]["marker_id"] == 10
    stations["reagent_rack"]["marker_id"] = WRONG_TAG_ID
    perception.update(lab_layout="", stations=json.dumps(stations), racks="{}",
                      cameras=json.dumps({"wrist_camera": cameras["wrist_camera"]}))
    (params_dir / "perception_node.yaml").write_text(yaml.safe_dump({"perception_node": {"ros__parameters": perception}}))

    manifest = {"name": "manipulator_perception_test", "params_dir": str(params_dir), "args": {"run_dir": str(tmp_path)},
                "nodes": [{"name": "perception_node", "executable": "perception_node",
                           "params": "perception_node.yaml"},
                          {"name": "manipulator_node", "executable": "manipulator_node",
                           "params": "manipulator_node.yaml", "lifecycle": True}]}
    path = tmp_path / "manipulator_perception_test.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_docking_relocalises_through_the_perception_node(launch, ros_probe, tmp_path):
    from lifecycle_msgs.msg import Transition
    from nav_msgs.msg import Odometry
    from rclpy.action import ActionClient
    from sensor_msgs.msg import CameraInfo, JointState
    from std_srvs.srv import Trigger

    from aichemist.errors import ResultCode
    from aichemist_interfaces.action import NavigateToStation
    from aichemist_interfaces.msg import FiducialDetections
    from aichemist_nodes.node_base import STATE_QOS
    from manipulation.layout import load_layout

    layout = load_layout()
    launch(_setup(tmp_path))
    odoms: list[Odometry] = []
    joints: list[JointState] = []
    detections: list[FiducialDetections] = []
    infos: list[CameraInfo] = []
    lock = threading.Lock()

    def on_detections(msg: FiducialDetections) -> None:
        with lock:
            detections.append(msg)

    ros_probe.create_subscription(Odometry, "/manipulator/odom", odoms.append, STATE_QOS)
    ros_probe.create_subscription(JointState, "/manipulator/joint_states", joints.append, STATE_QOS)
    ros_probe.create_subscription(FiducialDetections, "/perception/detections", on_detections, 10)
    ros_probe.create_subscription(CameraInfo, "/wrist_camera/camera_info", infos.append, 2)
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_CONFIGURE)
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_ACTIVATE)
    assert wait_for(lambda: len(odoms) > 3, 20.0), "no odometry"
    # the wrist camera renders only when triggered: one request, one frame
    trigger = ros_probe.create_client(Trigger, "/wrist_camera/trigger")
    assert trigger.wait_for_service(timeout_sec=10.0)
    assert not infos
    done = threading.Event()
    future = trigger.call_async(Trigger.Request())
    future.add_done_callback(lambda _f: done.set())
    assert done.wait(10.0) and future.result().success, future.result()
    assert wait_for(lambda: len(infos) == 1, 5.0), "the triggered frame did not arrive"
    assert (infos[-1].width, infos[-1].height) == (640, 480)
    nav = ActionClient(ros_probe, NavigateToStation, "/manipulator/navigate_to_station")
    assert nav.wait_for_server(timeout_sec=30.0)

    def pose() -> tuple:
        o = odoms[-1].pose.pose
        return o.position.x, o.position.y, o.orientation.z, o.orientation.w, tuple(joints[-1].position)

    # an unknown station: refused before anything moves, the perception node is not asked
    before = pose()
    res = send_goal(nav, NavigateToStation.Goal(station="fume_cupboard_9"))
    assert (res.code, res.error_type) == (ResultCode.NOT_FOUND, "UnknownStation"), res.message
    n = len(odoms)
    assert wait_for(lambda: len(odoms) > n + 3, 10.0)
    assert pose() == before and not detections

    # the station's tag is not the one perception looks for: a typed failure at the pre-dock
    # pose, base and arm halted, no blind final leg into the bench
    res = send_goal(nav, NavigateToStation.Goal(station="reagent_rack"))
    assert (res.code, res.error_type) == (ResultCode.PERCEPTION_FAILED, "MarkerNotFound"), res.message
    assert f"{WRONG_TAG_ID}" in res.message and "10" in res.message, res.message  # names the id sought and those seen
    n = len(odoms)
    assert wait_for(lambda: len(odoms) > n + 5, 10.0)
    halted = pose()
    assert wait_for(lambda: len(odoms) > n + 10, 10.0)
    assert pose() == halted
    twist = odoms[-1].twist.twist
    assert (twist.linear.x, twist.linear.y, twist.angular.z) == (0.0, 0.0, 0.0)
    dock = layout.station("reagent_rack").dock_pose()
    assert math.hypot(halted[0] - dock.x, halted[1] - dock.y) > 0.25  # stopped before the final leg

    def seen() -> set:
        with lock:
            return {d.marker_id for m in detections for d in m.detections if m.camera == "wrist_camera"}

    # the detections come on a topic of their own: not ordered with the action's result
    assert wait_for(lambda: 10 in seen(), 5.0), seen()
    assert WRONG_TAG_ID not in seen(), seen()

    # a station whose tag is in view: docked on fixes served by the perception node
    with lock:
        detections.clear()
    feedback: list = []
    res = send_goal(nav, NavigateToStation.Goal(station="hplc_autosampler"), feedback)
    assert res.code == 0, (res.error_type, res.message)
    dock = layout.station("hplc_autosampler").dock_pose()
    assert math.hypot(res.base_pose.x - dock.x, res.base_pose.y - dock.y) < 0.03
    assert abs(math.remainder(res.base_pose.theta - dock.yaw, 2 * math.pi)) < 0.05
    # the pre-dock fix and the dock fix each published the wrist camera's detections of tag 12
    assert wait_for(lambda: sum(1 for m in list(detections) if m.camera == "wrist_camera" and any(
        d.marker_id == 12 and d.trusted for d in m.detections)) >= 2, 10.0), detections
    assert wait_for(lambda: {"pointing the wrist camera", "localising"} <= {f.phase for f in feedback}, 10.0), \
        [f.phase for f in feedback]
