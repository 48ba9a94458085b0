"""twin_node killed with SIGKILL in the middle of an experiment: the launcher respawns it (respawn:
true), /clock resumes at or after its last value (the state file), the experiment that was running
ends failed with a clear reason (the serial link lost), flow_reactor_node leaves 'active' and the
lifecycle manager brings it back, and the next experiment runs to the end."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import threading
import time

import pytest
import yaml
from ros_helpers import wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]
REPO = pathlib.Path(__file__).resolve().parents[2]
TWIN_REAL_TIME_FACTOR = 50.0


def _write_setup(tmp_path: pathlib.Path) -> pathlib.Path:
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    twin = yaml.safe_load((REPO / "config/twin/twin_node.yaml").read_text())
    tp = twin["twin_node"]["ros__parameters"]
    assert tp["state_path"] == "${twin_dir}/twin_state.json"  # what the lab runs with
    tp["real_time_factor"] = TWIN_REAL_TIME_FACTOR
    tp["robot_carries_vials"] = False  # no robot here
    subsystems = json.loads(tp["subsystems"])
    reactor = next(s for s in subsystems if s["name"] == "flow_reactor")
    reactor["params"]["emulator_kwargs"] = {"thermostat": {"tau_s": 10.0}}
    tp["subsystems"] = json.dumps(subsystems)
    (params_dir / "twin_node.yaml").write_text(yaml.safe_dump(twin))
    flow = yaml.safe_load((REPO / "config/twin/flow_reactor.yaml").read_text())
    flow["flow_reactor_node"]["ros__parameters"]["operation"] = {"flush_volumes": 0.5}
    (params_dir / "flow_reactor.yaml").write_text(yaml.safe_dump(flow))
    (params_dir / "lifecycle_manager.yaml").write_text(yaml.safe_dump({"lifecycle_manager": {"ros__parameters": {
        "node_names": ["flow_reactor_node"], "autostart": True, "service_timeout_s": 30.0,
        "transition_timeout_s": 30.0, "watch_period_s": 1.0}}}))
    manifest = {
        "name": "twin_restart_test",
        "params_dir": str(params_dir),
        "args": {"twin_dir": str(tmp_path / "twin")},
        "nodes": [
            {"name": "twin_node", "executable": "twin_node", "params": "twin_node.yaml", "respawn": True,
             "respawn_delay_s": 0.5},
            {"name": "flow_reactor_node", "executable": "flow_reactor_node", "params": "flow_reactor.yaml",
             "lifecycle": True, "use_sim_time": True},
            {"name": "lifecycle_manager", "executable": "lifecycle_manager", "params": "lifecycle_manager.yaml"},
        ],
    }
    path = tmp_path / "twin_restart_test.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def _lifecycle_state(node, target: str) -> str:
    from lifecycle_msgs.srv import GetState

    client = node.create_client(GetState, f"/{target}/get_state")
    try:
        if not client.wait_for_service(timeout_sec=5.0):
            return "unreachable"
        res = client.call(GetState.Request(), timeout_sec=5.0)
        return res.current_state.label if res is not None else "no answer"
    finally:
        node.destroy_client(client)


def test_twin_killed_mid_experiment_comes_back_and_the_reactor_with_it(launch, ros_probe, tmp_path):
    from rclpy.action import ActionClient
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    from aichemist.errors import CommunicationTimeout
    from aichemist_interfaces.action import RunFlowExperiment
    from aichemist_interfaces.msg import FlowReactorState
    from aichemist_nodes.node_base import STATE_QOS, call_action

    launcher = launch(_write_setup(tmp_path))
    clock: list[tuple[float, float]] = []  # (wall, sim)
    ros_probe.create_subscription(Clock, "/clock", lambda m: clock.append(
        (time.monotonic(), m.clock.sec + m.clock.nanosec * 1e-9)),
        QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
    states: list[FlowReactorState] = []
    ros_probe.create_subscription(FlowReactorState, "/flow_reactor/state", states.append, STATE_QOS)
    # the lifecycle manager brings the reactor up by itself
    assert wait_for(lambda: states and states[-1].lifecycle_state == "active", 90.0), "reactor never active"
    # the probe must see /clock before the kill, or there is no "last value" to compare with
    assert wait_for(lambda: clock, 30.0), "the probe never received /clock"

    client = ActionClient(ros_probe, RunFlowExperiment, "/flow_reactor/run_flow_experiment")
    goal = RunFlowExperiment.Goal(experiment_id="before-kill", residence_time_min=0.5, temp_c=30.0,
                                  equivalents=2.0, conc_dfnb_m=0.3, collect=True)
    phases: list[str] = []
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call_action(client, goal, timeout_s=240.0,
                                            feedback_cb=lambda fb: phases.append(fb.phase))
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    assert wait_for(lambda: "heating" in phases or "equilibrating" in phases, 120.0), phases
    old_pid = launcher.pid("twin_node")
    state_file = tmp_path / "twin" / "twin_state.json"
    assert state_file.exists()
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    last_before = max(s for w, s in clock if w <= killed)

    # the running experiment ends failed at once, saying why (not after the twin is back, not never)
    runner.join(timeout=30.0)
    assert not runner.is_alive(), "the experiment hung after the twin died"
    assert isinstance(outcome.get("error"), CommunicationTimeout), outcome
    assert "serial link lost" in str(outcome["error"]), outcome["error"]
    assert outcome["at"] - killed < 15.0
    print(f"the running experiment ended {outcome['at'] - killed:.1f} s after the kill: {outcome['error']}")

    # respawned; /clock resumes at or after its last value before the kill
    assert wait_for(lambda: launcher.pid("twin_node") not in (None, old_pid), 30.0), "twin_node not respawned"
    assert wait_for(lambda: any(w > killed + 0.5 and s > last_before for w, s in clock), 60.0), "no /clock"
    after = [s for w, s in clock if w > killed + 0.2]
    assert after and min(after) >= last_before, (last_before, after[:5])
    assert wait_for(lambda: any("restarted: resuming at t =" in line for line in launcher.output("twin_node")), 10.0)

    # the reactor left 'active' (safe state, ports closed) and the lifecycle manager brought it back
    assert wait_for(lambda: any("node now 'unconfigured'" in line for line in launcher.output("flow_reactor_node")),
                    15.0)
    assert wait_for(lambda: any("not active: flow_reactor_node" in line
                                for line in launcher.output("lifecycle_manager")), 15.0)
    assert wait_for(lambda: _lifecycle_state(ros_probe, "flow_reactor_node") == "active", 60.0)
    print(f"flow_reactor_node active again {time.monotonic() - killed:.1f} s after the kill")
    assert time.monotonic() - killed < 60.0

    # and runs a short experiment to the end on the restarted twin
    goal.experiment_id = "after-restart"
    result = call_action(client, goal, timeout_s=240.0)
    assert result.code == 0, result.message
    assert result.yield_fraction > 0.3
