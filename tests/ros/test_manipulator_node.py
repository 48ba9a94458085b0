"""manipulator_node as its own process (its MuJoCo robot twin inside): lifecycle, bad goals
refused without motion, NavigateToStation and PickPlace with feedback, cancel halts the arm,
the e-stop halts everything and refuses new goals until cleared; the twin's world survives a
kill -9 of the node (twin_state_path), read back through /manipulator/get_inventory."""

from __future__ import annotations

import pathlib
import threading
import time

import pytest
import yaml
from ros_helpers import change_state, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _setup(tmp_path: pathlib.Path, node: dict | None = None, **params) -> pathlib.Path:
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    (params_dir / "manipulator_node.yaml").write_text(yaml.safe_dump(
        {"manipulator_node": {"ros__parameters": {"twin_real_time_factor": 40.0, "twin_seed": 3, **params}}}))
    manifest = {"name": "manipulator_test", "params_dir": str(params_dir),
                "nodes": [{"name": "manipulator_node", "executable": "manipulator_node",
                           "params": "manipulator_node.yaml", "lifecycle": True, **(node or {})}]}
    path = tmp_path / "manipulator_test.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def _send(client, goal, feedback=None, cancel_after=None):
    """Send a goal; optionally cancel it once ``cancel_after(feedback_list)`` is true."""
    accepted = threading.Event()
    fut = client.send_goal_async(goal, feedback_callback=(lambda m: feedback.append(m.feedback))
                                 if feedback is not None else None)
    fut.add_done_callback(lambda _f: accepted.set())
    assert accepted.wait(30.0)
    handle = fut.result()
    assert handle.accepted
    done = threading.Event()
    res_fut = handle.get_result_async()
    res_fut.add_done_callback(lambda _f: done.set())
    cancelled = False
    deadline = time.monotonic() + 300.0
    while not done.wait(0.02):
        assert time.monotonic() < deadline, "no result"
        if cancel_after is not None and not cancelled and cancel_after(feedback):
            handle.cancel_goal_async()
            cancelled = True
    return res_fut.result().result


