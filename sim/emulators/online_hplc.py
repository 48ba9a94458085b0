"""Emulator of the online HPLC: selector valve, loop syringe pump, injection valve, mobile-phase
pump and post-column detector, each a byte-level emulator of its own device on its own port, tied
together by the fluidics and a column model.

Each part is the emulator of its maker's protocol (``vici_actuator``, ``new_era_pump``,
``ssi_pump``, ``ocean_detector``); ``emulators`` lists them by port name for the twin's pty host.

Physics:
- ``load_sample(vial_id, {species: M})`` puts a vial at its selector position (the robot placed it
  in the rack; the twin's reactor hands over collected vials this way);
- the sample line plus loop is a plug: the loop holds the vial's liquid once the syringe has drawn
  ``line_volume_ul`` + the loop volume since the selector last moved (less: the loop holds old
  solvent, i.e. nothing);
- switching the injection valve A -> B injects the loop: each species elutes as a gaussian peak at
  its retention time (``RETENTION_MIN`` at 1 mL/min, scaled by 1/flow) with width ``peak_sigma_s``;
  the peak area (concentration x time in the flow cell) is moles / flow, so the detector's
  absorbance area is proportional to the vial's concentration (Beer-Lambert in the detector);
- baseline noise comes from the detector emulator (shot and read noise, seeded), plus a slow drift.

State: ``state_dict()`` / ``load_state_dict()`` keep the rack (vial names, positions, contents)
across a restart of the twin.

Faults: route any fault to one part with ``inject(fault, part="detector", **kw)`` (default part:
the detector), e.g. ``inject("no_reply", part="injector")``. ``slow_reply`` (``delay_s``, wall
seconds) makes a part's answers come late, as a slow link or a host that is late to read them does;
the twin runs on meanwhile (at 50x real time, 0.3 s late is 15 s of simulated time).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from .new_era_pump import NewEraPumpEmulator
from .ocean_detector import OceanDetectorEmulator
from .ssi_pump import SSIPumpEmulator
from .vici_actuator import ViciActuatorEmulator

#: retention time (min) of each species at 1 mL/min on the emulated C18 column
RETENTION_MIN = {"pyrrolidine": 1.15, "dfnb": 3.40, "ortho": 4.60, "para": 5.35, "bis": 6.50}


class OnlineHPLCEmulator:
    def __init__(self, name: str = "hplc", *, num_vials: int = 8, loop_volume_ul: float = 1.0,
                 line_volume_ul: float = 15.0, peak_sigma_s: float = 8.0, detector_path_cm: float = 0.05,
                 drift_mau_per_min: float = 0.05, vial_positions: Mapping[str, int] | None = None,
                 seed: int = 0) -> None:
        self.name = name
        n = num_vials + (num_vials % 2)  # VICI selectors have an even number of positions
        self.selector = ViciActuatorEmulator(f"{name}_selector", num_positions=n, seed=seed)
        self.injector = ViciActuatorEmulator(f"{name}_injector", mode=1, seed=seed + 1)
        self.loop_pump = NewEraPumpEmulator(f"{name}_loop_pump", syringe_volume_ml=1.0,
                                            stall_pressure_bar=1e9, seed=seed + 2)
        self.pump = SSIPumpEmulator(f"{name}_pump", seed=seed + 3)
        self.detector = OceanDetectorEmulator(f"{name}_detector", path_length_cm=detector_path_cm,
                                              dilution_factor=1.0, seed=seed + 4)
        self.loop_volume_ul = loop_volume_ul
        self.line_volume_ul = line_volume_ul
        self.peak_sigma_s = peak_sigma_s
        self.drift_mau_per_min = drift_mau_per_min
        self.vial_positions: dict[str, int] = dict(vial_positions or {})
        self.vials: dict[int, dict[str, float]] = {}
        self.injections: list[dict[str, Any]] = []
        self.t_s = 0.0
        self._last_selector = self.selector.position
        self._drawn_ul = 0.0
        self._last_withdrawn_ml = 0.0
        self._last_injector = self.injector.position
        self._reply_delay_s: dict[str, float] = {}
        self.state_revision = 0  # counts vials placed (see state_dict)

    @property
    def emulators(self) -> dict[str, Any]:
        """Port name -> byte emulator, for the twin's pty host."""
        return {e.name: e for e in (self.selector, self.injector, self.loop_pump, self.pump, self.detector)}

    # --- physical side -----------------------------------------------------------------------
    def load_sample(self, vial_id: str, conc_m: Mapping[str, float]) -> int:
        """Place a vial (contents in mol/L) in the rack; returns its selector position."""
        position = self.vial_positions.get(vial_id)
        if position is None:
            used = set(self.vial_positions.values())
            free = [p for p in range(1, self.selector.num_positions + 1) if p not in used]
            if not free:
                raise ValueError(f"{self.name}: no free vial position for {vial_id!r}")
            position = free[0]
            self.vial_positions[vial_id] = position
        self.vials[position] = {s: float(c) for s, c in conc_m.items()}
        self.state_revision += 1
        return position

    # --- state across a twin restart (sim.lab_twin.TwinStateStore) ---------------------------
    def state_dict(self) -> dict[str, Any]:
        """The autosampler: which vial name is at which position and what each vial holds.
        Runs in progress and the devices' states are not kept (power-on state after a restart)."""
        return {"vial_positions": dict(self.vial_positions),
                "vials": {str(position): dict(conc) for position, conc in self.vials.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.vial_positions.update({str(k): int(v) for k, v in dict(state.get("vial_positions") or {}).items()})
        self.vials = {int(position): {s: float(c) for s, c in dict(conc).items()}
                      for position, conc in dict(state.get("vials") or {}).items()}

    def loop_contents(self) -> dict[str, float]:
        """What the loop holds now (mol/L): the selected vial once enough has been drawn."""
        if self._drawn_ul >= self.line_volume_ul + self.loop_volume_ul:
            return dict(self.vials.get(self.selector.position, {}))
        return {}

    def step(self, t: float, dt: float) -> None:
        for emu in self.emulators.values():
            emu.step(t, dt)
        self.t_s = t + dt
        if self.selector.position != self._last_selector:
            self._last_selector = self.selector.position
            self._drawn_ul = 0.0
        withdrawn = self.loop_pump.volume_withdrawn_ml
        self._drawn_ul += max(0.0, withdrawn - self._last_withdrawn_ml) * 1000.0
        self._last_withdrawn_ml = withdrawn
        if self._last_injector == 1 and self.injector.position == 2:
            self._inject(self.t_s)
        self._last_injector = self.injector.position
        self.detector.set_concentrations_m(self.flow_cell_concentrations(self.t_s))
        if self.injections:  # slow baseline drift during a run
            minutes = (self.t_s - self.injections[-1]["t_s"]) / 60.0
            self.detector.baseline_au = self.drift_mau_per_min * minutes / 1000.0

    def _inject(self, t_s: float) -> None:
        flow_ml_min = self.pump.delivered_flow_ml_min
        moles = {s: c * self.loop_volume_ul * 1e-6 for s, c in self.loop_contents().items()}
        self.injections.append({"t_s": t_s, "moles": moles, "flow_ml_min": flow_ml_min})

    def flow_cell_concentrations(self, t_s: float) -> dict[str, float]:
        conc = {s: 0.0 for s in RETENTION_MIN}
        for inj in self.injections:
            flow = inj["flow_ml_min"]
            if flow <= 0:
                continue  # nothing elutes without mobile phase
            flow_l_s = flow / 60_000.0
            for species, n in inj["moles"].items():
                if species not in RETENTION_MIN or n <= 0:
                    continue
                t_r = 60.0 * RETENTION_MIN[species] / flow
                sigma = self.peak_sigma_s / flow
                x = (t_s - inj["t_s"] - t_r) / sigma
                if abs(x) < 8:
                    conc[species] += n / flow_l_s * np.exp(-0.5 * x * x) / (sigma * np.sqrt(2 * np.pi))
        return conc

    # --- faults ------------------------------------------------------------------------------
    def inject(self, fault: str, part: str = "detector", **kw: Any) -> None:
        emulator = getattr(self, part)
        if fault != "slow_reply":
            emulator.inject(fault, **kw)
            return
        delay_s = float(kw.get("delay_s", 0.3))
        if not 0.0 < delay_s <= 5.0:
            raise ValueError(f"{self.name}: slow_reply delay_s must be in (0, 5] s, got {delay_s}")
        if part not in self._reply_delay_s:
            feed = emulator.feed

            def late_feed(data: bytes, _feed=feed, _part=part) -> bytes:
                reply = _feed(data)  # answered under the emulator's lock; the wait is outside it
                delay = self._reply_delay_s.get(_part, 0.0)
                if reply and delay > 0:
                    time.sleep(delay)
                return reply

            emulator.feed = late_feed
        self._reply_delay_s[part] = delay_s

    def clear_faults(self) -> None:
        self._reply_delay_s = {part: 0.0 for part in self._reply_delay_s}
        for emu in self.emulators.values():
            emu.clear_faults()


def build_online_hplc(name: str = "hplc", seed: int = 0, **params: Any) -> OnlineHPLCEmulator:
    """Twin subsystem factory (``sim.lab_twin`` plugin ``sim.emulators.online_hplc:build_online_hplc``).

    The emulator is itself a twin subsystem: ``step(t, dt)`` advances its five devices and the
    column, ``emulators`` names their ports (``<name>_selector``, ``<name>_injector``,
    ``<name>_loop_pump``, ``<name>_pump``, ``<name>_detector``) for the pty host. Point the reactor
    twin's ``chromatograph`` at it so collected vials reach its rack (``load_sample``).
    """
    return OnlineHPLCEmulator(name, seed=seed, **params)
