"""Brings the lab's lifecycle (hardware) nodes up in order: configure, then activate, each with
a timeout. On a failure it says which node and which transition, and activates nothing after
the failed node. It keeps watching: a node that comes back unconfigured (respawned after a
crash) is brought up again, unless the e-stop is active. /lifecycle_manager/shutdown_all
deactivates everything (hardware to safe state)."""

from __future__ import annotations

import threading
import time

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from pydantic import Field
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_srvs.srv import Trigger

from aichemist.params import Params
from aichemist_nodes.node_base import (REASK_S, call_service, declare_params, load_params, service_client, spin_node,
                                       subscribe_estop, wait_future)


class LifecycleManagerParams(Params):
    node_names: list[str] = Field(default_factory=list, description="Lifecycle nodes, in bring-up order")
    autostart: bool = Field(default=True, description="Configure and activate them at start-up")
    service_timeout_s: float = Field(default=30.0, gt=0, le=600, description="Wait for each node's services")
    transition_timeout_s: float = Field(default=30.0, gt=0, le=600, description="Wait for each transition")
    watch_period_s: float = Field(default=2.0, ge=0.0, le=600,
                                  description="re-check the nodes this often and bring back any that fell "
                                              "out of 'active' (0 = do not watch)")


# the state a successful transition leaves the node in
TRANSITION_REACHES = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active",
                      Transition.TRANSITION_DEACTIVATE: "inactive"}


class LifecycleManager(Node):
    def __init__(self) -> None:
        super().__init__("lifecycle_manager")
        declare_params(self, LifecycleManagerParams)
        self.params = load_params(self, LifecycleManagerParams)
        self._group = ReentrantCallbackGroup()
        self.create_service(Trigger, "~/startup", self._on_startup, callback_group=self._group)
        self.create_service(Trigger, "~/shutdown_all", self._on_shutdown_all, callback_group=self._group)
        self._estop = False
        self._bringup_lock = threading.Lock()
        self._shut_down = False
        subscribe_estop(self, self._on_estop)
        if self.params.autostart:
            threading.Thread(target=self._run, daemon=True).start()

    def _on_estop(self, estop: bool, source: str, reason: str) -> None:
        self._estop = estop

    def _run(self) -> None:
        """Bring everything up, then keep it up."""
        self.startup()
        if self.params.watch_period_s <= 0:
            return
        stop = threading.Event()
        while not stop.wait(self.params.watch_period_s) and self.context.ok():
            if self._estop or self._shut_down:
                continue
            states = {n: self.state_of(n, timeout_s=2.0) for n in self.params.node_names}
            fallen = [n for n, st in states.items() if st in ("unconfigured", "inactive")]
            if fallen:
                self.get_logger().warning(f"not active: {', '.join(f'{n} ({states[n]})' for n in fallen)}; bringing up")
                self.startup()

    def _transition(self, node_name: str, transition_id: int, label: str) -> bool:
        with service_client(self, ChangeState, f"/{node_name}/change_state", self._group) as client:
            if not client.wait_for_service(timeout_sec=self.params.service_timeout_s):
                self.get_logger().error(f"{node_name}: no lifecycle service after "
                                        f"{self.params.service_timeout_s:g} s (is the node running?)")
                return False
            req = ChangeState.Request()
            req.transition.id = transition_id
            # asked once: a transition repeated is not the same request. While its answer does not
            # come, the node's own state says whether it happened (the answer may have been dropped)
            deadline = time.monotonic() + self.params.transition_timeout_s
            future = client.call_async(req)
            while (res := wait_future(future, min(REASK_S, max(0.0, deadline - time.monotonic())))) is None:
                if time.monotonic() >= deadline:
                    client.remove_pending_request(future)
                    break
                reached = self.state_of(node_name, timeout_s=min(REASK_S, max(0.1, deadline - time.monotonic())))
                if reached == TRANSITION_REACHES[transition_id]:
                    client.remove_pending_request(future)
                    self.get_logger().warning(f"{node_name}: {label} ok (its answer was lost; the node reports "
                                              f"'{reached}')")
                    return True
            if res is None or not res.success:
                why = "timed out" if res is None else "failed (see that node's log for the reason)"
                self.get_logger().error(f"{node_name}: {label} {why}")
                return False
            self.get_logger().info(f"{node_name}: {label} ok")
            return True

    def state_of(self, node_name: str, timeout_s: float | None = None) -> str:
        timeout_s = self.params.service_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        with service_client(self, GetState, f"/{node_name}/get_state", self._group) as client:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return "unreachable"
            res = call_service(client, GetState.Request(), max(0.0, deadline - time.monotonic()), reask_s=REASK_S)
            return "unreachable" if res is None else res.current_state.label

    def startup(self) -> bool:
        with self._bringup_lock:
            self._shut_down = False
            for name in self.params.node_names:
                state = self.state_of(name)
                if state == "active":
                    continue
                if state == "unreachable":
                    self.get_logger().error(f"{name}: no lifecycle services after {self.params.service_timeout_s:g} s "
                                            "(is the node running?)")
                    return False
                if state == "unconfigured" and not self._transition(name, Transition.TRANSITION_CONFIGURE, "configure"):
                    return False
                if state in ("unconfigured", "inactive") and not self._transition(
                        name, Transition.TRANSITION_ACTIVATE, "activate"):
                    return False
                if state not in ("unconfigured", "inactive"):
                    self.get_logger().error(f"{name}: in state '{state}', cannot bring it up")
                    return False
            self.get_logger().info(f"all {len(self.params.node_names)} lifecycle nodes active")
            return True

    def shutdown_all(self) -> bool:
        self._shut_down = True
        ok = True
        for name in reversed(self.params.node_names):
            if self.state_of(name) == "active":
                ok = self._transition(name, Transition.TRANSITION_DEACTIVATE, "deactivate") and ok
        return ok

    def _on_startup(self, _req, res):  # noqa: ANN001
        res.success = self.startup()
        res.message = "all active" if res.success else "bring-up failed; see log"
        return res

    def _on_shutdown_all(self, _req, res):  # noqa: ANN001
        res.success = self.shutdown_all()
        res.message = "all inactive" if res.success else "some nodes did not deactivate"
        return res


def main(args=None) -> int:  # noqa: ANN001
    return spin_node(LifecycleManager, args)


if __name__ == "__main__":
    raise SystemExit(main())