def test_manipulator_node_actions_cancel_and_estop(launch, ros_probe, tmp_path):
    from lifecycle_msgs.msg import Transition
    from nav_msgs.msg import Odometry
    from rclpy.action import ActionClient
    from sensor_msgs.msg import JointState

    from aichemist.errors import ResultCode
    from aichemist_interfaces.action import NavigateToStation, PickPlace
    from aichemist_interfaces.msg import SafetyState
    from aichemist_nodes.node_base import ESTOP_QOS, ESTOP_TOPIC, STATE_QOS, publish_estop

    launch(_setup(tmp_path))
    joints: list[JointState] = []
    odoms: list[Odometry] = []
    ros_probe.create_subscription(JointState, "/manipulator/joint_states", joints.append, STATE_QOS)
    ros_probe.create_subscription(Odometry, "/manipulator/odom", odoms.append, STATE_QOS)
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_CONFIGURE)
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_ACTIVATE)
    assert wait_for(lambda: len(joints) > 3 and len(odoms) > 3, 15.0)
    assert list(joints[-1].name)[:6] == ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
                                         "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]

    nav = ActionClient(ros_probe, NavigateToStation, "/manipulator/navigate_to_station")
    pick = ActionClient(ros_probe, PickPlace, "/manipulator/pick_place")
    assert nav.wait_for_server(timeout_sec=30.0) and pick.wait_for_server(timeout_sec=30.0)

    # bad goals: refused with a clear reason, nothing moves
    before = (odoms[-1].pose.pose.position.x, odoms[-1].pose.pose.position.y, tuple(joints[-1].position))
    res = _send(nav, NavigateToStation.Goal(station="fume_cupboard_9"))
    assert res.code == ResultCode.NOT_FOUND and res.error_type == "UnknownStation"
    assert "known stations" in res.message
    res = _send(pick, PickPlace.Goal(source_station="reagent_rack", source_slot="B4",
                                     target_station="hplc_autosampler", target_slot="A1"))
    assert res.code == ResultCode.CONFLICT and res.error_type == "SlotEmpty"
    res = _send(pick, PickPlace.Goal(source_station="reagent_rack", source_slot="A1",
                                     target_station="reagent_rack", target_slot="A2"))
    assert res.code == ResultCode.CONFLICT and res.error_type == "SlotOccupied"
    after = (odoms[-1].pose.pose.position.x, odoms[-1].pose.pose.position.y, tuple(joints[-1].position))
    assert after == before

    # navigate with feedback
    feedback: list = []
    res = _send(nav, NavigateToStation.Goal(station="reagent_rack"), feedback)
    assert res.code == 0, res.message
    # feedback and result travel on different topics (a feedback sent just before the result can
    # be dropped by the client): the pre-dock fix is reported well before the end
    assert wait_for(lambda: {"navigating", "localising"} <= {f.phase for f in feedback}, 20.0), \
        [f.phase for f in feedback]
    assert res.base_pose.y == pytest.approx(1.08, abs=0.03) and res.duration_s > 3.0

    # a pick-and-place, cancelled while the arm descends: the arm halts
    feedback = []
    res = _send(pick, PickPlace.Goal(source_station="reagent_rack", source_slot="A1",
                                     target_station="hplc_autosampler", target_slot="A1"), feedback,
                cancel_after=lambda fb: any(f.phase == "descending" for f in fb))
    assert res.code == ResultCode.CANCELLED, res.message
    # the reference sample is taken past the subscription's queue (STATE_QOS keeps 5), which may
    # still hold samples published before the halt
    n = len(joints) + STATE_QOS.depth
    assert wait_for(lambda: len(joints) > n + 5, 20.0)
    assert joints[-1].position == joints[n].position and not any(joints[-1].velocity[:6])

    # e-stop during a drive: halted, result says so; new goals refused while latched
    estop_pub = ros_probe.create_publisher(SafetyState, ESTOP_TOPIC, ESTOP_QOS)
    feedback = []
    done: dict = {}

    def drive() -> None:
        done["result"] = _send(nav, NavigateToStation.Goal(station="hplc_autosampler"), feedback)

    worker = threading.Thread(target=drive)
    worker.start()
    assert wait_for(lambda: any(f.phase == "navigating" and f.progress > 0.0 for f in feedback), 60.0)
    publish_estop(ros_probe, estop_pub, True, "test", "operator pressed the button")
    worker.join(60.0)
    assert done["result"].code == ResultCode.EMERGENCY_STOP, done["result"].message
    n = len(odoms) + STATE_QOS.depth   # past the queue, as above
    assert wait_for(lambda: len(odoms) > n + 5, 20.0)
    last = odoms[-1]
    assert last.twist.twist.linear.x == 0.0 and last.twist.twist.linear.y == 0.0 and last.twist.twist.angular.z == 0.0
    assert (last.pose.pose.position.x, last.pose.pose.position.y) == (odoms[n].pose.pose.position.x,
                                                                      odoms[n].pose.pose.position.y)
    res = _send(nav, NavigateToStation.Goal(station="reagent_rack"))
    assert res.code == ResultCode.EMERGENCY_STOP and "e-stop" in res.message
    publish_estop(ros_probe, estop_pub, False, "test", "cleared")
    # the clear travels on its own topic: goals are accepted again once the node has seen it
    results = []
    assert wait_for(lambda: results.append(_send(nav, NavigateToStation.Goal(station="reagent_rack")))
                     or results[-1].code != ResultCode.EMERGENCY_STOP, 20.0)
    assert results[-1].code == 0, results[-1].message


