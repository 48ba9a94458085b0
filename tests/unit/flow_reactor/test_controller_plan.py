"""Controller planning: flows from conditions and stocks; limits and stock volumes checked before
anything moves (no byte reaches a device when a plan is refused)."""

from __future__ import annotations

import pytest

from aichemist.clock import SimClock
from aichemist.errors import ConfigurationError, LimitError
from flow_reactor.config import FlowReactorParams
from flow_reactor.controller import FlowConditions, FlowReactorController
from flow_reactor.drivers.huber_pb import HuberPBThermostat
from flow_reactor.drivers.teledyne_ssi import SSIPump
from sim.emulators.huber_thermostat import HuberThermostatEmulator
from sim.emulators.loopback import LoopbackTransport
from sim.emulators.ssi_pump import SSIPumpEmulator

DEV = {"vendor": "x", "port": "/dev/null"}
CAL = {"wavelengths_nm": [300.0, 400.0], "absorptivity_l_mol_cm": {"ortho": [1.0, 2.0], "dfnb": [2.0, 0.1]}}


def _params(**kw):
    base = {name: DEV for name in ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol", "thermostat",
                                   "valve_collect", "pressure_sensor", "detector")}
    base["analytics"] = CAL
    base.update(kw)
    return FlowReactorParams.model_validate(base)


@pytest.fixture
def rig():
    emus = {n: SSIPumpEmulator(n) for n in ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol")}
    emus["thermostat"] = HuberThermostatEmulator("thermostat")
    transports = {n: LoopbackTransport(e) for n, e in emus.items()}
    devices = {n: SSIPump(n, transports[n]) for n in ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol")}
    devices["thermostat"] = HuberPBThermostat("thermostat", transports["thermostat"], min_temp_c=-20, max_temp_c=110)
    devices.update(valve_collect=None, pressure_sensor=None, detector=None)
    return devices, transports


def test_flows_from_conditions_and_stocks(rig):
    devices, _ = rig
    c = FlowReactorController(_params(), devices, SimClock())
    plan = c.plan(FlowConditions(residence_time_min=1.5, temp_c=90.0, equivalents=2.0, conc_dfnb_m=0.4))
    total = 3.0 / 1.5
    assert plan.total_flow_ml_min == pytest.approx(total)
    assert plan.flows_ml_min["pump_dfnb"] == pytest.approx(0.4 / 2.0 * total)
    assert plan.flows_ml_min["pump_pyrrolidine"] == pytest.approx(0.8 / 4.2 * total)
    assert sum(plan.flows_ml_min.values()) == pytest.approx(total)
    assert plan.reagent_needed_ml["dfnb"] > plan.flows_ml_min["pump_dfnb"] * 8 * 1.5  # >= max wait


@pytest.mark.parametrize("field,value,device", [
    ("residence_time_min", 0.2, "flow_reactor"), ("temp_c", 130.0, "flow_reactor"),
    ("equivalents", 6.0, "flow_reactor"), ("conc_dfnb_m", 0.05, "flow_reactor"),
    ("temp_c", float("nan"), "flow_reactor")])
def test_conditions_outside_process_limits_rejected_before_any_byte(rig, field, value, device):
    devices, transports = rig
    c = FlowReactorController(_params(), devices, SimClock())
    cond = dict(residence_time_min=1.0, temp_c=90.0, equivalents=2.0, conc_dfnb_m=0.3)
    cond[field] = value
    with pytest.raises(LimitError) as info:
        c.run_experiment(FlowConditions(**cond))
    assert field in str(info.value) and device in str(info.value)
    assert all(t.written == b"" for t in transports.values())


def test_thermostat_limit_and_pump_limit_checked(rig):
    devices, transports = rig
    c = FlowReactorController(_params(limits={"max_temp_c": 150.0}), devices, SimClock())
    with pytest.raises(LimitError, match="thermostat"):
        c.plan(FlowConditions(1.0, 115.0, 2.0, 0.3))
    # a 100 mL coil at 0.5 min needs 200 mL/min: above the 10 mL/min pump head
    big = FlowReactorController(_params(reactor={"volume_ml": 100.0}), devices, SimClock())
    with pytest.raises(LimitError, match="pump_ethanol|pump_dfnb|pump_pyrrolidine"):
        big.run_experiment(FlowConditions(0.5, 90.0, 2.0, 0.3))
    assert all(t.written == b"" for t in transports.values())


def test_not_enough_stock_refused(rig):
    devices, transports = rig
    c = FlowReactorController(_params(stocks={"dfnb_ml": 2.0}), devices, SimClock())
    with pytest.raises(LimitError, match="dfnb_stock_ml") as info:
        c.run_experiment(FlowConditions(1.0, 90.0, 2.0, 0.5))
    assert info.value.limit == 2.0
    assert all(t.written == b"" for t in transports.values())
    c.refill("dfnb", 500.0)
    assert c.plan(FlowConditions(1.0, 90.0, 2.0, 0.5)).reagent_needed_ml["dfnb"] < 500.0


def test_missing_device_is_a_configuration_error(rig):
    devices, _ = rig
    del devices["detector"]
    with pytest.raises(ConfigurationError, match="detector"):
        FlowReactorController(_params(), devices, SimClock())


def test_refused_run_leaves_the_controller_idle(rig):
    devices, _ = rig
    c = FlowReactorController(_params(), devices, SimClock())
    with pytest.raises(LimitError):
        c.run_experiment(FlowConditions(5.0, 90.0, 2.0, 0.3))
    assert c.state.phase == "idle" and not c.busy
