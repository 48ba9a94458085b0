"""hplc_node: lifecycle node over the online HPLC (``flow_reactor.drivers.online_hplc``).

- configure: validate params (``flow_reactor.config.HplcParams``), open the five component ports
  and identify them (nothing moves; a missing port fails configure, naming it);
- activate: goals may run; deactivate / error / e-stop: pumps stopped (safe state);
- serial links watched (``flow_reactor_node.SerialLinkWatch``): a port that hangs up (the twin
  serving it died) ends a running measurement at once with ConnectionLost naming the ports, and
  the node goes back to 'unconfigured'; the lifecycle manager brings it up again;
- action /hplc/measure_sample (MeasureSample): inject a vial, run the method, integrate the peaks
  (``flow_reactor.analytics.measure_sample``): the chromatogram, the peaks' areas and
  concentrations and the product yield. Errors map to (code, error_type, message).
Time: the node's ROS clock (the twin's /clock when ``use_sim_time`` is true).
"""

from __future__ import annotations

import json
import math

from aichemist.errors import AIChemistError, Cancelled, EmergencyStop
from aichemist_interfaces.action import MeasureSample
from aichemist_nodes.flow_reactor_node import NodeClock, SerialLinkWatch, device_transports
from aichemist_nodes.node_base import HardwareNode, action_server, set_error, spin_node
from flow_reactor.analytics import measure_sample
from flow_reactor.config import HplcParams
from flow_reactor.drivers.online_hplc import OnlineHPLC


class HplcNode(HardwareNode):
    params_model = HplcParams

    def __init__(self) -> None:
        super().__init__("hplc_node")
        self.hplc: OnlineHPLC | None = None
        self._server = action_server(self, MeasureSample, "/hplc/measure_sample", self._execute,
                                     callback_group=self.cb_group)
        self.links = SerialLinkWatch(self, lambda: device_transports(self.hplc.parts if self.hplc else {}))

    def configure_core(self, params: HplcParams) -> None:
        clock = NodeClock(self)
        hplc = OnlineHPLC.from_components(
            "hplc", components=params.components(), clock=clock,
            vial_positions=params.vial_positions or None, loop_volume_ul=params.loop_volume_ul,
            flush_volume_ul=params.flush_volume_ul, mobile_phase_flow_ml_min=params.mobile_phase_flow_ml_min,
            detection_wavelength_nm=params.detection_wavelength_nm, run_time_min=params.run_time_min,
            sample_interval_s=params.sample_interval_s)
        try:
            hplc.connect()
            self.get_logger().info(hplc.identify())
        except Exception:
            hplc.close()
            raise
        self.hplc = hplc
        self.links.start(clock)

    def activate_core(self) -> None:
        self.links.check()

    def cleanup_core(self) -> None:
        self.links.stop()
        if self.hplc is not None:
            self.hplc.close()
        self.hplc = None

    def safe_state(self) -> None:
        if self.hplc is not None:
            self.hplc.safe_state()

    def _execute(self, goal_handle):  # noqa: ANN001
        with self.links.goal():
            return self._measure(goal_handle)

    def _measure(self, goal_handle):  # noqa: ANN001
        goal = goal_handle.request
        result = MeasureSample.Result()
        start = self.get_clock().now()
        try:
            self.require_actuation()
            self.links.check()

            def should_stop() -> AIChemistError | None:  # the e-stop or a cancel ends the run, pumps off
                if self.estop_active:
                    return EmergencyStop(f"emergency stop ({self.estop_reason}): HPLC run aborted, pumps stopped")
                if goal_handle.is_cancel_requested:
                    return Cancelled("HPLC run cancelled, pumps stopped")
                return None

            self.hplc.should_stop = should_stop

            def on_phase(phase: str) -> None:
                fb = MeasureSample.Feedback()
                fb.phase = phase
                fb.elapsed_s = (self.get_clock().now() - start).nanoseconds * 1e-9
                goal_handle.publish_feedback(fb)

            out = measure_sample(self.hplc, self.params, goal.vial,
                                 volume_ul=goal.injection_volume_ul or None,
                                 run_time_min=goal.run_time_min or None,
                                 conc_dfnb_fed_m=goal.conc_dfnb_fed_m, on_phase=on_phase)
            chrom = out["chromatogram"]
            result.code, result.error_type, result.message = 0, "", "ok"
            result.times_min = [float(t) for t in chrom.times_min]
            result.signal_mau = [float(s) for s in chrom.signal_mau]
            peaks = out["peaks"]
            result.peak_names = [p.name for p in peaks]
            result.peak_retention_min = [float(p.retention_min) if math.isfinite(p.retention_min) else 0.0
                                         for p in peaks]
            result.peak_areas = [float(p.area_mau_min) for p in peaks]
            result.peak_conc_m = [float(p.conc_m) for p in peaks]
            result.yield_fraction = float(out["yield_fraction"])
            result.result_json = json.dumps({"sample_id": goal.sample_id, "vial": goal.vial,
                                             "conc_m": out["conc_m"],
                                             "yield_fraction": out["yield_fraction"]})
        except AIChemistError as exc:
            set_error(result, exc)
            self.get_logger().error(f"sample {goal.sample_id!r} failed: {exc.error_type}: {exc}")
        except Exception as exc:
            self._quiet(self.safe_state)
            set_error(result, exc)
            self.get_logger().error(f"sample {goal.sample_id!r} failed: {exc!r}")
        if result.code == 0:
            goal_handle.succeed()
        elif result.error_type == "Cancelled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return result


def main(args=None) -> int:  # noqa: ANN001
    return spin_node(HplcNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