def test_relocalisation_through_the_perception_service(launch, ros_probe, tmp_path):
    """localiser: perception_service. A refusal from /perception/locate_station ends the goal
    with PERCEPTION_FAILED; a fix (here computed by the test from the robot's own odometry)
    docks it."""
    import math

    import numpy as np
    from lifecycle_msgs.msg import Transition
    from nav_msgs.msg import Odometry
    from rclpy.action import ActionClient

    from aichemist.errors import ResultCode
    from aichemist_interfaces.action import NavigateToStation
    from aichemist_interfaces.srv import LocateStation
    from aichemist_nodes.node_base import STATE_QOS
    from manipulation.layout import Pose2D, load_layout

    from rclpy.callback_groups import ReentrantCallbackGroup

    layout = load_layout()
    odoms: list[Odometry] = []
    group = ReentrantCallbackGroup()
    ros_probe.create_subscription(Odometry, "/manipulator/odom", odoms.append, STATE_QOS, callback_group=group)
    mode = {"answer": "refuse", "calls": 0}

    def locate(request, response):
        mode["calls"] += 1
        # the robot stands still while it waits for the answer: wait for odometry published after the call
        # (past the subscription's queue, which may hold samples from before the robot stopped)
        n = len(odoms) + STATE_QOS.depth
        if not wait_for(lambda: len(odoms) >= n + 1, 4.0):   # within the node's locate_timeout_s
            mode["stale"] = True
        if mode["answer"] == "refuse":
            response.code, response.error_type = int(ResultCode.PERCEPTION_FAILED), "MarkerNotFound"
            response.message = f"no tag of '{request.station}' in view"
            return response
        o = odoms[-1].pose.pose
        base = Pose2D(x=o.position.x, y=o.position.y, yaw=2 * math.atan2(o.orientation.z, o.orientation.w))
        t = np.linalg.inv(base.matrix()) @ layout.station(request.station).matrix()
        yaw = math.atan2(t[1, 0], t[0, 0])
        pose = response.station_pose
        pose.header.frame_id = "base_footprint"
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in t[:3, 3])
        pose.pose.orientation.z, pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        response.code, response.distance_m = 0, float(np.linalg.norm(t[:2, 3]))
        return response

    ros_probe.create_service(LocateStation, "/perception/locate_station", locate, callback_group=group)
    launch(_setup(tmp_path, localiser="perception_service"))
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_CONFIGURE)
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_ACTIVATE)
    assert wait_for(lambda: len(odoms) > 3, 15.0)
    nav = ActionClient(ros_probe, NavigateToStation, "/manipulator/navigate_to_station")
    assert nav.wait_for_server(timeout_sec=30.0)

    res = _send(nav, NavigateToStation.Goal(station="hplc_autosampler"))
    assert res.code == ResultCode.PERCEPTION_FAILED and "no tag" in res.message
    assert mode["calls"] == 1
    mode["answer"] = "fix"
    res = _send(nav, NavigateToStation.Goal(station="hplc_autosampler"))
    assert res.code == 0, res.message
    assert not mode.get("stale"), "the test's locate handler had no fresh odometry to compute its fix from"
    assert mode["calls"] >= 2   # before the final leg and at the dock
    dock = layout.station("hplc_autosampler").dock_pose()
    assert math.hypot(res.base_pose.x - dock.x, res.base_pose.y - dock.y) < 0.05


def test_robot_twin_keeps_pace_with_the_lab_clock(launch, ros_probe, tmp_path):
    """pace_with: ros_clock + use_sim_time: the robot moves on twin_node's /clock (10x real time):
    it never runs ahead of the /clock time that passed, and joint states carry that time."""
    from lifecycle_msgs.msg import Transition
    from rclpy.action import ActionClient
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock as ClockMsg
    from sensor_msgs.msg import JointState

    from aichemist_interfaces.action import NavigateToStation
    from aichemist_nodes.node_base import STATE_QOS

    path = _setup(tmp_path, pace_with="ros_clock")
    params_dir = tmp_path / "params"
    (params_dir / "twin_node.yaml").write_text(yaml.safe_dump({"twin_node": {"ros__parameters": {
        "twin_dir": str(tmp_path / "twin"), "real_time_factor": 10.0, "clock_rate_hz": 100.0, "subsystems": "[]"}}}))
    manifest = yaml.safe_load(path.read_text())
    manifest["nodes"][0]["use_sim_time"] = True
    manifest["nodes"].insert(0, {"name": "twin_node", "executable": "twin_node", "params": "twin_node.yaml"})
    path.write_text(yaml.safe_dump(manifest))

    clock: list[float] = []
    joints: list[JointState] = []
    # depth 1: the probe's executor takes one sample per subscription per pass, so a deeper queue
    # hands it a backlog of old clock samples and reads the lab's clock late (a CI run read it
    # 0.7 s of simulated time late after the result arrived)
    ros_probe.create_subscription(ClockMsg, "/clock", lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9),
                                  QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    ros_probe.create_subscription(JointState, "/manipulator/joint_states", joints.append, STATE_QOS)
    launch(path)
    assert wait_for(lambda: len(clock) > 10, 30.0), "no /clock from twin_node"
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_CONFIGURE)
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_ACTIVATE)
    nav = ActionClient(ros_probe, NavigateToStation, "/manipulator/navigate_to_station")
    assert nav.wait_for_server(timeout_sec=30.0)
    t0 = clock[-1]
    res = _send(nav, NavigateToStation.Goal(station="reagent_rack"))
    seen = len(clock)
    assert wait_for(lambda: len(clock) > seen, 10.0), "no /clock after the result"
    t1 = clock[seen]   # the first sample taken after the result: the lab's clock when it came
    assert res.code == 0, res.message
    assert res.duration_s > 3.0
    # the robot never runs ahead of the lab's clock (it may lag it when the host is busy)
    assert res.duration_s <= (t1 - t0) + 0.5
    assert t1 - t0 < 3.0 * res.duration_s + 5.0
    assert wait_for(lambda: joints and abs(joints[-1].header.stamp.sec + joints[-1].header.stamp.nanosec * 1e-9
                                          - clock[-1]) < 2.0, 10.0)


