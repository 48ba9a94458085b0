"""Fixtures of the flow reactor tests.

``flow_rig``: an in-process twin rig for controller tests: the reactor twin and its emulators on a
SimClock, the real drivers on loopback transports, the controller from the twin's params file."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import pytest

from aichemist.clock import SimClock
from flow_reactor.config import DEVICE_ROLES, load_params_file
from flow_reactor.controller import FlowReactorController, create_devices
from sim.emulators.loopback import LoopbackTransport
from sim.lab_twin import LabTwin
from sim.reactor_twin import FlowReactorTwin, build_flow_reactor_twin

REPO = pathlib.Path(__file__).resolve().parents[3]
TWIN_PARAMS = REPO / "config" / "twin" / "flow_reactor.yaml"


@dataclass
class Rig:
    twin: FlowReactorTwin
    lab: LabTwin
    clock: SimClock
    controller: FlowReactorController
    transports: dict[str, Any]

    @property
    def emulators(self) -> dict[str, Any]:
        return self.twin.emulators


def build_rig(seed: int = 0, params_overrides: dict[str, Any] | None = None) -> Rig:
    twin = build_flow_reactor_twin(seed=seed)
    clock = SimClock(max_step=0.05)
    lab = LabTwin({"flow_reactor": twin}, clock=clock)
    params = load_params_file(str(TWIN_PARAMS), substitutions={"twin_dir": "/nonexistent"})
    if params_overrides:
        data = params.model_dump()
        for key, value in params_overrides.items():
            section, _, field = key.partition(".")
            data[section][field] = value
        params = type(params).model_validate(data)
    transports = {name: LoopbackTransport(twin.emulators[name]) for name in DEVICE_ROLES}
    devices = create_devices(params, transports, clock=clock)
    controller = FlowReactorController(params, devices, clock)
    controller.connect()
    return Rig(twin, lab, clock, controller, transports)


@pytest.fixture
def flow_rig():
    """Factory: ``flow_rig(seed=0, params_overrides=None) -> Rig``."""
    return build_rig
