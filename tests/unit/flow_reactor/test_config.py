"""Params files: twin and hardware differ only in ports and clock-related settings; bad params
fail naming the field."""

from __future__ import annotations

import pathlib

import pytest

from aichemist.errors import ConfigurationError, DeviceNotFoundError
from flow_reactor.config import DEVICE_ROLES, HplcParams, load_params_file
from flow_reactor.controller import create_devices

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_twin_and_hardware_files_name_the_same_devices():
    twin = load_params_file(str(REPO / "config/twin/flow_reactor.yaml"), substitutions={"twin_dir": "/t"})
    hw = load_params_file(str(REPO / "config/hardware/flow_reactor.yaml"))
    for name in DEVICE_ROLES:
        t, h = getattr(twin, name), getattr(hw, name)
        assert (t.vendor, t.options) == (h.vendor, h.options)
        assert t.port == f"/t/{name}" and h.port.startswith("/dev/tty")
    assert twin.analytics == hw.analytics and twin.reactor == hw.reactor and twin.stocks == hw.stocks
    hplc_twin = load_params_file(str(REPO / "config/twin/hplc_node.yaml"), "hplc_node", {"twin_dir": "/t"}, HplcParams)
    hplc_hw = load_params_file(str(REPO / "config/hardware/hplc_node.yaml"), "hplc_node", model=HplcParams)
    assert hplc_twin.model_dump(exclude={"selector", "injector", "loop_pump", "pump", "detector"}) == \
        hplc_hw.model_dump(exclude={"selector", "injector", "loop_pump", "pump", "detector"})


def test_bad_params_name_the_field(tmp_path):
    text = (REPO / "config/twin/flow_reactor.yaml").read_text().replace("volume_ml: 3.0", "volume_ml: -3.0")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="reactor.volume_ml"):
        load_params_file(str(path), substitutions={"twin_dir": "/t"})
    with pytest.raises(ConfigurationError, match="detector"):
        load_params_file(
            str(_without(tmp_path, "detector")), substitutions={"twin_dir": "/t"})


def _without(tmp_path, device):
    import yaml

    doc = yaml.safe_load((REPO / "config/twin/flow_reactor.yaml").read_text().replace("${twin_dir}", "/t"))
    del doc["flow_reactor_node"]["ros__parameters"][device]
    path = tmp_path / f"without_{device}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_missing_port_fails_naming_it(tmp_path):
    params = load_params_file(str(REPO / "config/twin/flow_reactor.yaml"), substitutions={"twin_dir": str(tmp_path)})
    with pytest.raises(DeviceNotFoundError, match=f"{tmp_path}/pump_dfnb"):
        create_devices(params)


def test_wrong_device_on_a_port_is_named_at_connect():
    from aichemist.clock import SimClock
    from aichemist.errors import DeviceError
    from flow_reactor.controller import FlowReactorController
    from sim.emulators.loopback import LoopbackTransport
    from sim.reactor_twin import build_flow_reactor_twin

    twin = build_flow_reactor_twin()
    params = load_params_file(str(REPO / "config/twin/flow_reactor.yaml"), substitutions={"twin_dir": "/t"})
    transports = {name: LoopbackTransport(twin.emulators[name]) for name in DEVICE_ROLES}
    # the cables of the DFNB pump and the thermostat are swapped
    transports["pump_dfnb"], transports["thermostat"] = transports["thermostat"], transports["pump_dfnb"]
    controller = FlowReactorController(params, create_devices(params, transports), SimClock())
    with pytest.raises(DeviceError, match="pump_dfnb"):
        controller.connect()
    assert not any(twin.emulators[n].running for n in ("pump_dfnb", "pump_pyrrolidine", "pump_ethanol"))