def _inventory(client, timeout_s: float = 5.0):
    """One /manipulator/get_inventory answer, or None when none came within ``timeout_s``."""
    from aichemist_interfaces.srv import GetInventory

    done = threading.Event()
    future = client.call_async(GetInventory.Request())
    future.add_done_callback(lambda _f: done.set())
    return future.result() if done.wait(timeout_s) else None


def test_the_twin_world_survives_a_kill_9_of_the_node(launch, ros_probe, tmp_path):
    """twin_state_path: a vial moved by PickPlace is still where it was put after the node's process
    is SIGKILLed, respawned by the launcher, configured and activated again; the inventory service
    answers with a typed error before configure and answers while inactive."""
    import math
    import os
    import signal

    from lifecycle_msgs.msg import Transition
    from nav_msgs.msg import Odometry
    from rclpy.action import ActionClient

    from aichemist.errors import ResultCode
    from aichemist_interfaces.action import PickPlace
    from aichemist_interfaces.srv import GetInventory
    from aichemist_nodes.node_base import STATE_QOS
    from manipulation.layout import load_layout

    layout = load_layout()
    state_path = tmp_path / "robot_twin_state.json"
    launcher = launch(_setup(tmp_path, node={"respawn": True, "respawn_delay_s": 0.2},
                             twin_state_path=str(state_path)))
    odoms: list[Odometry] = []
    ros_probe.create_subscription(Odometry, "/manipulator/odom", odoms.append, STATE_QOS)
    inventory = ros_probe.create_client(GetInventory, "/manipulator/get_inventory")
    assert inventory.wait_for_service(timeout_sec=30.0)
    res = _inventory(inventory, 10.0)
    assert res is not None and res.code == ResultCode.CONFLICT and "not configured" in res.message

    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_CONFIGURE)
    res = _inventory(inventory)  # inactive: answered (the planner asks right after starting)
    assert res.code == 0 and dict(zip(res.slots, res.vials)) == layout.initial_vials and res.held_vial == ""
    assert state_path.is_file()  # written at configure
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_ACTIVATE)
    pick = ActionClient(ros_probe, PickPlace, "/manipulator/pick_place")
    assert pick.wait_for_server(timeout_sec=30.0)
    res = _send(pick, PickPlace.Goal(source_station="reagent_rack", source_slot="A2",
                                     target_station="hplc_autosampler", target_slot="B3"))
    assert res.code == 0 and res.vial_id == "vial_r02", res.message
    expected = {k: v for k, v in layout.initial_vials.items() if k != "reagent_rack/A2"}
    expected["hplc_autosampler/B3"] = "vial_r02"
    res = _inventory(inventory)
    assert res.code == 0 and dict(zip(res.slots, res.vials)) == expected

    old_pid = launcher.pid("manipulator_node")
    os.kill(old_pid, signal.SIGKILL)  # kill -9: no clean shutdown, nothing saved on the way out
    assert wait_for(lambda: launcher.pid("manipulator_node") not in (None, old_pid), 30.0), "not respawned"
    # the new process answers (unconfigured) once the probe has discovered it
    answers: list = []
    assert wait_for(lambda: answers.append(_inventory(inventory, 1.0)) or
                    (answers[-1] is not None and answers[-1].code == ResultCode.CONFLICT), 60.0)
    odoms.clear()
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_CONFIGURE)
    res = _inventory(inventory)
    assert res.code == 0, res.message
    assert dict(zip(res.slots, res.vials)) == expected and res.held_vial == "" and res.held_from == ""
    assert change_state(ros_probe, "manipulator_node", Transition.TRANSITION_ACTIVATE)
    # the robot restarts where the transfer left it (at the autosampler), not at the charging dock
    assert wait_for(lambda: len(odoms) > 2, 15.0)
    dock = layout.station("hplc_autosampler").dock_pose()
    p = odoms[-1].pose.pose.position
    assert math.hypot(p.x - dock.x, p.y - dock.y) < 0.05
    # and it works on from there: the vial goes back
    res = _send(pick, PickPlace.Goal(source_station="hplc_autosampler", source_slot="B3",
                                     target_station="reagent_rack", target_slot="A2"))
    assert res.code == 0 and res.vial_id == "vial_r02", res.message
    res = _inventory(inventory)
    assert dict(zip(res.slots, res.vials)) == layout.initial_vials
