"""Helpers shared by the ros and twin test tiers (importable from any test: pytest puts tests/
on the path)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


def change_state(node: Any, target: str, transition_id: int) -> bool:
    """Drive ``target``'s lifecycle through one transition from the test's probe node."""
    from lifecycle_msgs.srv import ChangeState

    client = node.create_client(ChangeState, f"/{target}/change_state")
    assert client.wait_for_service(timeout_sec=30.0), f"{target} lifecycle service missing"
    req = ChangeState.Request()
    req.transition.id = transition_id
    res = client.call(req, timeout_sec=60.0)
    assert res is not None, "change_state timed out"
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
