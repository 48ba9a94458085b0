"""The flow reactor controller: one flow experiment from conditions to a measured result.

Pure core: devices by role (``flow_reactor.roles``), time from an injected ``Clock``; no rclpy,
no sim. The same code runs lab hardware (WallClock, serial ports), the twin over pseudo-terminals
(ROS clock on /clock) and the in-process twin (SimClock in lock-step, for tests and benchmarks).

One experiment (``run_experiment``), phases as reported in feedback:

``validating``   conditions inside the process limits, feed flows from (residence time,
                 equivalents, DFNB concentration) and the stock concentrations inside every pump's
                 limits, thermostat setpoint inside its limits, enough of every stock for the
                 worst case of this run. All before anything moves: bad input changes nothing.
``priming``      valve to waste (confirmed), solvent through the system; the thermostat starts
                 heating to the setpoint at the same time.
``heating``      solvent at the run's total flow until the thermostat holds the setpoint
                 (band, hold time; ``heat_timeout_s`` at most).
``equilibrating`` reagent flows on; steady state detected on the detector signal
                 (``steady_state.SteadyStateDetector``): never before the feed has crossed the
                 reactor, never a fixed sleep, ``max_residence_times`` x tau at most.
``measuring``    detector spectra averaged over ``measure_s``; concentrations by Beer-Lambert;
                 yield, space-time yield, E-factor.
``collecting``   after the detector-to-valve transit, the valve diverts ``collect_volume_ml`` to
                 the next free collection vial, then back to waste (each switch confirmed).
``flushing``     reagents off, ``flush_volumes`` system volumes of solvent, pumps stopped.

Every wait polls the devices every ``poll_interval_s`` and checks the interlocks
(``interlocks.InterlockMonitor``); any fault, interlock, e-stop or cancel drives the rig to its
safe state (all pumps stopped, thermostat to its safe setpoint and off) before the typed error
leaves ``run_experiment``. Reagent consumption is tracked against the stock volumes.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from aichemist.clock import Clock
from aichemist.errors import (Cancelled, CommunicationTimeout, ConfigurationError, ConflictError,
                              DeviceError, EmergencyStop, InterlockTripped, LimitError, StepTimeout,
                              ValidationError)

from . import interlocks as il
from .analytics import BeerLambertCalibration, e_factor, space_time_yield_kg_m3_h
from .config import DEVICE_ROLES, PUMP_FIELDS, FlowReactorParams
from .steady_state import SteadyStateCriteria, SteadyStateDetector

log = logging.getLogger(__name__)

PHASES = ("idle", "validating", "priming", "heating", "equilibrating", "measuring", "collecting",
          "flushing", "fault", "safe")


class SteadyStateTimeout(StepTimeout):
    """No steady state within the maximum wait."""


@dataclass(frozen=True)
class FlowConditions:
    residence_time_min: float
    temp_c: float
    equivalents: float
    conc_dfnb_m: float


@dataclass
class Feedback:
    phase: str
    elapsed_s: float
    time_to_steady_state_s: float
    pressure_bar: float
    temp_c: float


@dataclass
class FlowPlan:
    conditions: FlowConditions
    flows_ml_min: dict[str, float]          # pump device -> mL/min
    total_flow_ml_min: float
    reagent_needed_ml: dict[str, float]     # stock -> worst-case mL for this run


@dataclass
class ExperimentResult:
    experiment_id: str
    conditions: dict[str, float]
    flows_ml_min: dict[str, float]
    conc_m: dict[str, float]
    conc_dfnb_fed_m: float
    yield_fraction: float
    conc_product_m: float
    sty_kg_m3_h: float
    e_factor: float
    time_to_steady_state_s: float
    steady_signal_au: float
    reagent_used_ml: dict[str, float]
    collected_vial: str | None
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReactorState:
    """Latest reading of the rig, for the state topic."""

    t_s: float = 0.0
    phase: str = "idle"
    safe: bool = True
    active_interlock: str = ""
    pump_flow_ml_min: dict[str, float] = field(default_factory=dict)
    pump_flow_setpoint_ml_min: dict[str, float] = field(default_factory=dict)
    pressure_bar: float = float("nan")
    temp_c: float = float("nan")
    temp_setpoint_c: float = float("nan")
    detector_absorbance: float = float("nan")
    valve_position: int = 0


STOCK_OF_PUMP = {"pump_dfnb": "dfnb", "pump_pyrrolidine": "pyrrolidine", "pump_ethanol": "ethanol"}


class FlowReactorController:
    def __init__(self, params: FlowReactorParams, devices: Mapping[str, Any], clock: Clock) -> None:
        missing = [name for name in DEVICE_ROLES if name not in devices]
        if missing:
            raise ConfigurationError(f"flow reactor: devices missing: {', '.join(missing)}",
                                     problems=[{"field": m, "value": None} for m in missing])
        self.params = params
        self.devices = dict(devices)
        self.pumps = {name: self.devices[name] for name in PUMP_FIELDS}
        self.thermostat = self.devices["thermostat"]
        self.valve = self.devices["valve_collect"]
        self.pressure_sensor = self.devices["pressure_sensor"]
        self.detector = self.devices["detector"]
        self.clock = clock
        self.calibration = BeerLambertCalibration.from_params(params.analytics)
        ip = params.interlocks
        self.monitor = il.InterlockMonitor(il.InterlockLimits(
            max_pressure_bar=ip.max_pressure_bar, bpr_pressure_bar=params.reactor.bpr_pressure_bar,
            blockage_margin_bar=ip.blockage_margin_bar, max_pressure_rise_bar_s=ip.max_pressure_rise_bar_s,
            rise_window_s=ip.rise_window_s, leak_margin_bar=ip.leak_margin_bar, settle_s=ip.settle_s,
            temp_band_c=ip.temp_band_c, watchdog_s=ip.watchdog_s))
        self.stock_remaining_ml = {"dfnb": params.stocks.dfnb_ml, "pyrrolidine": params.stocks.pyrrolidine_ml,
                                   "ethanol": params.stocks.ethanol_ml}
        self.state = ReactorState()
        self._setpoints = {name: 0.0 for name in PUMP_FIELDS}
        self._last_ok: dict[str, float] = {}
        # device -> clock time at which its current run of failed reads began (the watchdog's
        # measure of silence: time the controller spent not polling, e.g. a stalled host, is not
        # the device's silence)
        self._failing_since: dict[str, float] = {}
        self._next_read: dict[str, float] = {}
        self._used_ml: dict[str, float] = {}
        self._cancel = threading.Event()
        self._run_lock = threading.Lock()
        self._next_vial = 0
        self._feedback: Callable[[Feedback], None] | None = None
        self._last_feedback_s = -math.inf
        self._run_t0 = 0.0
        self._time_to_steady_s = 0.0
        self.feedback_interval_s = 1.0

    # --- lifecycle -----------------------------------------------------------------------------
    def connect(self) -> dict[str, str]:
        """Open and identify every device (nothing moves). Returns device -> identity."""
        identities = {}
        for name, dev in self.devices.items():
            dev.connect()
            identities[name] = dev.identify()
            self._last_ok[name] = self.clock.now()
        return identities

    def close(self) -> None:
        for dev in self.devices.values():
            try:
                dev.close()
            except Exception as exc:  # closing must reach every device
                log.warning("closing %s failed: %r", getattr(dev, "name", dev), exc)

    def safe_state(self, reason: str = "") -> list[str]:
        """All pumps stopped, thermostat to its safe state; best effort on every device.

        Returns the devices whose safe-state command failed (already logged)."""
        failed = []
        for name in PUMP_FIELDS + ("thermostat",):
            dev = self.devices[name]
            try:
                dev.safe_state()  # pumps: stop; thermostat: its safe setpoint, control off
            except Exception as exc:
                failed.append(name)
                log.error("safe state of %s failed: %r", name, exc)
        self._setpoints = {name: 0.0 for name in PUMP_FIELDS}
        self.monitor.intent.pumps_should_run = {}
        self.monitor.intent.total_flow_ml_min = 0.0
        self.monitor.intent.temp_reached = False
        self.state.safe = not failed
        self.state.pump_flow_setpoint_ml_min = dict(self._setpoints)
        # report the setpoint the thermostat now holds, not the experiment's
        self.state.temp_setpoint_c = float(getattr(self.devices["thermostat"], "safe_temp_c", float("nan")))
        if reason:
            log.warning("safe state: %s", reason)
        return failed

    def estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop (the running experiment stops at its next poll) and make safe now."""
        self.monitor.trigger_estop(reason)
        self.state.phase = "safe"
        self.safe_state(f"e-stop: {reason}")

    def clear_estop(self) -> None:
        self.monitor.clear_estop()
        self.state.active_interlock = ""
        if self.state.phase == "safe":
            self.state.phase = "idle"

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def busy(self) -> bool:
        return self._run_lock.locked()

    def refill(self, stock: str, volume_ml: float) -> None:
        if stock not in self.stock_remaining_ml:
            raise LimitError("stock", stock, list(self.stock_remaining_ml))
        self.stock_remaining_ml[stock] = float(volume_ml)

    # --- planning (no device is touched) ------------------------------------------------------
    def plan(self, cond: FlowConditions) -> FlowPlan:
        p = self.params
        lim = p.limits
        for fld, value, lo, hi, unit in (
                ("residence_time_min", cond.residence_time_min, lim.min_residence_time_min,
                 lim.max_residence_time_min, "min"),
                ("temp_c", cond.temp_c, lim.min_temp_c, lim.max_temp_c, "C"),
                ("equivalents", cond.equivalents, lim.min_equivalents, lim.max_equivalents, ""),
                ("conc_dfnb_m", cond.conc_dfnb_m, lim.min_conc_dfnb_m, lim.max_conc_dfnb_m, "M")):
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise LimitError(fld, value, f"{lo}..{hi}", unit=unit, device="flow_reactor")
            if value < lo:
                raise LimitError(fld, value, lo, bound="min", unit=unit, device="flow_reactor")
            if value > hi:
                raise LimitError(fld, value, hi, bound="max", unit=unit, device="flow_reactor")
        total = p.reactor.volume_ml / cond.residence_time_min
        q_dfnb = cond.conc_dfnb_m / p.stocks.dfnb_m * total
        q_pyrr = cond.equivalents * cond.conc_dfnb_m / p.stocks.pyrrolidine_m * total
        q_etoh = total - q_dfnb - q_pyrr
        if q_etoh < -1e-9:
            raise LimitError("conc_dfnb_m", cond.conc_dfnb_m,
                             f"stocks {p.stocks.dfnb_m} M DFNB / {p.stocks.pyrrolidine_m} M pyrrolidine at "
                             f"{cond.equivalents} equivalents", bound="max", unit="M", device="flow_reactor")
        flows = {"pump_dfnb": q_dfnb, "pump_pyrrolidine": q_pyrr, "pump_ethanol": max(0.0, q_etoh)}
        for name, flow in flows.items():
            if flow <= 1e-9:
                flows[name] = 0.0
                continue
            limits = self.pumps[name].limits
            if flow < limits.min_flow_ml_min:
                raise LimitError("flow_ml_min", round(flow, 6), limits.min_flow_ml_min, bound="min",
                                 unit="mL/min", device=name)
            if flow > limits.max_flow_ml_min:
                raise LimitError("flow_ml_min", round(flow, 6), limits.max_flow_ml_min, bound="max",
                                 unit="mL/min", device=name)
        t_limits = self.thermostat.limits
        if not t_limits.min_temp_c <= cond.temp_c <= t_limits.max_temp_c:
            bound = "min" if cond.temp_c < t_limits.min_temp_c else "max"
            raise LimitError("temp_c", cond.temp_c,
                             t_limits.min_temp_c if bound == "min" else t_limits.max_temp_c,
                             bound=bound, unit="C", device="thermostat")
        needed = self._reagent_needed_ml(cond, flows, total)
        for stock, need in needed.items():
            if need > self.stock_remaining_ml[stock]:
                raise LimitError(f"{stock}_stock_ml", round(need, 3),
                                 round(self.stock_remaining_ml[stock], 3), bound="max", unit="mL",
                                 device=f"stock_{stock}")
        return FlowPlan(cond, flows, total, needed)

    def _reagent_needed_ml(self, cond: FlowConditions, flows: dict[str, float],
                           total: float) -> dict[str, float]:
        """Worst case: maximum wait for steady state, measurement and collection at run flows;
        priming and flushing in solvent."""
        p = self.params
        tau_s = cond.residence_time_min * 60.0
        run_s = (p.steady_state.max_residence_times * tau_s + self._transit_s(total)
                 + p.steady_state.measure_s + 60.0 * p.operation.collect_volume_ml / total
                 + 60.0 * p.reactor.collect_dead_volume_ml / total)
        margin = p.operation.reagent_margin
        need = {STOCK_OF_PUMP[n]: flows[n] * run_s / 60.0 * margin for n in PUMP_FIELDS}
        system_ml = p.reactor.volume_ml + p.reactor.detector_dead_volume_ml + p.reactor.collect_dead_volume_ml
        # heating time is unknown in advance; count a generous 20 minutes of solvent at run flow
        need["ethanol"] += (p.operation.prime_volume_ml + p.operation.flush_volumes * system_ml
                            + total * 20.0) * margin
        return need

    def _transit_s(self, total_ml_min: float) -> float:
        r = self.params.reactor
        return 60.0 * (r.volume_ml + r.detector_dead_volume_ml) / total_ml_min

    # --- the experiment ----------------------------------------------------------------------
    def run_experiment(self, cond: FlowConditions, *, experiment_id: str = "", collect: bool = True,
                       collect_vial: str = "",
                       feedback: Callable[[Feedback], None] | None = None) -> ExperimentResult:
        """``collect_vial``: the collection vial to fill ('' = the next in turn), e.g. the one the
        robot put at the outlet."""
        if not self._run_lock.acquire(blocking=False):
            raise ConflictError("flow reactor is busy with another experiment")
        try:
            self._feedback = feedback
            self._cancel.clear()
            self._used_ml = {s: 0.0 for s in self.stock_remaining_ml}
            self._run_t0 = self.clock.now()
            self._time_to_steady_s = 0.0
            self._last_feedback_s = -math.inf
            self._set_phase("validating")
            self.monitor.check_estop()
            ids = self.params.operation.collect_vial_ids
            if collect_vial and collect_vial not in ids:
                raise ValidationError(f"collect_vial={collect_vial!r} is not a collection vial of this reactor ({ids})",
                                      problems=[{"field": "collect_vial", "value": collect_vial, "limit": ids,
                                                 "message": "unknown collection vial"}])
            plan = self.plan(cond)
            try:
                return self._run(plan, experiment_id, collect, collect_vial)
            except BaseException as exc:
                if isinstance(exc, InterlockTripped):
                    self.state.active_interlock = exc.interlock
                elif isinstance(exc, EmergencyStop):
                    self.state.active_interlock = "estop"
                self.state.phase = "fault"
                self.safe_state(f"{type(exc).__name__}: {exc}")
                self.state.phase = "safe"
                raise
        finally:
            if self.state.phase == "validating":  # refused before anything moved
                self.state.phase = "idle"
            self._feedback = None
            self._run_lock.release()

    def _run(self, plan: FlowPlan, experiment_id: str, collect: bool, collect_vial: str = "") -> ExperimentResult:
        p, cond = self.params, plan.conditions
        op = p.operation
        timings: dict[str, float] = {}
        self.state.safe = False
        self.state.active_interlock = ""
        # priming: solvent only, valve to waste, heater on
        self._set_phase("priming")
        self._switch_valve(op.waste_position)
        self.thermostat.set_temp_c(cond.temp_c)
        self.thermostat.start()
        self.monitor.intent.temp_setpoint_c = cond.temp_c
        self.monitor.intent.temp_reached = False
        self.state.temp_setpoint_c = cond.temp_c
        self._set_flows({"pump_ethanol": op.prime_flow_ml_min})
        self._wait(60.0 * op.prime_volume_ml / op.prime_flow_ml_min)
        timings["priming"] = self._since_start()
        # heating: solvent at the run's total flow until the setpoint holds
        self._set_phase("heating")
        self._set_flows({"pump_ethanol": plan.total_flow_ml_min})
        self._wait_for_temperature(cond.temp_c)
        self.monitor.intent.temp_reached = True
        timings["heating"] = self._since_start()
        # the flow cell holds nothing but hot solvent now: the detector's blank for this run
        capture_reference = getattr(self.detector, "capture_reference", None)
        if capture_reference is not None:
            capture_reference()
        # equilibrating: reagents on, detect steady state on the detector signal
        self._set_phase("equilibrating")
        self._last_ok["detector"] = self.clock.now()  # its watchdog runs from here on
        self._failing_since.pop("detector", None)
        self._set_flows(plan.flows_ml_min)
        t0 = self.clock.now()
        tau_s = cond.residence_time_min * 60.0
        ss = p.steady_state
        criteria = SteadyStateCriteria(
            min_wait_s=ss.min_transit_factor * self._transit_s(plan.total_flow_ml_min),
            window_s=max(ss.min_window_s, ss.window_residence_times * tau_s),
            max_wait_s=ss.max_residence_times * tau_s + self._transit_s(plan.total_flow_ml_min),
            rel_tol=ss.rel_tol, abs_tol=ss.abs_tol_au)
        detector = SteadyStateDetector(criteria, t0)
        wavelength = p.analytics.steady_signal_wavelength_nm

        def steady(t: float) -> bool:
            a = self._read_signal(wavelength)
            if a is not None:
                self.state.detector_absorbance = a
                detector.update(t, a)
            if detector.timed_out(t):
                raise SteadyStateTimeout(
                    f"flow reactor: no steady state within {criteria.max_wait_s:.0f} s "
                    f"({ss.max_residence_times:g} residence times) at {cond}",
                    max_wait_s=criteria.max_wait_s)
            return detector.steady

        self._wait(criteria.max_wait_s + 1.0, until=steady, check_every_s=ss.sample_interval_s)
        self._time_to_steady_s = detector.steady_at_s - t0
        timings["steady_state"] = self._since_start()
        # measuring
        self._set_phase("measuring")
        conc = self._measure(p.steady_state.measure_s)
        fed = self._fed_concentrations(plan)
        conc_product = conc.get(p.analytics.product, 0.0)
        yield_fraction = conc_product / fed["dfnb"] if fed["dfnb"] > 0 else 0.0
        timings["measuring"] = self._since_start()
        vial = None
        if collect:
            self._set_phase("collecting")
            vial = self._collect(plan, collect_vial)
            timings["collecting"] = self._since_start()
        self._set_phase("flushing")
        self._flush(plan)
        timings["flushing"] = self._since_start()
        self._set_phase("idle")
        return ExperimentResult(
            experiment_id=experiment_id,
            conditions=asdict(cond),
            flows_ml_min=dict(plan.flows_ml_min),
            conc_m=conc,
            conc_dfnb_fed_m=fed["dfnb"],
            yield_fraction=float(yield_fraction),
            conc_product_m=float(conc_product),
            sty_kg_m3_h=float(max(space_time_yield_kg_m3_h(conc_product, cond.residence_time_min), 1e-6)),
            e_factor=float(e_factor(conc)),
            time_to_steady_state_s=float(self._time_to_steady_s),
            steady_signal_au=float(detector.steady_value or 0.0),
            reagent_used_ml=dict(self._used_ml),
            collected_vial=vial,
            timings_s=timings,
        )

    # --- phases --------------------------------------------------------------------------------
    def _wait_for_temperature(self, setpoint_c: float) -> None:
        band = min(1.0, self.params.interlocks.temp_band_c / 2)
        hold_s = 10.0
        inside_since: list[float | None] = [None]
        deadline = self.clock.now() + self.params.operation.heat_timeout_s

        def reached(t: float) -> bool:
            temp = self.state.temp_c
            if temp == temp and abs(temp - setpoint_c) <= band:
                if inside_since[0] is None:
                    inside_since[0] = t
                return t - inside_since[0] >= hold_s
            inside_since[0] = None
            if t > deadline:
                raise StepTimeout(f"thermostat: {temp:.1f} C not within {band} C of {setpoint_c} C after "
                                  f"{self.params.operation.heat_timeout_s:.0f} s", temp_c=temp)
            return False

        self._wait(self.params.operation.heat_timeout_s + hold_s + 1.0, until=reached)

    def _measure(self, duration_s: float) -> dict[str, float]:
        spectra = []

        def take(_t: float) -> bool:
            s = self._guarded("detector", self.detector.read_spectrum, level=logging.WARNING)
            if s is not None:
                spectra.append(np.interp(self.calibration.wavelengths_nm, s.wavelengths_nm, s.absorbance_au))
            return False

        interval = max(self.params.operation.poll_interval_s, duration_s / 10.0)
        self._wait(duration_s, until=take, check_every_s=interval)
        if not spectra:
            raise CommunicationTimeout("detector: no spectrum during the measurement", device="detector")
        return self.calibration.concentrations(np.mean(spectra, axis=0))

    def _collect(self, plan: FlowPlan, vial: str = "") -> str:
        op = self.params.operation
        # without a named vial, positions are used in turn; the robot takes each collected vial to
        # the HPLC, so a position is free again when its turn comes round
        index = op.collect_vial_ids.index(vial) if vial else self._next_vial % len(op.collect_positions)
        position = op.collect_positions[index]
        vial_id = op.collect_vial_ids[index]
        # the fluid at the valve left the detector this long ago
        self._wait(60.0 * self.params.reactor.collect_dead_volume_ml / plan.total_flow_ml_min)
        self._switch_valve(position)
        self._next_vial += 1
        self._wait(60.0 * op.collect_volume_ml / plan.total_flow_ml_min)
        self._switch_valve(op.waste_position)
        return vial_id

    def _flush(self, plan: FlowPlan) -> None:
        op, r = self.params.operation, self.params.reactor
        system_ml = r.volume_ml + r.detector_dead_volume_ml + r.collect_dead_volume_ml
        self._set_flows({"pump_ethanol": op.flush_flow_ml_min})
        self._wait(60.0 * op.flush_volumes * system_ml / op.flush_flow_ml_min)
        self._set_flows({})

    # --- device actions -------------------------------------------------------------------------
    def _set_flows(self, flows: Mapping[str, float]) -> None:
        """Set every pump: those in ``flows`` (> 0) run at that flow, the others stop.
        Pump limits were checked in ``plan``; the driver checks them again before sending."""
        for name, pump in self.pumps.items():
            flow = float(flows.get(name, 0.0))
            if flow > 0:
                pump.set_flow_ml_min(flow)
                if not pump.is_running():
                    pump.start()
            else:
                pump.stop()
            self._setpoints[name] = flow
        intent = self.monitor.intent
        intent.pumps_should_run = {n: q > 0 for n, q in self._setpoints.items()}
        intent.total_flow_ml_min = sum(self._setpoints.values())
        intent.flow_changed_at_s = self.clock.now()
        r = self.params.reactor
        intent.expected_pressure_bar = (r.bpr_pressure_bar + r.line_resistance_bar_per_ml_min
                                        * intent.total_flow_ml_min)
        self.monitor.reset_trace()
        self.state.pump_flow_setpoint_ml_min = dict(self._setpoints)

    def _switch_valve(self, position: int) -> None:
        self.monitor.intent.valve_position = None  # not judged while moving
        try:
            self.valve.switch_to(position)
            reported = self.valve.position()
        except CommunicationTimeout:
            raise
        except DeviceError as exc:
            raise InterlockTripped(il.VALVE, f"valve_collect did not confirm position {position}: {exc}",
                                   commanded=position) from exc
        if reported != position:
            raise InterlockTripped(il.VALVE, f"valve_collect: commanded position {position}, "
                                   f"valve reports {reported}", commanded=position, reported=reported)
        self.monitor.intent.valve_position = position
        self.state.valve_position = position

    def _read_signal(self, wavelength_nm: float) -> float | None:
        """Mean absorbance over +- ``signal_band_nm`` around ``wavelength_nm``: averaging the
        band's pixels keeps shot noise well below the steady-state tolerance."""
        band_nm = self.params.steady_state.signal_band_nm
        spectrum = self._guarded("detector", self.detector.read_spectrum)
        if spectrum is None:
            return None
        wl = np.asarray(spectrum.wavelengths_nm)
        band = np.abs(wl - wavelength_nm) <= band_nm
        if not band.any():
            return float(spectrum.at(wavelength_nm))
        return float(np.mean(np.asarray(spectrum.absorbance_au)[band]))

    def _fed_concentrations(self, plan: FlowPlan) -> dict[str, float]:
        total = plan.total_flow_ml_min
        stocks = self.params.stocks
        return {"dfnb": plan.flows_ml_min["pump_dfnb"] * stocks.dfnb_m / total,
                "pyrrolidine": plan.flows_ml_min["pump_pyrrolidine"] * stocks.pyrrolidine_m / total}

    # --- sampling and waiting -----------------------------------------------------------------
    def _guarded(self, name: str, fn: Callable[[], Any], level: int = logging.DEBUG) -> Any:
        """One device read; a failed read is None (the watchdog judges persistent silence: reads
        failing since the start of the first failed one)."""
        started = self.clock.now()
        try:
            value = fn()
        except (CommunicationTimeout, DeviceError) as exc:
            log.log(level, "%s read failed: %s", name, exc)
            self._failing_since.setdefault(name, started)
            return None
        self._last_ok[name] = self.clock.now()
        self._failing_since.pop(name, None)
        return value

    #: seconds between readings of each quantity (0: every poll). The system pressure is read
    #: every poll (over-pressure must stop the pumps within 100 ms); slower quantities less often,
    #: which keeps the serial lines free.
    SAMPLE_INTERVALS_S = {"pressure_sensor": 0.0, "pump_pressure": 0.25, "pump_running": 0.25,
                          "thermostat": 0.5, "valve": 1.0}

    def _due(self, key: str, t: float) -> bool:
        if t + 1e-9 >= self._next_read.get(key, -math.inf):
            self._next_read[key] = t + self.SAMPLE_INTERVALS_S[key]
            return True
        return False

    def sample(self, full: bool = False) -> il.ReactorSample:
        """Read the devices that are due (every device with ``full``) and update ``state``."""
        t = self.clock.now()
        s = il.ReactorSample(t_s=t)
        due = (lambda key: True) if full else (lambda key: self._due(key, t))  # noqa: E731
        if due("pressure_sensor"):
            p = self._guarded("pressure_sensor", self.pressure_sensor.read_pressure_bar)
            if p is not None:
                s.pressures_bar["pressure_sensor"] = float(p)
                self.state.pressure_bar = float(p)
        if due("pump_running"):
            flows = {}
            for name, pump in self.pumps.items():
                running = self._guarded(name, pump.is_running)
                if running is not None:
                    s.pumps_running[name] = bool(running)
                    flows[name] = self._setpoints[name] if running else 0.0
            self.state.pump_flow_ml_min = flows
        if due("pump_pressure"):
            for name, pump in self.pumps.items():
                pp = self._guarded(name, pump.read_pressure_bar)
                if pp is not None and pp == pp:
                    s.pressures_bar[name] = float(pp)
        if due("thermostat"):
            temp = self._guarded("thermostat", self.thermostat.read_temp_c)
            if temp is not None:
                s.temp_c = float(temp)
                self.state.temp_c = float(temp)
        if self.monitor.intent.valve_position is not None and due("valve"):
            pos = self._guarded("valve_collect", self.valve.position)
            if pos is not None:
                s.valve_position = int(pos)
                self.state.valve_position = int(pos)
        s.last_ok_s = {name: since for name, since in self._failing_since.items()
                       if name != "detector" or self.state.phase in ("equilibrating", "measuring")}
        self.state.t_s = t
        return s

    def _account(self, dt_s: float) -> None:
        for name, flow in self._setpoints.items():
            if flow > 0:
                stock = STOCK_OF_PUMP[name]
                used = flow * dt_s / 60.0
                self._used_ml[stock] = self._used_ml.get(stock, 0.0) + used
                self.stock_remaining_ml[stock] -= used

    def _wait(self, duration_s: float, until: Callable[[float], bool] | None = None,
              check_every_s: float | None = None) -> None:
        """Wait ``duration_s`` (or until ``until(t)`` is true), polling devices and interlocks."""
        poll = self.params.operation.poll_interval_s
        start = self.clock.now()
        next_check = start
        while True:
            if self._cancel.is_set():
                self.monitor.check_estop()  # an e-stop also cancels: say it was the e-stop
                raise Cancelled("flow experiment cancelled")
            sample = self.sample()
            self.monitor.check(sample)
            now = sample.t_s
            self._emit_feedback(now)
            if until is not None and now >= next_check - 1e-9:
                next_check = now + (check_every_s or 0.0)
                if until(now):
                    return
            remaining = start + duration_s - now
            if remaining <= 1e-9:
                return
            step = min(poll, remaining)
            self.clock.sleep(step)
            self._account(self.clock.now() - now)

    def _since_start(self) -> float:
        return self.clock.now() - self._run_t0

    def _set_phase(self, phase: str) -> None:
        self.state.phase = phase
        self._last_feedback_s = -math.inf
        self._emit_feedback(self.clock.now())

    def _emit_feedback(self, now: float) -> None:
        if self._feedback is None or now - self._last_feedback_s < self.feedback_interval_s:
            return
        self._last_feedback_s = now
        try:
            self._feedback(Feedback(self.state.phase, now - self._run_t0, self._time_to_steady_s,
                                    float(self.state.pressure_bar), float(self.state.temp_c)))
        except Exception as exc:  # a broken feedback channel must not stop the experiment
            log.warning("feedback callback failed: %r", exc)


def create_devices(params: FlowReactorParams, transports: Mapping[str, Any] | None = None,
                   clock: Clock | None = None) -> dict[str, Any]:
    """Build every device driver from the params (role by field, vendor plugin, port).

    ``transports`` (device name -> transport) replaces the serial port of those devices (the
    in-process twin); everything else opens its port, so a missing port fails here, naming it.
    Drivers that wait on their own (e.g. a valve confirming its move) get ``clock``. Nothing is
    sent to any device.
    """
    import inspect

    from .plugins import create_device, driver_class

    transports = transports or {}
    devices: dict[str, Any] = {}
    try:
        for name, role in DEVICE_ROLES.items():
            dp = getattr(params, name)
            options = dict(dp.options)
            if dp.baudrate:
                options["baudrate"] = dp.baudrate
            if clock is not None and "clock" in inspect.signature(driver_class(role, dp.vendor)).parameters:
                options["clock"] = clock
            devices[name] = create_device(role, dp.vendor, name=name, port=dp.port,
                                          transport=transports.get(name), **options)
    except Exception:
        for dev in devices.values():
            try:
                dev.close()
            except Exception:  # closing what was opened before the failure; the failure matters
                pass
        raise
    return devices
