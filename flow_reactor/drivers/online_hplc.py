"""An online HPLC with a valve-based autosampler, assembled from devices with documented protocols.

No HPLC maker publishes a serial remote-control protocol for its integrated systems that we could
verify (they are driven through their chromatography data systems), so the ``Chromatograph`` role
is filled by an at-line HPLC built from instruments whose protocols are documented and already
driven here, the way flow-chemistry labs build online analysis:

- sample selection: a VICI Valco universal actuator on a multiposition selector valve (one sample
  line per vial position; ``vici_valco.ViciUniversalActuator``);
- loop filling: a New Era NE-1000 syringe pump withdrawing through the sample loop
  (``new_era.NewEraSyringePump``, RS-232 Basic mode);
- injection: a VICI universal actuator in two-position mode on a Cheminert injection valve
  (A = load, B = inject; ``vici_valco.ViciTwoPositionValve``);
- mobile phase: a Teledyne SSI Series III pump (``teledyne_ssi.SSIPump``);
- detection: an Ocean Insight OBP spectrometer on the column outlet (``ocean_obp.OceanOBPDetector``),
  sampled at the detection wavelength to record the chromatogram.

``inject(vial)`` selects the vial, draws ``flush_volume_ul`` + the loop volume through the loop,
switches to inject (t = 0 of the run: the moment the inject command went out, not its later
confirmation); ``run()`` records absorbance (mAU) against time for the run time on the injected
clock, leaving out readings whose time is uncertain by more than ``max_sample_skew_s`` (the host
stalled around the exchange), then returns the valve to load; ``read_chromatogram()`` returns it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import numpy as np

from aichemist.clock import Clock, WallClock
from aichemist.errors import AIChemistError, DeviceError, LimitError

from ..roles import Chromatogram
from .base import check_range

log = logging.getLogger(__name__)

COMPONENTS = {
    "selector": ("valve", "vici_universal"),
    "injector": ("valve", "vici_two_position"),
    "loop_pump": ("pump", "new_era"),
    "pump": ("pump", "teledyne_ssi"),
    "detector": ("detector", "ocean_obp"),
}


class OnlineHPLC:
    """Chromatograph role over five component drivers (see the module docstring).

    ``vial_positions`` maps autosampler vial ids to selector positions. ``loop_volume_ul`` is the
    injection loop; ``inject`` accepts volumes up to it (partial-loop filling).
    """

    vendor = "online HPLC (VICI Valco, New Era, Teledyne SSI, Ocean Insight)"

    def __init__(self, name: str, *, selector, injector, loop_pump, pump, detector,
                 vial_positions: Mapping[str, int] | None = None, loop_volume_ul: float = 1.0,
                 flush_volume_ul: float = 20.0, load_rate_ul_min: float = 120.0,
                 mobile_phase_flow_ml_min: float = 1.0, detection_wavelength_nm: float = 254.0,
                 run_time_min: float = 8.0, sample_interval_s: float = 0.5,
                 max_sample_skew_s: float | None = None, clock: Clock | None = None) -> None:
        self.name = name
        self.selector, self.injector, self.loop_pump = selector, injector, loop_pump
        self.pump, self.detector = pump, detector
        self.vial_positions = dict(vial_positions or {f"vial_{i}": i for i in range(1, selector.num_positions + 1)})
        bad = {v: p for v, p in self.vial_positions.items() if not 1 <= p <= selector.num_positions}
        if bad:
            raise ValueError(f"{name}: vial positions outside the selector's 1..{selector.num_positions}: {bad}")
        self.loop_volume_ul = float(loop_volume_ul)
        self.flush_volume_ul = float(flush_volume_ul)
        self.load_rate_ul_min = float(load_rate_ul_min)
        self.mobile_phase_flow_ml_min = float(mobile_phase_flow_ml_min)
        self.detection_wavelength_nm = float(detection_wavelength_nm)
        self.run_time_min = float(run_time_min)
        self.sample_interval_s = float(sample_interval_s)
        #: a reading that took longer than this (clock time) is left out of the chromatogram
        self.max_sample_skew_s = float(2.0 * self.sample_interval_s if max_sample_skew_s is None
                                       else max_sample_skew_s)
        self.clock = clock or WallClock()
        #: checked between readings and while the loop fills: returns the error (an e-stop, a
        #: cancel) that ends the run at once, the pumps stopped
        self.should_stop: Callable[[], AIChemistError | None] = lambda: None
        self._injected: tuple[str, float, float] | None = None  # (vial, volume_ul, t0)
        self._acquiring = False
        self._last: Chromatogram | None = None

    @classmethod
    def from_components(cls, name: str, *, components: Mapping[str, Mapping[str, Any]],
                        clock: Clock | None = None, **options: Any) -> "OnlineHPLC":
        """Build from config: ``components`` = {part: {"vendor": ..., "port": ..., "options": {...}}}."""
        from ..plugins import create_device  # late: plugins imports this module lazily too

        missing = sorted(set(COMPONENTS) - set(components))
        if missing:
            raise ValueError(f"{name}: online HPLC components missing: {missing}")
        parts = {}
        for part, (role, default_vendor) in COMPONENTS.items():
            spec = dict(components[part])
            opts = dict(spec.get("options") or {})
            if part in ("selector", "injector") and clock is not None:
                opts.setdefault("clock", clock)
            parts[part] = create_device(role, spec.get("vendor", default_vendor), name=f"{name}_{part}",
                                        port=spec.get("port"), transport=spec.get("transport"), **opts)
        return cls(name, clock=clock, **parts, **options)

    @property
    def parts(self) -> dict[str, Any]:
        return {"selector": self.selector, "injector": self.injector, "loop_pump": self.loop_pump,
                "pump": self.pump, "detector": self.detector}

    # --- lifecycle ---------------------------------------------------------------------------
    def connect(self) -> None:
        for part in self.parts.values():
            part.connect()
        self.pump.set_flow_ml_min(self.mobile_phase_flow_ml_min)

    def identify(self) -> str:
        return "; ".join(f"{part}: {dev.identify()}" for part, dev in self.parts.items())

    def close(self) -> None:
        for part in self.parts.values():
            part.close()

    def safe_state(self) -> None:
        """Pumps stopped (valves hold their positions)."""
        for part in (self.loop_pump, self.pump):
            try:
                part.safe_state()
            except Exception as exc:  # safe_state must try every part
                log.error("%s: safe state of %s failed: %s", self.name, part.name, exc)
        self._acquiring = False

    # --- role: Chromatograph -----------------------------------------------------------------
    def inject(self, vial: str, volume_ul: float | None = None) -> None:
        volume = self.loop_volume_ul if volume_ul is None else volume_ul
        if vial not in self.vial_positions:
            raise LimitError("vial", vial, sorted(self.vial_positions), device=self.name)
        volume = check_range(self.name, "volume_ul", volume, 0.01, self.loop_volume_ul, "µL")
        if self._acquiring:
            raise DeviceError(f"{self.name}: a run is in progress; call run() first", device=self.name)
        if not self.pump.is_running():
            self.pump.set_flow_ml_min(self.mobile_phase_flow_ml_min)
            self.pump.start()
        self.injector.load()
        self.selector.switch_to(self.vial_positions[vial])
        # draw the line's old contents plus the sample volume through the loop
        draw_ul = self.flush_volume_ul + volume
        self.loop_pump.set_direction("WDR")
        self.loop_pump.set_flow_ml_min(self.load_rate_ul_min / 1000.0)
        self.loop_pump.start()
        self._sleep(60.0 * draw_ul / self.load_rate_ul_min)
        self.loop_pump.stop()
        self.injector.inject()
        # t = 0 of the run is when the inject command went out, not when its confirmation came back:
        # on a busy host (or in a twin running 20-60x real time) the confirmation can lag by seconds,
        # and a late t = 0 shifts every peak against its integration window
        t0 = getattr(self.injector, "commanded_at_s", None)
        self._injected = (vial, volume, self.clock.now() if t0 is None else t0)
        self._acquiring = True

    def run(self, run_time_min: float | None = None) -> None:
        if self._injected is None or not self._acquiring:
            raise DeviceError(f"{self.name}: nothing injected", device=self.name)
        run_min = self.run_time_min if run_time_min is None else check_range(
            self.name, "run_time_min", run_time_min, 0.1, 120.0, "min")
        vial, volume, t0 = self._injected
        times, signal = [], []
        skew_s = self.max_sample_skew_s
        dropped = 0
        try:
            while True:
                t = self.clock.now() - t0
                value = 1000.0 * self.detector.read_absorbance(self.detection_wavelength_nm)
                # a reading whose time is uncertain (the host stalled around the exchange) would
                # put the signal at the wrong time on the chromatogram: leave the point out
                if self.clock.now() - t0 - t <= skew_s:
                    times.append(t / 60.0)
                    signal.append(value)
                else:
                    dropped += 1
                if t >= 60.0 * run_min:
                    break
                self._sleep(min(self.sample_interval_s, 60.0 * run_min - t))
        finally:
            self._acquiring = False
        if dropped:
            log.info("%s: %d of %d readings left out (time uncertain by more than %.2f s)", self.name,
                     dropped, dropped + len(times), skew_s)
        self.injector.load()
        self._last = Chromatogram(sample_id=vial, times_min=np.asarray(times), signal_mau=np.asarray(signal),
                                  detection_wavelength_nm=self.detection_wavelength_nm,
                                  metadata={"injection_volume_ul": volume, "run_time_min": run_min,
                                            "flow_ml_min": self.mobile_phase_flow_ml_min,
                                            "readings_left_out": dropped})

    def _sleep(self, seconds: float) -> None:
        """Wait on the clock in short steps, stopping (pumps off) as soon as ``should_stop`` says so."""
        end = self.clock.now() + seconds
        while True:
            stop = self.should_stop()
            if stop is not None:
                self.safe_state()
                raise stop
            left = end - self.clock.now()
            if left <= 0:
                return
            self.clock.sleep(min(left, self.sample_interval_s))

    def read_chromatogram(self) -> Chromatogram:
        if self._last is None:
            raise DeviceError(f"{self.name}: no finished run yet", device=self.name)
        return self._last

    def is_running(self) -> bool:
        return self._acquiring

    def __repr__(self) -> str:
        return f"OnlineHPLC({self.name!r}, vials={len(self.vial_positions)})"
