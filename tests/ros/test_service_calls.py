"""node_base.call_service: one answer within a timeout; a request safe to repeat is asked again
while its answer does not come (a server drops the answer to a client it has not matched yet),
and every request given up on is withdrawn from the client."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.ros


class _DroppingClient:
    """Answers only from the ``answer_from``-th request on (the earlier answers are lost)."""

    def __init__(self, answer_from: int) -> None:
        self.answer_from = answer_from
        self.requests: list[object] = []
        self.withdrawn: list[object] = []

    def call_async(self, request: object):  # noqa: ANN201
        from rclpy.task import Future

        self.requests.append(request)
        future = Future()
        if len(self.requests) >= self.answer_from:
            future.set_result(f"answer to request {len(self.requests)}")
        return future

    def remove_pending_request(self, future: object) -> None:
        self.withdrawn.append(future)


def test_a_repeatable_request_is_asked_again_until_answered():
    from aichemist_nodes.node_base import call_service

    client = _DroppingClient(answer_from=3)
    assert call_service(client, "get_state", 30.0, reask_s=0.05) == "answer to request 3"
    assert client.requests == ["get_state"] * 3
    assert len(client.withdrawn) == 2   # the two unanswered requests


def test_a_request_asked_once_gives_none_at_its_timeout():
    from aichemist_nodes.node_base import call_service

    client = _DroppingClient(answer_from=2)
    t0 = time.monotonic()
    assert call_service(client, "change_state", 0.2) is None
    assert time.monotonic() - t0 >= 0.2
    assert client.requests == ["change_state"] and len(client.withdrawn) == 1


def test_re_asking_stops_at_the_callers_deadline():
    from aichemist_nodes.node_base import call_service

    client = _DroppingClient(answer_from=10_000)
    t0 = time.monotonic()
    assert call_service(client, "get_state", 1.0, reask_s=0.1) is None
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 5.0
    # one request per re-ask period, at most, until the deadline
    assert 2 <= len(client.requests) <= elapsed / 0.1 + 2 and len(client.withdrawn) == len(client.requests)
