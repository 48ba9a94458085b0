"""Helpers shared by the ros and twin test tiers (importable from any test: pytest puts tests/
on the path)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


def change_state(node: Any, target: str, transition_id: int, timeout_s: float = 60.0) -> bool:
    """Drive ``target``'s lifecycle through one transition from the test's probe node. The
    transition is asked once; while its answer does not come (a server drops the answer to a client
    it has not matched yet), the node's state says whether it happened, as lifecycle_manager does."""
    from lifecycle_msgs.srv import ChangeState, GetState

    from aichemist_nodes.lifecycle_manager import TRANSITION_REACHES
    from aichemist_nodes.node_base import REASK_S, call_service, service_client, wait_future

    with service_client(node, ChangeState, f"/{target}/change_state") as client, \
            service_client(node, GetState, f"/{target}/get_state") as get_state:
        assert client.wait_for_service(timeout_sec=30.0), f"{target} lifecycle service missing"
        req = ChangeState.Request()
        req.transition.id = transition_id
        deadline = time.monotonic() + timeout_s
        future = client.call_async(req)
        while (res := wait_future(future, min(REASK_S, max(0.0, deadline - time.monotonic())))) is None:
            assert time.monotonic() < deadline, f"{target}: change_state timed out"
            state = call_service(get_state, GetState.Request(), REASK_S, reask_s=1.0)
            if state is not None and state.current_state.label == TRANSITION_REACHES.get(transition_id):
                client.remove_pending_request(future)
                return True
        return res.success


def wait_for(predicate: Callable[[], Any], timeout_s: float) -> bool:
    """Wait until ``predicate()`` holds (checked every 50 ms), at most ``timeout_s``."""
    event = threading.Event()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        event.wait(0.05)
    return bool(predicate())


def send_goal(client: Any, goal: Any, feedback: list | None = None, *, result_timeout_s: float = 120.0) -> Any:
    """Send an action goal, assert it is accepted, and return its result."""
    accepted = threading.Event()
    fut = client.send_goal_async(goal, feedback_callback=(lambda m: feedback.append(m.feedback))
                                 if feedback is not None else None)
    fut.add_done_callback(lambda _f: accepted.set())
    assert accepted.wait(30.0), "goal not answered"
    handle = fut.result()
    assert handle.accepted, "goal rejected"
    done = threading.Event()
    res_fut = handle.get_result_async()
    res_fut.add_done_callback(lambda _f: done.set())
    assert done.wait(result_timeout_s), "no result"
    return res_fut.result().result
