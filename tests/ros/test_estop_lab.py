"""The e-stop reaches every actuator: pressed while the robot drives with a vial job, the reactor
pumps and the HPLC runs, it leaves all of them in their safe state (the twin lab's device nodes,
each its own process, started from launch/twin.yaml)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ros_helpers import wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DEVICE_NODES = ("flow_reactor_node", "hplc_node", "manipulator_node")
PUMPING = {"priming", "heating", "equilibrating", "measuring", "collecting"}


def lifecycle_state(node: Any, target: str) -> str:
    from lifecycle_msgs.srv import GetState

    client = node.create_client(GetState, f"/{target}/get_state")
    try:
        if not client.wait_for_service(timeout_sec=1.0):
            return ""
        res = client.call(GetState.Request(), timeout_sec=5.0)
        return res.current_state.label if res is not None else ""
    finally:
        node.destroy_client(client)


def test_estop_during_motion_pumping_and_an_hplc_run_leaves_every_actuator_safe(launch, ros_probe, tmp_path):
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import JointState

    from aichemist.errors import EmergencyStop
    from aichemist_interfaces.action import MeasureSample, PickPlace, RunFlowExperiment
    from aichemist_interfaces.msg import FlowReactorState, SafetyState
    from aichemist_nodes.node_base import (ESTOP_QOS, ESTOP_TOPIC, STATE_QOS, DeviceActionClient, call_action,
                                           publish_estop)

    run_dir = tmp_path / "lab"  # fresh: the twins' state files live here
    launch("launch/twin.yaml", {"real_time_factor": "20.0", "analysis": "hplc_robot", "run_dir": str(run_dir)},
           only=["twin_node", *DEVICE_NODES, "lifecycle_manager"], run_dir=run_dir)
    states: list[FlowReactorState] = []
    odoms: list[Odometry] = []
    joints: list[JointState] = []
    ros_probe.create_subscription(FlowReactorState, "/flow_reactor/state", states.append, STATE_QOS)
    ros_probe.create_subscription(Odometry, "/manipulator/odom", odoms.append, STATE_QOS)
    ros_probe.create_subscription(JointState, "/manipulator/joint_states", joints.append, STATE_QOS)
    assert wait_for(lambda: all(lifecycle_state(ros_probe, n) == "active" for n in DEVICE_NODES), 120.0), \
        {n: lifecycle_state(ros_probe, n) for n in DEVICE_NODES}

    flow = DeviceActionClient(ros_probe, RunFlowExperiment, "/flow_reactor/run_flow_experiment")
    robot = DeviceActionClient(ros_probe, PickPlace, "/manipulator/pick_place")
    hplc = DeviceActionClient(ros_probe, MeasureSample, "/hplc/measure_sample")
    outcomes: dict[str, Any] = {}
    progress: dict[str, set] = {"flow": set(), "robot": set(), "hplc": set()}

    def run(name: str, client: Any, goal: Any) -> None:
        try:
            outcomes[name] = call_action(client, goal, timeout_s=300.0, server_timeout_s=30.0,
                                         feedback_cb=lambda fb: progress[name].add(fb.phase))
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[name] = exc

    goals = {
        "flow": (flow, RunFlowExperiment.Goal(experiment_id="estop/e0", residence_time_min=1.0, temp_c=80.0,
                                              equivalents=2.0, conc_dfnb_m=0.3, collect=True)),
        "robot": (robot, PickPlace.Goal(source_station="reagent_rack", source_slot="A1",
                                        target_station="hplc_autosampler", target_slot="A1")),
        "hplc": (hplc, MeasureSample.Goal(sample_id="estop/blank", vial="vial_5")),
    }
    workers = [threading.Thread(target=run, args=(name, *goal), daemon=True) for name, goal in goals.items()]
    for w in workers:
        w.start()
    # press the button while the pumps really deliver (read back from the pumps), the robot moves
    # and the HPLC runs
    assert wait_for(lambda: states and states[-1].phase in PUMPING and any(abs(v) > 0 for v in states[-1].pump_flow_ml_min)
                    and progress["robot"] and progress["hplc"] and all(w.is_alive() for w in workers), 120.0), \
        (progress, states[-1].phase if states else None)

    estop = ros_probe.create_publisher(SafetyState, ESTOP_TOPIC, ESTOP_QOS)
    publish_estop(ros_probe, estop, True, "test", "operator pressed the button")
    for w in workers:
        w.join(60.0)
    assert all(isinstance(outcomes.get(n), EmergencyStop) for n in goals), outcomes
    # the reactor: pumps stopped (the flows read back from the pumps) and the heater at its safe setpoint
    assert wait_for(lambda: states[-1].safe and states[-1].phase == "safe"
                    and not any(abs(v) > 1e-6 for v in states[-1].pump_flow_ml_min), 10.0), states[-1]
    assert states[-1].temp_setpoint_c <= 30.0
    # the robot: base and arm still, and they stay still
    n_odom, n_joint = len(odoms), len(joints)
    assert wait_for(lambda: len(odoms) > n_odom + 5 and len(joints) > n_joint + 5, 20.0)
    last = odoms[-1]
    assert (last.twist.twist.linear.x, last.twist.twist.linear.y, last.twist.twist.angular.z) == (0.0, 0.0, 0.0)
    assert (last.pose.pose.position.x, last.pose.pose.position.y) == (odoms[n_odom].pose.pose.position.x,
                                                                      odoms[n_odom].pose.pose.position.y)
    assert joints[-1].position == joints[n_joint].position and not any(joints[-1].velocity[:6])
    # while latched, nothing starts again
    with pytest.raises(EmergencyStop):
        call_action(flow, goals["flow"][1], timeout_s=30.0, server_timeout_s=10.0)
    with pytest.raises(EmergencyStop):
        call_action(robot, goals["robot"][1], timeout_s=30.0, server_timeout_s=10.0)
