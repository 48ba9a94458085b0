"""flow_reactor_node: lifecycle node over ``flow_reactor.controller.FlowReactorController``.

- configure: validate the params (``flow_reactor.config.FlowReactorParams``), open every device's
  port and check its identity (nothing moves). A missing port fails configure, naming the port.
- activate: goals may move hardware. deactivate / error / shutdown / e-stop: safe state.
- action /flow_reactor/run_flow_experiment (RunFlowExperiment) with feedback (phase, elapsed,
  time to steady state, pressure, temperature); errors map to (code, error_type, message).
- /flow_reactor/state (FlowReactorState) at ``state_rate_hz`` (>= 10 Hz, wall clock).
- /safety/estop: latches the controller's e-stop (a running experiment stops at its next poll)
  and drives the rig to its safe state at once.
- serial links watched (``SerialLinkWatch``, wall clock): when a port hangs up (a device
  unplugged, or the twin serving the ports died) a running experiment ends failed at once with
  ConnectionLost naming the ports, and the node goes back to 'unconfigured' (safe state, ports
  closed); the lifecycle manager configures and activates it again once the ports answer.
Time: the node's ROS clock, i.e. the twin's /clock when ``use_sim_time`` is true.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from typing import Any, Callable, Iterator, Mapping

from rclpy.clock import Clock as RosClockBase
from rclpy.clock import ClockType, JumpThreshold
from rclpy.duration import Duration

from aichemist.errors import AIChemistError
from aichemist_interfaces.action import RunFlowExperiment
from aichemist_interfaces.msg import FlowReactorState
from aichemist_nodes.node_base import (STATE_QOS, HardwareNode, action_server, set_error, spin_node)
from flow_reactor.config import PUMP_FIELDS, FlowReactorParams
from flow_reactor.controller import FlowConditions, FlowReactorController, create_devices
from flow_reactor.transport import ConnectionLost


class NodeClock:
    """``aichemist.clock.Clock`` on a ROS node's clock (sim time from /clock when enabled).

    ``interrupt(message)``: every sleep, the current ones and all later ones, raises
    ConnectionLost(message) at once. A wait on simulated time whose /clock stopped (the twin died)
    would otherwise last until the twin came back."""

    _JUMPS = JumpThreshold(min_forward=Duration(nanoseconds=1), min_backward=None, on_clock_change=True)

    def __init__(self, node) -> None:  # noqa: ANN001
        self._node = node
        self._interrupted: str | None = None
        self._sleepers: set[threading.Event] = set()
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def interrupt(self, message: str) -> None:
        self._interrupted = message
        with self._lock:
            for woke in self._sleepers:
                woke.set()

    def _check(self) -> None:
        if self._interrupted is not None:
            raise ConnectionLost(self._interrupted)

    def sleep(self, seconds: float) -> None:
        """Like ``Clock.sleep_for``: woken by every /clock tick (a time jump) with sim time, by a
        short wall timeout otherwise; also by ``interrupt`` and by shutdown (returns)."""
        if seconds <= 0:
            return
        self._check()
        clock = self._node.get_clock()
        until_ns = clock.now().nanoseconds + int(seconds * 1e9)
        woke = threading.Event()
        with self._lock:
            self._sleepers.add(woke)
        try:
            with clock.create_jump_callback(self._JUMPS, post_callback=lambda _jump: woke.set()):
                while True:
                    woke.clear()  # before reading the time: a tick after the read wakes the wait
                    self._check()
                    left_ns = until_ns - clock.now().nanoseconds
                    if left_ns <= 0 or not self._node.context.ok():
                        return
                    woke.wait(min(0.05, left_ns * 1e-9))
        finally:
            with self._lock:
                self._sleepers.discard(woke)


class SerialLinkWatch:
    """A hardware node's watch on its serial links: every ``period_s`` of wall time while the
    node is configured, each port's ``link_lost()`` (a hang-up, nothing read). When one is lost:

    1. the node's ``NodeClock`` is interrupted: a running goal's waits raise ConnectionLost naming
       the ports, so the goal ends failed with that reason at once (a dead twin also stops
       /clock: without this the goal would wait on simulated time until the twin came back);
    2. once no goal runs (at most ``goal_grace_s``), the node deactivates (safe state, best
       effort) and cleans up (ports closed): it is 'unconfigured', and the lifecycle manager, which
       brings up every node that fell out of 'active', configures and activates it again once its
       ports answer (until then configure fails naming the missing port, and it retries).

    The node starts the watch at configure (``start``), stops it at cleanup (``stop``), runs its
    goals inside ``goal()`` and calls ``check()`` before moving anything."""

    def __init__(self, node: Any, transports: Callable[[], Mapping[str, Any]], *, period_s: float = 0.5,
                 goal_grace_s: float = 15.0) -> None:
        self.node = node
        self._transports = transports
        self.period_s = period_s
        self.goal_grace_s = goal_grace_s
        self.lost = ""  # why, once a link is lost (until the next configure)
        self.clock: NodeClock | None = None
        self._timer = None
        self._goals = 0
        self._goals_lock = threading.Lock()
        self._wall = RosClockBase(clock_type=ClockType.STEADY_TIME)

    def start(self, clock: NodeClock) -> None:
        self.lost, self.clock = "", clock
        self._timer = self.node.create_timer(self.period_s, self.poll, callback_group=self.node.cb_group,
                                             clock=self._wall)

    def stop(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
        self._timer = None

    @contextlib.contextmanager
    def goal(self) -> Iterator[None]:
        with self._goals_lock:
            self._goals += 1
        try:
            yield
        finally:
            with self._goals_lock:
                self._goals -= 1

    def check(self) -> None:
        """Raise ConnectionLost while a link is lost (refuse to start a goal or to activate)."""
        if self.lost:
            raise ConnectionLost(f"{self.lost}; the node waits to be configured again")

    def lost_ports(self) -> list[str]:
        lost = []
        for name, transport in self._transports().items():
            probe = getattr(transport, "link_lost", None)
            if probe is not None and probe():
                lost.append(f"{name} ({getattr(transport, 'port', '?')})")
        return lost

    def poll(self) -> None:
        if self.lost:
            return
        lost = self.lost_ports()
        if not lost:
            return
        self.lost = (f"{self.node.get_name()}: serial link lost: {', '.join(lost)} hung up (the device, or "
                     "the twin serving it, went away)")
        self.node.get_logger().error(f"{self.lost}; ending the running goal, going to safe state and "
                                     "'unconfigured' (the lifecycle manager brings the node back)")
        if self.clock is not None:
            self.clock.interrupt(self.lost)
        threading.Thread(target=self._recover, name="link-recover", daemon=True).start()

    def _recover(self) -> None:
        deadline = time.monotonic() + self.goal_grace_s
        pause = threading.Event()
        while self._goals > 0 and time.monotonic() < deadline:
            pause.wait(0.05)
        node = self.node
        try:
            if node._state_machine.current_state[1] == "active":
                node.trigger_deactivate()
            if node._state_machine.current_state[1] == "inactive":
                node.trigger_cleanup()
        except Exception as exc:  # noqa: BLE001 - logged; the manager still sees the node not active
            node.get_logger().error(f"leaving 'active' after the lost link failed: {exc!r}")
        node.get_logger().warning(f"link lost: node now '{node._state_machine.current_state[1]}'")


def device_transports(devices: Mapping[str, Any]) -> dict[str, Any]:
    """Device name -> its transport, for the devices that have one."""
    return {name: dev.transport for name, dev in devices.items() if getattr(dev, "transport", None) is not None}


class FlowReactorNode(HardwareNode):
    params_model = FlowReactorParams

    def __init__(self) -> None:
        super().__init__("flow_reactor_node")
        self.controller: FlowReactorController | None = None
        self._wall = RosClockBase(clock_type=ClockType.STEADY_TIME)
        self._state_pub = self.create_publisher(FlowReactorState, "/flow_reactor/state", STATE_QOS)
        self._state_timer = None
        self._idle_timer = None
        self._server = action_server(self, RunFlowExperiment, "/flow_reactor/run_flow_experiment",
                                     self._execute, cancel_callback=self._on_cancel,
                                     callback_group=self.cb_group)
        self._sample_lock = threading.Lock()
        self.links = SerialLinkWatch(self, lambda: device_transports(self.controller.devices if self.controller
                                                                     else {}))

    # --- lifecycle hooks ---------------------------------------------------------------------
    def configure_core(self, params: FlowReactorParams) -> None:
        clock = NodeClock(self)
        devices = create_devices(params, clock=clock)
        controller = FlowReactorController(params, devices, clock)
        try:
            identities = controller.connect()
        except Exception:
            controller.close()
            raise
        for name, ident in identities.items():
            self.get_logger().info(f"{name}: {ident}")
        self.controller = controller
        self.links.start(clock)
        period = 1.0 / params.state_rate_hz
        self._state_timer = self.create_timer(period, self._publish_state, callback_group=self.cb_group,
                                              clock=self._wall)
        self._idle_timer = self.create_timer(0.5, self._sample_idle, callback_group=self.cb_group,
                                             clock=self._wall)

    def activate_core(self) -> None:
        self.links.check()

    def cleanup_core(self) -> None:
        self.links.stop()
        for timer in (self._state_timer, self._idle_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._state_timer = self._idle_timer = None
        if self.controller is not None:
            self.controller.close()
        self.controller = None

    def safe_state(self) -> None:
        if self.controller is not None:
            self.controller.cancel()
            self.controller.safe_state("node safe state")

    def _on_estop(self, estop: bool, source: str, reason: str) -> None:
        if self.controller is not None:
            if estop:
                self.controller.estop(f"{source}: {reason}")
            else:
                self.controller.clear_estop()
        super()._on_estop(estop, source, reason)

    # --- action ------------------------------------------------------------------------------
    def _on_cancel(self, _goal_handle):  # noqa: ANN001
        from rclpy.action import CancelResponse

        if self.controller is not None:
            self.controller.cancel()
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle):  # noqa: ANN001
        with self.links.goal():
            return self._run_goal(goal_handle)

    def _run_goal(self, goal_handle):  # noqa: ANN001
        goal = goal_handle.request
        result = RunFlowExperiment.Result()
        try:
            self.require_actuation()
            self.links.check()
            cond = FlowConditions(residence_time_min=goal.residence_time_min, temp_c=goal.temp_c,
                                  equivalents=goal.equivalents, conc_dfnb_m=goal.conc_dfnb_m)

            def feedback(fb) -> None:  # noqa: ANN001
                msg = RunFlowExperiment.Feedback()
                msg.phase, msg.elapsed_s = fb.phase, float(fb.elapsed_s)
                msg.time_to_steady_state_s = float(fb.time_to_steady_state_s)
                msg.pressure_bar = float(fb.pressure_bar) if math.isfinite(fb.pressure_bar) else 0.0
                msg.temp_c = float(fb.temp_c) if math.isfinite(fb.temp_c) else 0.0
                goal_handle.publish_feedback(msg)

            out = self.controller.run_experiment(cond, experiment_id=goal.experiment_id, collect=goal.collect,
                                                 collect_vial=goal.collect_vial, feedback=feedback)
            result.code, result.error_type, result.message = 0, "", "ok"
            result.yield_fraction = out.yield_fraction
            result.conc_product_m = out.conc_product_m
            result.time_to_steady_state_s = out.time_to_steady_state_s
            result.reagent_used_ml = float(sum(v for k, v in out.reagent_used_ml.items() if k != "ethanol"))
            result.result_json = json.dumps(out.to_dict())
        except AIChemistError as exc:
            set_error(result, exc)
            self.get_logger().error(f"experiment {goal.experiment_id!r} failed: {exc.error_type}: {exc}")
        except Exception as exc:  # unexpected: still a result, and the rig is made safe
            self._quiet(self.safe_state)
            set_error(result, exc)
            self.get_logger().error(f"experiment {goal.experiment_id!r} failed: {exc!r}")
        if goal_handle.is_cancel_requested and result.code != 0:
            goal_handle.canceled()
        elif result.code == 0:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    # --- state -------------------------------------------------------------------------------
    def _sample_idle(self) -> None:
        c = self.controller
        if c is None or c.busy or self.links.lost or not self._sample_lock.acquire(blocking=False):
            return
        try:
            c.sample()
        except Exception as exc:  # a failed idle reading is reported in the state, not raised
            self.get_logger().debug(f"idle sample failed: {exc!r}")
        finally:
            self._sample_lock.release()

    def _publish_state(self) -> None:
        c = self.controller
        if c is None:
            return
        s = c.state
        msg = FlowReactorState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.lifecycle_state = self._state_machine.current_state[1]
        msg.phase = s.phase
        msg.safe = bool(s.safe)
        msg.active_interlock = s.active_interlock
        msg.pump_names = list(PUMP_FIELDS)
        msg.pump_flow_ml_min = [float(s.pump_flow_ml_min.get(n, 0.0)) for n in PUMP_FIELDS]
        msg.pump_flow_setpoint_ml_min = [float(s.pump_flow_setpoint_ml_min.get(n, 0.0)) for n in PUMP_FIELDS]
        msg.pressure_bar = float(s.pressure_bar)
        msg.temp_c = float(s.temp_c)
        msg.temp_setpoint_c = float(s.temp_setpoint_c)
        msg.detector_absorbance = float(s.detector_absorbance)
        try:
            self._state_pub.publish(msg)
        except Exception:  # publisher inactive or shutting down
            pass


def main(args=None) -> int:  # noqa: ANN001
    return spin_node(FlowReactorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
