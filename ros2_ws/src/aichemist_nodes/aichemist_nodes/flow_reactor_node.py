"""flow_reactor_node: lifecycle node over ``flow_reactor.controller.FlowReactorController``.

- configure: validate the params (``flow_reactor.config.FlowReactorParams``), open every device's
  port and check its identity (nothing moves). A missing port fails configure, naming the port.
- activate: goals may move hardware. deactivate / error / shutdown / e-stop: safe state.
- action /flow_reactor/run_flow_experiment (RunFlowExperiment) with feedback (phase, elapsed,
  time to steady state, pressure, temperature); errors map to (code, error_type, message).
- /flow_reactor/state (FlowReactorState) at ``state_rate_hz`` (>= 10 Hz, wall clock).
- /safety/estop: latches the controller's e-stop (a running experiment stops at its next poll)
  and drives the rig to its safe state at once.
Time: the node's ROS clock, i.e. the twin's /clock when ``use_sim_time`` is true.
"""

from __future__ import annotations

import json
import math
import threading

from rclpy.clock import Clock as RosClockBase
from rclpy.clock import ClockType
from rclpy.duration import Duration

from aichemist.errors import AIChemistError
from aichemist_interfaces.action import RunFlowExperiment
from aichemist_interfaces.msg import FlowReactorState
from aichemist_nodes.node_base import (STATE_QOS, HardwareNode, action_server, set_error, spin_node)
from flow_reactor.config import PUMP_FIELDS, FlowReactorParams
from flow_reactor.controller import FlowConditions, FlowReactorController, create_devices


class NodeClock:
    """``aichemist.clock.Clock`` on a ROS node's clock (sim time from /clock when enabled)."""

    def __init__(self, node) -> None:  # noqa: ANN001
        self._node = node

    def now(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._node.get_clock().sleep_for(Duration(nanoseconds=int(seconds * 1e9)))


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
        period = 1.0 / params.state_rate_hz
        self._state_timer = self.create_timer(period, self._publish_state, callback_group=self.cb_group,
                                              clock=self._wall)
        self._idle_timer = self.create_timer(0.5, self._sample_idle, callback_group=self.cb_group,
                                             clock=self._wall)

    def cleanup_core(self) -> None:
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
        goal = goal_handle.request
        result = RunFlowExperiment.Result()
        try:
            self.require_actuation()
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
        if c is None or c.busy or not self._sample_lock.acquire(blocking=False):
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
