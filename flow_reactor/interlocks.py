"""Interlocks of the flow reactor: conditions that stop the process and make it safe.

The controller samples the devices every ``poll_interval_s`` (50 ms by default) and hands each
sample (``ReactorSample``) to ``InterlockMonitor.check``; a tripped interlock raises a typed error
and the controller drives every device to its safe state (pumps stopped, thermostat to its safe
temperature and off) before the error leaves it. Interlocks:

- ``over_pressure``: any pressure reading above ``max_pressure_bar``;
- ``blockage``: pressure rising faster than ``max_pressure_rise_bar_s`` over
  ``rise_window_s`` while the flow setpoints are unchanged, or above the expected pressure for the
  flow by more than ``blockage_margin_bar`` (a pump stalling against a blockage);
- ``pump_stall``: a pump that should run reports it is not running (motor stall, its own
  pressure-limit stop);
- ``leak``: pressure below ``bpr_pressure_bar - leak_margin_bar`` once the flow has had
  ``settle_s`` to build it: the flow goes somewhere other than through the BPR;
- ``temperature``: thermostat temperature outside setpoint +- ``temp_band_c`` once it was reached;
- ``valve``: the valve reports a position other than the one commanded;
- ``communication``: a device's reads failing for ``watchdog_s`` (watchdog; counted from the start
  of the first failed read, so a controller that did not poll, e.g. on a stalled host, trips nothing);
- ``estop``: the e-stop (topic or call), raised as ``EmergencyStop``.

Pure logic on samples: no clock, no devices, so each rule is unit-tested on numbers and again in
the twin.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from aichemist.errors import EmergencyStop, InterlockTripped


# Interlock names (InterlockTripped.interlock). One error type crosses the ROS boundary
# (InterlockTripped, rebuilt by name on the planner's side); the name says which interlock.
OVER_PRESSURE = "over_pressure"
BLOCKAGE = "blockage"
PUMP_STALL = "pump_stall"
LEAK = "leak"
TEMPERATURE = "temperature"
VALVE = "valve"
COMMUNICATION = "communication"


@dataclass(frozen=True)
class InterlockLimits:
    max_pressure_bar: float = 20.0
    bpr_pressure_bar: float = 6.9
    blockage_margin_bar: float = 5.0
    max_pressure_rise_bar_s: float = 4.0
    rise_window_s: float = 0.3
    leak_margin_bar: float = 2.5
    settle_s: float = 5.0
    temp_band_c: float = 3.0
    watchdog_s: float = 1.0


@dataclass
class ReactorSample:
    """One reading of the reactor. ``None`` means "not read in this sample"."""

    t_s: float
    pressures_bar: dict[str, float] = field(default_factory=dict)     # device -> bar
    pumps_running: dict[str, bool] = field(default_factory=dict)      # device -> reported
    temp_c: float | None = None
    valve_position: int | None = None
    # device -> since when it has been silent (start of its first failed read since the last good
    # one); devices that answer are absent or at t_s. Time the controller did not poll (a stalled
    # host) is not silence: the watchdog holds in a twin at 50x real time (10 s = 0.2 s of wall).
    last_ok_s: dict[str, float] = field(default_factory=dict)


@dataclass
class ProcessIntent:
    """What the controller has commanded, against which samples are judged."""

    pumps_should_run: dict[str, bool] = field(default_factory=dict)
    total_flow_ml_min: float = 0.0
    flow_changed_at_s: float = 0.0
    expected_pressure_bar: float | None = None
    temp_setpoint_c: float | None = None
    temp_reached: bool = False          # temperature band is enforced only once reached
    valve_position: int | None = None


class InterlockMonitor:
    def __init__(self, limits: InterlockLimits) -> None:
        self.limits = limits
        self.intent = ProcessIntent()
        self._pressure_trace: deque[tuple[float, float]] = deque()
        self.estop_reason: str | None = None

    def reset_trace(self) -> None:
        self._pressure_trace.clear()

    def trigger_estop(self, reason: str) -> None:
        """Latch the e-stop; the next ``check`` raises EmergencyStop (thread-safe enough: one
        assignment)."""
        self.estop_reason = reason or "e-stop"

    def clear_estop(self) -> None:
        self.estop_reason = None

    def check_estop(self) -> None:
        if self.estop_reason is not None:
            raise EmergencyStop(f"emergency stop: {self.estop_reason}", reason=self.estop_reason)

    def check(self, s: ReactorSample) -> None:
        """Raise the first interlock ``s`` trips (most severe first)."""
        lim, intent = self.limits, self.intent
        self.check_estop()
        stale = {dev: s.t_s - t for dev, t in s.last_ok_s.items() if s.t_s - t > lim.watchdog_s}
        pressures = {d: p for d, p in s.pressures_bar.items() if p is not None and p == p}
        if pressures:
            device, p_max = max(pressures.items(), key=lambda kv: kv[1])
            if p_max > lim.max_pressure_bar:
                raise InterlockTripped(
                    OVER_PRESSURE,
                    f"over-pressure: {device} reads {p_max:.2f} bar > limit {lim.max_pressure_bar:.2f} bar",
                    device=device, pressure_bar=p_max, limit_bar=lim.max_pressure_bar)
        if stale:
            device = max(stale, key=stale.get)
            raise InterlockTripped(
                COMMUNICATION,
                f"communication lost: no valid reply from {device} for {stale[device]:.2f} s "
                f"(watchdog {lim.watchdog_s:.2f} s)", device=device, silent_s=stale[device])
        for device, should in intent.pumps_should_run.items():
            if should and s.pumps_running.get(device) is False:
                raise InterlockTripped(
                    PUMP_STALL, f"pump stall: {device} stopped while it should deliver flow", device=device)
        if pressures:
            self._check_pressure_trend(s.t_s, p_max, device)
        if (intent.temp_setpoint_c is not None and intent.temp_reached and s.temp_c is not None
                and abs(s.temp_c - intent.temp_setpoint_c) > lim.temp_band_c):
            raise InterlockTripped(
                TEMPERATURE,
                f"temperature out of band: {s.temp_c:.2f} C, setpoint {intent.temp_setpoint_c:.2f} "
                f"+- {lim.temp_band_c:.2f} C", temp_c=s.temp_c, setpoint_c=intent.temp_setpoint_c)
        if (intent.valve_position is not None and s.valve_position is not None
                and s.valve_position != intent.valve_position):
            raise InterlockTripped(
                VALVE,
                f"valve position not confirmed: commanded {intent.valve_position}, "
                f"valve reports {s.valve_position}", commanded=intent.valve_position,
                reported=s.valve_position)

    def _check_pressure_trend(self, t_s: float, p_bar: float, device: str) -> None:
        lim, intent = self.limits, self.intent
        trace = self._pressure_trace
        trace.append((t_s, p_bar))
        while trace and trace[0][0] < t_s - lim.rise_window_s:
            trace.popleft()
        flowing = intent.total_flow_ml_min > 0 and any(intent.pumps_should_run.values())
        if not flowing:
            return
        # only once the flow has settled: pressurising after a flow change is a legitimate rise
        settled = t_s - intent.flow_changed_at_s >= lim.settle_s
        if not settled:
            return
        expected = intent.expected_pressure_bar
        if expected is not None and p_bar > expected + lim.blockage_margin_bar:
            raise InterlockTripped(
                BLOCKAGE,
                f"blockage: {device} reads {p_bar:.2f} bar, expected {expected:.2f} bar at "
                f"{intent.total_flow_ml_min:.3f} mL/min", device=device, pressure_bar=p_bar,
                expected_bar=expected)
        t_first, p_first = trace[0]
        span = t_s - t_first
        if span >= 0.8 * lim.rise_window_s and p_bar > lim.bpr_pressure_bar:
            rate = (p_bar - p_first) / span
            if rate > lim.max_pressure_rise_bar_s:
                raise InterlockTripped(
                    BLOCKAGE,
                    f"blockage: pressure rising {rate:.1f} bar/s at {p_bar:.2f} bar with unchanged flow "
                    f"({device})", device=device, rise_bar_s=rate, pressure_bar=p_bar)
        if p_bar < lim.bpr_pressure_bar - lim.leak_margin_bar:
            raise InterlockTripped(
                LEAK,
                f"leak: {device} reads {p_bar:.2f} bar at {intent.total_flow_ml_min:.3f} mL/min; the "
                f"back-pressure regulator alone holds {lim.bpr_pressure_bar:.2f} bar",
                device=device, pressure_bar=p_bar, bpr_bar=lim.bpr_pressure_bar)
