"""The flow reactor's physical twin: mixing, dispersion, SnAr kinetics, dead volumes, pressure.

Flow path (the layout of a typical lab microreactor rig)::

    pump_dfnb (2.0 M DFNB) ------\\
    pump_pyrrolidine (4.2 M) -----+- mixer - [pressure sensor] - coil (thermostatted, reacting)
    pump_ethanol (make-up) ------/        - transfer line - UV-vis flow cell - BPR - transfer
                                            line - collection valve -> waste | vial 1 | vial 2 ...

Model:
- Mixing is ideal at the mixer: inlet concentration = flow-weighted stock concentrations.
- The coil is a chain of ``reactor_cells`` ideal stirred cells (tanks in series). With N cells the
  residence-time distribution has variance tau^2 / N, which is how axial (Taylor) dispersion in
  a coiled capillary looks from the outlet; N = 40 puts 99 % of a step change at the outlet after
  ~1.5 reactor volumes, so steady state is reached after roughly 1.5-3 reactor volumes.
  Each cell reacts with the SnAr rate laws (``sim.kinetics.snar.reaction_rates``) at the
  thermostat's actual internal temperature. Transport and reaction are integrated together
  (not split), so a steady state of the twin is exactly the steady state of the cell chain.
- Dead volumes (coil -> detector, detector -> valve) are chains of small non-reacting cells: they
  delay and slightly smear the signal (transit delays the controller has to respect).
- Pressure: the BPR holds the upstream pressure at its set point while fluid flows; the tubing
  adds a Hagen-Poiseuille drop, 128 mu L Q / (pi d^4), with ethanol's viscosity at the coil
  temperature (Andrade fit). A lumped compliance (tubing, pump heads, fluid) gives the pressure
  its dynamics, integrated implicitly: C dP/dt = Q_in - Q_leak(P) - Q_bpr(P).
  Faults: ``blockage`` (resistance x factor: pressure rises at ~Q/C), ``leak`` (an orifice
  before the coil: pressure below what the flow implies, and part of the feed lost).
- Collection: whatever reaches the valve goes to the vial at the valve's position (or waste);
  each vial accumulates moles and volume. When a vial stops receiving, its contents can be handed
  to the chromatograph emulator (``load_sample``), standing in for the robot carrying the vial.
  The vials outlive a restart of the twin (``state_dict`` / ``load_state_dict``).

``ReactorPhysics`` is the pure model (flows and temperature in, concentrations and pressure out);
``FlowReactorTwin`` is the twin subsystem that reads the pump/thermostat/valve emulators and
writes the detector, the pressure sensor, the pumps' pressure and the chromatograph's samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from sim.kinetics import snar

SPECIES = snar.SPECIES
_N_SPECIES = len(SPECIES)

# Ethanol viscosity, Andrade fit through 1.074 mPa s at 25 C and 0.694 mPa s at 50 C.
_ETHANOL_VISCOSITY_25C_PA_S = 1.074e-3
_ETHANOL_ANDRADE_B_K = 1683.0


def ethanol_viscosity_pa_s(temp_c: float) -> float:
    return _ETHANOL_VISCOSITY_25C_PA_S * math.exp(
        _ETHANOL_ANDRADE_B_K * (1.0 / (temp_c + 273.15) - 1.0 / 298.15))


def poiseuille_bar_per_ml_min(length_m: float, inner_diameter_mm: float, viscosity_pa_s: float) -> float:
    """Hagen-Poiseuille pressure drop per unit flow, in bar per (mL/min)."""
    d = inner_diameter_mm * 1e-3
    pa_per_m3_s = 128.0 * viscosity_pa_s * length_m / (math.pi * d ** 4)
    return pa_per_m3_s * (1e-6 / 60.0) / 1e5


@dataclass(frozen=True)
class ReactorTwinConfig:
    reactor_volume_ml: float = 3.0
    reactor_inner_diameter_mm: float = 0.8
    reactor_cells: int = 40
    detector_dead_volume_ml: float = 0.10      # coil outlet -> UV-vis flow cell
    collect_dead_volume_ml: float = 0.15       # flow cell -> BPR -> collection valve
    dead_volume_cell_ml: float = 0.01
    transfer_inner_diameter_mm: float = 0.5
    bpr_pressure_bar: float = 6.9              # 100 psi cartridge
    compliance_ml_per_bar: float = 0.005
    ambient_temp_c: float = 22.0
    # stock composition per feed (pump device name -> species -> mol/L); absent = pure solvent
    feeds: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: {
        "pump_dfnb": {"dfnb": snar.STOCK_DFNB_M},
        "pump_pyrrolidine": {"pyrrolidine": snar.STOCK_PYRROLIDINE_M},
        "pump_ethanol": {},
    })
    model: str = "current"

    @property
    def reactor_length_m(self) -> float:
        area_m2 = math.pi * (self.reactor_inner_diameter_mm * 1e-3) ** 2 / 4
        return self.reactor_volume_ml * 1e-6 / area_m2

    def transfer_length_m(self, volume_ml: float) -> float:
        area_m2 = math.pi * (self.transfer_inner_diameter_mm * 1e-3) ** 2 / 4
        return volume_ml * 1e-6 / area_m2


@dataclass
class Vial:
    """A collection vial: accumulated moles (mol) and volume (mL)."""

    moles: np.ndarray = field(default_factory=lambda: np.zeros(_N_SPECIES))
    volume_ml: float = 0.0

    def concentrations_m(self) -> dict[str, float]:
        if self.volume_ml <= 0:
            return {s: 0.0 for s in SPECIES}
        return {s: float(n / (self.volume_ml * 1e-3)) for s, n in zip(SPECIES, self.moles)}


class ReactorPhysics:
    """Pure reactor model. ``step(dt_s, feed_flows_ml_min, temp_c, valve_position)``."""

    def __init__(self, config: ReactorTwinConfig | None = None) -> None:
        self.config = cfg = config or ReactorTwinConfig()
        if cfg.model not in ("current", "published"):
            raise ValueError(f"unknown kinetics model {cfg.model!r}")
        self._stock = {name: np.array([float(comp.get(s, 0.0)) for s in SPECIES])
                       for name, comp in cfg.feeds.items()}
        n_det = max(1, round(cfg.detector_dead_volume_ml / cfg.dead_volume_cell_ml))
        n_col = max(1, round(cfg.collect_dead_volume_ml / cfg.dead_volume_cell_ml))
        self._cell_volume_ml = np.concatenate([
            np.full(cfg.reactor_cells, cfg.reactor_volume_ml / cfg.reactor_cells),
            np.full(n_det, cfg.detector_dead_volume_ml / n_det),
            np.full(n_col, cfg.collect_dead_volume_ml / n_col),
        ])
        self._n_reactor = cfg.reactor_cells
        self._detector_cell = cfg.reactor_cells + n_det - 1
        self.conc = np.zeros((_N_SPECIES, len(self._cell_volume_ml)))  # filled with solvent
        self.pressure_bar = 0.0
        self.temp_c = cfg.ambient_temp_c
        self.flow_in_ml_min = 0.0
        self.flow_through_ml_min = 0.0
        self.blockage_factor = 1.0
        self.leak_bar_per_ml_min: float | None = None  # resistance of the leak orifice
        self.vials: dict[int, Vial] = {}
        self._collecting_into: int | None = None
        self.waste_ml = 0.0
        self.time_s = 0.0
        self._k_cache: tuple[float, dict[str, float]] | None = None
        self._r_cache: tuple[tuple[float, float], float] | None = None

    # --- derived quantities -------------------------------------------------------------------
    def line_resistance_bar_per_ml_min(self, temp_c: float | None = None) -> float:
        """Pressure drop per flow from the mixer to the BPR (coil hot, transfer lines ambient)."""
        cfg = self.config
        # 0.01 C changes the viscosity by 0.02 %: cache per 0.01 C while the bath heats
        t = round(self.temp_c if temp_c is None else temp_c, 2)
        if self._r_cache is not None and self._r_cache[0] == (t, self.blockage_factor):
            return self._r_cache[1]
        coil = poiseuille_bar_per_ml_min(cfg.reactor_length_m, cfg.reactor_inner_diameter_mm,
                                         ethanol_viscosity_pa_s(t))
        transfer = poiseuille_bar_per_ml_min(
            cfg.transfer_length_m(cfg.detector_dead_volume_ml + cfg.collect_dead_volume_ml),
            cfg.transfer_inner_diameter_mm, ethanol_viscosity_pa_s(cfg.ambient_temp_c))
        r = (coil + transfer) * self.blockage_factor
        self._r_cache = ((t, self.blockage_factor), r)
        return r

    def expected_pressure_bar(self, flow_ml_min: float, temp_c: float) -> float:
        """Pressure at the mixer for a healthy system at this total flow and coil temperature."""
        if flow_ml_min <= 0:
            return self.config.bpr_pressure_bar
        return self.config.bpr_pressure_bar + self.line_resistance_bar_per_ml_min(temp_c) * flow_ml_min

    @property
    def reactor_outlet_m(self) -> np.ndarray:
        return self.conc[:, self._n_reactor - 1].copy()

    @property
    def detector_m(self) -> np.ndarray:
        return self.conc[:, self._detector_cell].copy()

    @property
    def valve_inlet_m(self) -> np.ndarray:
        return self.conc[:, -1].copy()

    @property
    def system_volume_ml(self) -> float:
        return float(self._cell_volume_ml.sum())

    def transit_volume_to_detector_ml(self) -> float:
        return float(self._cell_volume_ml[: self._detector_cell + 1].sum())

    # --- stepping ---------------------------------------------------------------------------
    def step(self, dt_s: float, feed_flows_ml_min: Mapping[str, float], temp_c: float,
             valve_position: int | None = None,
             collect_positions: frozenset[int] | set[int] = frozenset()) -> None:
        self.temp_c = temp_c
        q_in = float(sum(max(0.0, q) for q in feed_flows_ml_min.values()))
        self.flow_in_ml_min = q_in
        self._step_pressure(dt_s, q_in)
        leak = self.pressure_bar / self.leak_bar_per_ml_min if self.leak_bar_per_ml_min else 0.0
        q = max(0.0, q_in - leak)
        if self.blockage_factor >= 1e6:  # fully closed: nothing moves
            q = 0.0
        self.flow_through_ml_min = q
        inlet = np.zeros(_N_SPECIES)
        if q_in > 0:
            for name, flow in feed_flows_ml_min.items():
                if flow > 0 and name in self._stock:
                    inlet += self._stock[name] * flow
            inlet /= q_in
        outflow_m = self._step_transport_and_reaction(dt_s, q / 60.0, inlet, temp_c)
        out_ml = q / 60.0 * dt_s
        if valve_position is not None and valve_position in collect_positions:
            if valve_position != self._collecting_into:
                # a new collection: the robot took the previous vial at this position away
                self.vials[valve_position] = Vial()
            vial = self.vials[valve_position]
            vial.moles += outflow_m * out_ml * 1e-3
            vial.volume_ml += out_ml
        else:
            self.waste_ml += out_ml
        self._collecting_into = (valve_position if valve_position is not None
                                 and valve_position in collect_positions else None)
        self.time_s += dt_s

    def _rate_constants_per_s(self, temp_c: float) -> dict[str, float]:
        if self._k_cache is None or self._k_cache[0] != temp_c:
            k = snar.rate_constants_per_min(temp_c)
            self._k_cache = (temp_c, {name: float(v) / 60.0 for name, v in k.items()})
        return self._k_cache[1]

    def _step_transport_and_reaction(self, dt_s: float, q_ml_s: float, inlet: np.ndarray,
                                     temp_c: float) -> np.ndarray:
        exchange = q_ml_s / self._cell_volume_ml  # 1/s per cell
        nr = self._n_reactor
        # no amine, or nothing to substitute: no reaction (solvent-only priming, heating, flushing)
        c1_max = float(self.conc[1, :nr].max()) + float(inlet[1])
        reacting = c1_max > 0 and (float(inlet[0]) > 0 or float(self.conc[0, :nr].max()) > 0
                                   or float(self.conc[2:4, :nr].max()) > 0)
        fastest = float(exchange.max())
        if reacting:
            k_per_s = self._rate_constants_per_s(temp_c)
            fastest += (k_per_s["ka"] + k_per_s["kb"] + k_per_s["kc"]) * c1_max
        if fastest == 0.0:  # no flow, no reaction: nothing changes
            return self.conc[:, -1].copy()
        # explicit stepping; sub-steps keep it stable and accurate for fast flow or fast kinetics
        n_sub = max(1, math.ceil(dt_s * fastest / 0.4))
        h = dt_s / n_sub
        out_sum = np.zeros(_N_SPECIES)
        for _ in range(n_sub):
            upstream = np.empty_like(self.conc)
            upstream[:, 0] = inlet
            upstream[:, 1:] = self.conc[:, :-1]
            d = exchange * (upstream - self.conc)
            if reacting:
                snar.add_reaction_rates(self.conc[:, :nr], k_per_s, self.config.model, d[:, :nr])
            out_sum += self.conc[:, -1]
            self.conc += h * d
            np.maximum(self.conc, 0.0, out=self.conc)
        return out_sum / n_sub

    def _step_pressure(self, dt_s: float, q_in: float) -> None:
        """Implicit Euler on C dP/dt = Q_in - P/R_leak - max(0, P - P_bpr)/R_line."""
        cfg = self.config
        c = cfg.compliance_ml_per_bar * 60.0  # mL/bar -> (mL/min)*s/bar
        r_line = self.line_resistance_bar_per_ml_min()
        g_leak = 1.0 / self.leak_bar_per_ml_min if self.leak_bar_per_ml_min else 0.0
        g_line = 1.0 / r_line
        p0 = self.pressure_bar
        # assume the BPR is open (P >= P_bpr)
        p_open = (c / dt_s * p0 + q_in + g_line * cfg.bpr_pressure_bar) / (c / dt_s + g_leak + g_line)
        if p_open >= cfg.bpr_pressure_bar:
            self.pressure_bar = p_open
        else:  # BPR closed: only the leak lets fluid out
            self.pressure_bar = (c / dt_s * p0 + q_in) / (c / dt_s + g_leak)
            if self.pressure_bar > cfg.bpr_pressure_bar:
                self.pressure_bar = cfg.bpr_pressure_bar

    # --- faults -----------------------------------------------------------------------------
    def inject(self, fault: str, **kw: Any) -> None:
        if fault == "blockage":
            self.blockage_factor = float(kw.get("factor", 1e6))
        elif fault == "leak":
            self.leak_bar_per_ml_min = float(kw.get("resistance_bar_per_ml_min", 1.0))
        else:
            raise ValueError(f"reactor twin: unknown fault {fault!r}; supported: blockage, leak")

    def clear_faults(self) -> None:
        self.blockage_factor = 1.0
        self.leak_bar_per_ml_min = None


class FlowReactorTwin:
    """Twin subsystem: reactor physics wired to the device emulators (duck-typed, by name).

    ``emulators`` maps device names to emulator objects; ``roles`` says which name plays which
    part: ``pumps`` (names of the feed pumps, keys of ``config.feeds``), ``thermostat``, ``valve``,
    ``pressure_sensor``, ``detector``, ``chromatograph`` (each optional except the pumps).
    ``collect_positions`` maps valve positions to the vial ids the chromatograph will know them by.
    """

    def __init__(self, emulators: Mapping[str, Any], *, config: ReactorTwinConfig | None = None,
                 thermostat: str | None = "thermostat", valve: str | None = "valve_collect",
                 pressure_sensor: str | None = "pressure_sensor", detector: str | None = "detector",
                 chromatograph: str | None = None,
                 collect_positions: Mapping[int, str] | None = None,
                 step_emulators: bool = True) -> None:
        self.physics = ReactorPhysics(config)
        self.config = self.physics.config
        self.emulators = dict(emulators)
        self.pump_names = [n for n in self.config.feeds if n in self.emulators]
        missing = [n for n in self.config.feeds if n not in self.emulators]
        if missing:
            raise ValueError(f"reactor twin: no emulator for feed pump(s) {missing}")
        pick = lambda n: self.emulators.get(n) if n else None  # noqa: E731
        self.thermostat = pick(thermostat)
        self.valve = pick(valve)
        self.pressure_sensor = pick(pressure_sensor)
        self.detector = pick(detector)
        self.chromatograph = pick(chromatograph)
        self.collect_positions = dict(collect_positions or {2: "vial_1", 3: "vial_2", 4: "vial_3",
                                                            5: "vial_4", 6: "vial_5"})
        self.step_emulators = step_emulators
        self._last_collecting: int | None = None
        self.state_revision = 0  # counts vial events (a collection starts or ends): see state_dict
        self.pressure_history: list[tuple[float, float]] = []  # (t_s, bar), for interlock tests
        self.history_limit = 20000

    def pump(self, name: str) -> Any:
        return self.emulators[name]

    def _temp_c(self) -> float:
        if self.thermostat is None:
            return self.config.ambient_temp_c
        return float(self.thermostat.internal_temp_c)

    def step(self, t: float, dt: float) -> None:
        if self.step_emulators:
            for emu in self.emulators.values():
                step = getattr(emu, "step", None)
                if step is not None:
                    step(t, dt)
        flows = {}
        for name in self.pump_names:
            pump = self.emulators[name]
            flows[name] = float(pump.delivered_flow_ml_min) if getattr(pump, "running", True) else 0.0
        position = int(self.valve.position) if self.valve is not None else None
        self.physics.step(dt, flows, self._temp_c(), position, frozenset(self.collect_positions))
        self._publish(t + dt, position)

    def _publish(self, t_s: float, position: int | None) -> None:
        p = self.physics.pressure_bar
        for name in self.pump_names:
            setter = getattr(self.emulators[name], "set_system_pressure_bar", None)
            if setter is not None:
                setter(p)
        if self.pressure_sensor is not None:
            self.pressure_sensor.set_pressure_bar(p)
        if self.detector is not None:
            self.detector.set_concentrations_m(dict(zip(SPECIES, map(float, self.physics.detector_m))))
        self.pressure_history.append((t_s, p))
        if len(self.pressure_history) > self.history_limit:
            del self.pressure_history[: len(self.pressure_history) // 2]
        collecting = position if position in self.collect_positions else None
        if self._last_collecting is not None and collecting != self._last_collecting:
            self._hand_over_vial(self._last_collecting)
        if collecting != self._last_collecting:
            self.state_revision += 1
        self._last_collecting = collecting

    def _hand_over_vial(self, position: int) -> None:
        """The vial at ``position`` is done: the chromatograph's autosampler gets its contents."""
        vial = self.physics.vials.get(position)
        if vial is None or self.chromatograph is None:
            return
        self.chromatograph.load_sample(self.collect_positions[position], vial.concentrations_m())

    def vial_contents(self, position: int) -> dict[str, float]:
        vial = self.physics.vials.get(position)
        return vial.concentrations_m() if vial else {s: 0.0 for s in SPECIES}

    # --- state across a twin restart (sim.lab_twin.TwinStateStore) ---------------------------
    def state_dict(self) -> dict[str, Any]:
        """The collection vials by valve position (moles per species, volume): the chemistry a
        restarted twin must still hold. The fluid in the lines, the pressure and the devices are
        not kept: they restart in their power-on state (lines full of solvent, pumps stopped)."""
        return {"vials": {str(position): {"moles": {s: float(n) for s, n in zip(SPECIES, vial.moles)},
                                          "volume_ml": float(vial.volume_ml)}
                          for position, vial in self.physics.vials.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.physics.vials = {
            int(position): Vial(np.array([float(v["moles"].get(s, 0.0)) for s in SPECIES]), float(v["volume_ml"]))
            for position, v in dict(state.get("vials") or {}).items()}

    def inject(self, fault: str, **kw: Any) -> None:
        self.physics.inject(fault, **kw)

    def clear_faults(self) -> None:
        self.physics.clear_faults()


#: Emulator per device of the standard rig (import path, keyword arguments).
DEFAULT_EMULATORS: dict[str, dict[str, Any]] = {
    "pump_dfnb": {"class": "sim.emulators.ssi_pump:SSIPumpEmulator", "kwargs": {}},
    "pump_pyrrolidine": {"class": "sim.emulators.ssi_pump:SSIPumpEmulator", "kwargs": {}},
    "pump_ethanol": {"class": "sim.emulators.ssi_pump:SSIPumpEmulator", "kwargs": {}},
    "thermostat": {"class": "sim.emulators.huber_thermostat:HuberThermostatEmulator", "kwargs": {}},
    "valve_collect": {"class": "sim.emulators.vici_actuator:ViciActuatorEmulator", "kwargs": {}},
    "pressure_sensor": {"class": "sim.emulators.keller_transmitter:KellerTransmitterEmulator", "kwargs": {}},
    "detector": {"class": "sim.emulators.ocean_detector:OceanDetectorEmulator", "kwargs": {}},
}


def _import(target: str) -> Any:
    import importlib

    module_name, attr = target.split(":", 1)
    return getattr(importlib.import_module(module_name), attr)


def build_flow_reactor_twin(emulators: Mapping[str, Mapping[str, Any]] | None = None,
                            reactor: Mapping[str, Any] | None = None,
                            roles: Mapping[str, str | None] | None = None,
                            collect_positions: Mapping[int | str, str] | None = None,
                            emulator_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                            seed: int = 0) -> FlowReactorTwin:
    """Twin subsystem factory (``sim.lab_twin`` plugin ``sim.reactor_twin:build_flow_reactor_twin``).

    ``emulators``: device name -> {"class": "module:Class", "kwargs": {...}} (defaults:
    ``DEFAULT_EMULATORS``); ``reactor``: ``ReactorTwinConfig`` fields; ``roles``: which device is
    the thermostat, valve, pressure sensor, detector, chromatograph; ``emulator_kwargs``: extra
    keyword arguments per device on top of the specs (e.g. a faster thermostat for a test).
    """
    specs = dict(DEFAULT_EMULATORS if emulators is None else emulators)
    built = {}
    for i, (name, spec) in enumerate(specs.items()):
        cls = _import(spec["class"])
        kwargs = dict(spec.get("kwargs") or {})
        kwargs.update((emulator_kwargs or {}).get(name, {}))
        kwargs.setdefault("seed", seed + i)
        built[name] = cls(name, **kwargs)
    cfg_kw = dict(reactor or {})
    if "feeds" in cfg_kw:
        cfg_kw["feeds"] = {k: dict(v) for k, v in cfg_kw["feeds"].items()}
    config = ReactorTwinConfig(**cfg_kw)
    role_names = {"thermostat": "thermostat", "valve": "valve_collect", "pressure_sensor": "pressure_sensor",
                  "detector": "detector", "chromatograph": "chromatograph"}
    role_names.update(roles or {})
    picked = {role: (name if name in built else None) for role, name in role_names.items()}
    positions = {int(k): v for k, v in collect_positions.items()} if collect_positions else None
    return FlowReactorTwin(built, config=config, collect_positions=positions, **picked)
