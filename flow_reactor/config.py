"""Parameters of the flow reactor, declared once (pydantic ``Params``): devices, reactor, stocks,
limits, steady state, interlocks and detector calibration.

Each device field is named for its part in the rig and thereby its role (``DEVICE_ROLES``):
three feed pumps, the thermostat, the collection valve, the pressure sensor and the inline
detector. Each names its vendor plugin (``flow_reactor.plugins``) and its port; hardware vs twin
is only which params file (``config/hardware/flow_reactor.yaml`` with /dev/ttyUSB* ports,
``config/twin/flow_reactor.yaml`` with the twin's pty symlinks).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from aichemist.params import Params

#: device field -> role (flow_reactor.roles.ROLES key)
DEVICE_ROLES: dict[str, str] = {
    "pump_dfnb": "pump",
    "pump_pyrrolidine": "pump",
    "pump_ethanol": "pump",
    "thermostat": "thermostat",
    "valve_collect": "valve",
    "pressure_sensor": "pressure_sensor",
    "detector": "detector",
}
PUMP_FIELDS = ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol")


class DeviceParams(Params):
    vendor: str = Field(description="vendor plugin registered for the role (flow_reactor.plugins)")
    port: str = Field(description="serial port (/dev/ttyUSB0) or the twin's pty symlink")
    baudrate: int = Field(0, ge=0, le=921600, description="0 = the maker's documented default")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="driver keyword arguments (head, address, limits)")


class ReactorParams(Params):
    volume_ml: float = Field(3.0, gt=0.0, le=100.0, description="coil volume (mL)")
    detector_dead_volume_ml: float = Field(0.10, ge=0.0, le=10.0,
                                           description="coil outlet to detector flow cell (mL)")
    collect_dead_volume_ml: float = Field(0.15, ge=0.0, le=10.0,
                                          description="detector flow cell to collection valve (mL)")
    bpr_pressure_bar: float = Field(6.9, ge=0.0, le=100.0, description="back-pressure regulator set point")
    line_resistance_bar_per_ml_min: float = Field(
        0.2, ge=0.0, le=100.0, description="pressure drop per total flow above the BPR (from priming)")


class StockParams(Params):
    dfnb_m: float = Field(2.0, gt=0.0, le=10.0, description="DFNB stock concentration (mol/L)")
    pyrrolidine_m: float = Field(4.2, gt=0.0, le=12.2, description="pyrrolidine stock concentration")
    dfnb_ml: float = Field(250.0, ge=0.0, description="DFNB stock volume on hand (mL)")
    pyrrolidine_ml: float = Field(250.0, ge=0.0, description="pyrrolidine stock volume on hand (mL)")
    ethanol_ml: float = Field(2000.0, ge=0.0, description="ethanol on hand (mL)")


class ProcessLimits(Params):
    min_residence_time_min: float = Field(0.5, gt=0.0)
    max_residence_time_min: float = Field(2.0, gt=0.0)
    min_temp_c: float = Field(30.0)
    max_temp_c: float = Field(120.0)
    min_equivalents: float = Field(1.0, gt=0.0)
    max_equivalents: float = Field(5.0, gt=0.0)
    min_conc_dfnb_m: float = Field(0.1, gt=0.0)
    max_conc_dfnb_m: float = Field(0.5, gt=0.0)


class InterlockParams(Params):
    max_pressure_bar: float = Field(20.0, gt=0.0, le=400.0)
    blockage_margin_bar: float = Field(5.0, gt=0.0)
    max_pressure_rise_bar_s: float = Field(4.0, gt=0.0)
    rise_window_s: float = Field(0.3, gt=0.0)
    leak_margin_bar: float = Field(2.5, gt=0.0)
    settle_s: float = Field(5.0, ge=0.0)
    temp_band_c: float = Field(3.0, gt=0.0)
    watchdog_s: float = Field(1.0, gt=0.0)


class SteadyStateParams(Params):
    min_transit_factor: float = Field(1.0, ge=0.5, le=5.0,
                                      description="never steady before this many plug-flow transits")
    window_residence_times: float = Field(0.5, gt=0.0, le=3.0, description="flatness window / tau")
    min_window_s: float = Field(10.0, gt=0.0)
    rel_tol: float = Field(0.01, gt=0.0, lt=1.0)
    abs_tol_au: float = Field(0.002, ge=0.0)
    max_residence_times: float = Field(8.0, gt=1.0, le=50.0, description="give up after this many tau")
    measure_s: float = Field(5.0, gt=0.0, description="averaging time of the measurement")
    sample_interval_s: float = Field(0.5, gt=0.0, le=10.0, description="detector reading interval")
    signal_band_nm: float = Field(10.0, ge=0.0, le=100.0, description="signal = mean absorbance +- this")


class AnalyticsParams(Params):
    """Beer-Lambert calibration of the inline detector (absorptivities measured on standards)."""

    path_length_cm: float = Field(0.1, gt=0.0)
    wavelengths_nm: list[float] = Field(default_factory=lambda: [300.0, 350.0, 400.0, 450.0])
    # species -> molar absorptivity (L mol^-1 cm^-1) at each wavelength, same order
    absorptivity_l_mol_cm: dict[str, list[float]] = Field(default_factory=dict)
    steady_signal_wavelength_nm: float = Field(400.0, gt=0.0)
    product: str = "ortho"


class OperationParams(Params):
    poll_interval_s: float = Field(0.05, gt=0.0, le=1.0)
    prime_volume_ml: float = Field(1.0, ge=0.0, description="solvent through the system at priming")
    prime_flow_ml_min: float = Field(3.0, gt=0.0)
    heat_timeout_s: float = Field(1800.0, gt=0.0)
    collect_volume_ml: float = Field(0.5, gt=0.0)
    flush_volumes: float = Field(2.0, ge=0.0, description="system volumes of solvent between runs")
    flush_flow_ml_min: float = Field(3.0, gt=0.0)
    waste_position: int = Field(1, ge=1)
    collect_positions: list[int] = Field(default_factory=lambda: [2, 3, 4, 5, 6])
    collect_vial_ids: list[str] = Field(default_factory=lambda: ["vial_1", "vial_2", "vial_3", "vial_4",
                                                                 "vial_5"])
    reagent_margin: float = Field(1.2, ge=1.0, description="stock needed x this before a run starts")

    @model_validator(mode="after")
    def _vials_match(self) -> "OperationParams":
        if len(self.collect_positions) != len(self.collect_vial_ids):
            raise ValueError("collect_positions and collect_vial_ids must have the same length")
        if self.waste_position in self.collect_positions:
            raise ValueError("waste_position must not be a collection position")
        return self


class FlowReactorParams(Params):
    pump_dfnb: DeviceParams
    pump_pyrrolidine: DeviceParams
    pump_ethanol: DeviceParams
    thermostat: DeviceParams
    valve_collect: DeviceParams
    pressure_sensor: DeviceParams
    detector: DeviceParams
    reactor: ReactorParams = Field(default_factory=ReactorParams)
    stocks: StockParams = Field(default_factory=StockParams)
    limits: ProcessLimits = Field(default_factory=ProcessLimits)
    interlocks: InterlockParams = Field(default_factory=InterlockParams)
    steady_state: SteadyStateParams = Field(default_factory=SteadyStateParams)
    analytics: AnalyticsParams = Field(default_factory=AnalyticsParams)
    operation: OperationParams = Field(default_factory=OperationParams)
    state_rate_hz: float = Field(10.0, ge=10.0, le=100.0)

    def devices(self) -> dict[str, DeviceParams]:
        return {name: getattr(self, name) for name in DEVICE_ROLES}


def load_params_file(path: str, node_name: str = "flow_reactor_node",
                     substitutions: dict[str, str] | None = None, model: type[Params] | None = None) -> Any:
    """Read a ROS 2 params file (``<node>: ros__parameters: ...``) into ``model``
    (``FlowReactorParams`` by default).

    The same file the node is started with, so in-process tests and benchmarks use exactly the
    node's configuration. Dict-valued fields travel as JSON text in ROS params; they are decoded
    here as the node's parameter loader does.
    """
    import json
    import string

    import yaml

    from aichemist.errors import ConfigurationError
    from aichemist.params import validate_config

    with open(path) as f:
        text = f.read()
    if substitutions:
        text = string.Template(text).safe_substitute(substitutions)
    doc = yaml.safe_load(text) or {}
    section = doc.get(node_name) or doc.get("/**") or {}
    values = dict(section.get("ros__parameters") or {})
    values.pop("use_sim_time", None)  # a ROS parameter, not the core's

    def decode(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: decode(v, f"{where}.{k}" if where else k) for k, v in node.items()}
        if isinstance(node, str) and node.strip()[:1] in ("{", "["):
            try:
                return json.loads(node)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{path}: {where} is not valid JSON ({exc})",
                                         problems=[{"field": where, "value": node}]) from None
        return node

    values = decode(values, "")
    return validate_config(model or FlowReactorParams, values, what=f"{node_name} params ({path})")


# --- HPLC (hplc_node) ----------------------------------------------------------------------
class HplcComponentParams(Params):
    vendor: str
    port: str
    options: dict[str, Any] = Field(default_factory=dict)


class HplcParams(Params):
    """The online HPLC (``flow_reactor.drivers.online_hplc``: five devices) and its method."""

    selector: HplcComponentParams
    injector: HplcComponentParams
    loop_pump: HplcComponentParams
    pump: HplcComponentParams
    detector: HplcComponentParams
    vial_positions: dict[str, int] = Field(default_factory=dict, description="vial id -> selector position")
    loop_volume_ul: float = Field(1.0, gt=0.0, le=100.0)
    flush_volume_ul: float = Field(20.0, ge=0.0, le=1000.0)
    mobile_phase_flow_ml_min: float = Field(1.0, gt=0.0, le=10.0)
    detection_wavelength_nm: float = Field(254.0, gt=190.0, le=900.0)
    run_time_min: float = Field(8.0, gt=0.0, le=120.0)
    sample_interval_s: float = Field(0.5, gt=0.0, le=10.0)
    # species -> [start, end] of its retention window (min) at the method's flow
    peak_windows_min: dict[str, list[float]] = Field(default_factory=dict)
    # species -> peak area (mAU min) per mol/L in the vial, from standards
    response_mau_min_per_m: dict[str, float] = Field(default_factory=dict)
    product: str = "ortho"

    def components(self) -> dict[str, dict[str, Any]]:
        return {part: {"vendor": p.vendor, "port": p.port, "options": dict(p.options)}
                for part in ("selector", "injector", "loop_pump", "pump", "detector")
                for p in [getattr(self, part)]}
