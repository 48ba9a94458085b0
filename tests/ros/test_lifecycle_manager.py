"""lifecycle_manager as its own process, against a node whose change_state answers never arrive
(as when a server drops the answer to a client it has not matched yet): the manager reads the
node's state and goes on, instead of waiting out the whole transition timeout."""

from __future__ import annotations

import threading

import pytest
import yaml
from ros_helpers import wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_a_transition_whose_answer_is_lost_counts_when_the_node_reached_its_state(launch, ros_probe, tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.callback_groups import ReentrantCallbackGroup

    state = {"label": "unconfigured"}
    transitions: list[int] = []
    release = threading.Event()
    reaches = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active"}

    def change_state(request, response):  # noqa: ANN001, ANN202
        transitions.append(request.transition.id)
        state["label"] = reaches[request.transition.id]
        release.wait(120.0)   # the answer never comes while the manager cares
        response.success = True
        return response

    def get_state(_request, response):  # noqa: ANN001, ANN202
        response.current_state.label = state["label"]
        return response

    group = ReentrantCallbackGroup()
    ros_probe.create_service(ChangeState, "/mute_node/change_state", change_state, callback_group=group)
    ros_probe.create_service(GetState, "/mute_node/get_state", get_state, callback_group=group)

    params_dir = tmp_path / "params"
    params_dir.mkdir()
    # a whole timeout per transition would be 2 x 60 s
    (params_dir / "lifecycle_manager.yaml").write_text(yaml.safe_dump({"lifecycle_manager": {"ros__parameters": {
        "node_names": ["mute_node"], "transition_timeout_s": 60.0, "watch_period_s": 0.0}}}))
    manifest = tmp_path / "manager.yaml"
    manifest.write_text(yaml.safe_dump({"name": "manager_test", "params_dir": str(params_dir), "nodes": [
        {"name": "lifecycle_manager", "executable": "lifecycle_manager", "params": "lifecycle_manager.yaml"}]}))
    try:
        launcher = launch(manifest)
        assert wait_for(lambda: state["label"] == "active", 40.0), \
            f"the manager did not go on to activate (transitions asked: {transitions})"
        assert transitions == [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE]  # each asked once
        assert wait_for(lambda: any("activate ok (its answer was lost" in line
                                    for line in launcher.output("lifecycle_manager")), 10.0)
    finally:
        release.set()
