"""HPLC measurement: peak integration on known peaks, and the twin end to end: a vial collected
by the controller reaches the online HPLC's rack and its measured concentrations match."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from aichemist.errors import LimitError
from flow_reactor import analytics
from flow_reactor.config import HplcParams, load_params_file
from flow_reactor.controller import FlowConditions
from flow_reactor.drivers.online_hplc import OnlineHPLC
from sim.emulators.loopback import LoopbackTransport
from sim.emulators.online_hplc import build_online_hplc

REPO = pathlib.Path(__file__).resolve().parents[3]

HPLC_PARAMS = REPO / "config" / "twin" / "hplc_node.yaml"


def test_integrate_peaks_on_known_gaussians_with_drift():
    t = np.arange(0.0, 8.0, 0.5 / 60)
    sigma = 0.13
    true = {"dfnb": (3.4, 50.0), "ortho": (4.6, 20.0)}  # (retention, area mAU min)
    y = 0.4 * t + 3.0  # drifting baseline
    for rt, area in true.values():
        y = y + area * np.exp(-0.5 * ((t - rt) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    y = y + np.random.default_rng(0).normal(0, 0.05, t.size)
    peaks = {p.name: p for p in analytics.integrate_peaks(
        t, y, {"dfnb": (2.85, 3.95), "ortho": (4.05, 5.15), "bis": (6.05, 6.95)},
        {"dfnb": 500.0, "ortho": 200.0})}
    assert peaks["dfnb"].area_mau_min == pytest.approx(50.0, rel=0.03)
    assert peaks["ortho"].area_mau_min == pytest.approx(20.0, rel=0.03)
    assert peaks["ortho"].retention_min == pytest.approx(4.6, abs=0.02)
    assert peaks["ortho"].conc_m == pytest.approx(0.1, rel=0.03)
    assert peaks["bis"].area_mau_min < 0.2 and peaks["bis"].conc_m == 0.0  # no response factor


class _MinStepClock:
    """The rig's SimClock, with waits of at least 1 us: the HPLC driver's run loop can ask for a
    remainder below SimClock's 1e-12 s resolution, which would not advance time (lock-step only;
    a ROS or wall clock always advances)."""

    def __init__(self, clock):
        self._clock = clock

    def now(self):
        return self._clock.now()

    def sleep(self, seconds):
        self._clock.sleep(max(seconds, 1e-6))


class _StallAfterInject(LoopbackTransport):
    """The injector's port on a host that stalls right after sending the inject command: the twin
    runs on ``stall_s`` before the driver gets to read the confirmation (what a loaded host does to
    a node while the twin runs at 20-60x real time)."""

    def __init__(self, emulator, clock, stall_s):
        super().__init__(emulator)
        self._clock, self._stall_s, self._armed = clock, stall_s, False

    def write(self, data):
        super().write(data)
        self._armed = self._armed or data.strip().endswith(b"GOB")

    def read_until(self, terminator, timeout):
        if self._armed:
            self._armed = False
            self._clock.sleep(self._stall_s)
        return super().read_until(terminator, timeout)


def _hplc(clock, emulator, *, stall_after_inject_s=0.0):
    clock = _MinStepClock(clock)
    params = load_params_file(str(HPLC_PARAMS), "hplc_node", {"twin_dir": "/nonexistent"}, HplcParams)
    components = params.components()
    for part in components:
        components[part]["transport"] = LoopbackTransport(emulator.emulators[f"hplc_{part}"])
    if stall_after_inject_s:
        components["injector"]["transport"] = _StallAfterInject(emulator.emulators["hplc_injector"], clock,
                                                                stall_after_inject_s)
    device = OnlineHPLC.from_components("hplc", components=components, clock=clock,
                                        vial_positions=params.vial_positions,
                                        loop_volume_ul=params.loop_volume_ul,
                                        detection_wavelength_nm=params.detection_wavelength_nm,
                                        run_time_min=params.run_time_min)
    device.connect()
    return device, params


def test_collected_vial_measured_by_hplc_in_the_twin(flow_rig):
    rig = flow_rig(seed=3)
    hplc_emulator = build_online_hplc("hplc", vial_positions={f"vial_{i}": i for i in range(1, 6)} | {"std": 8},
                                      seed=7)
    rig.lab.add("hplc", hplc_emulator)
    rig.twin.chromatograph = hplc_emulator
    rig.emulators["thermostat"].internal_temp_c = 70.0
    result = rig.controller.run_experiment(FlowConditions(0.75, 70.0, 2.5, 0.25), experiment_id="h1")
    assert result.collected_vial == "vial_1"
    device, params = _hplc(rig.clock, hplc_emulator)
    out = analytics.measure_sample(device, params, "vial_1", conc_dfnb_fed_m=result.conc_dfnb_fed_m)
    vial = rig.twin.vial_contents(2)
    assert out["conc_m"]["ortho"] == pytest.approx(vial["ortho"], rel=0.05)
    # minor peaks: limited by baseline noise (about 0.01 M for the weakly absorbing bis-adduct)
    for species in ("dfnb", "para", "bis"):
        assert out["conc_m"][species] == pytest.approx(vial[species], abs=0.01), species
    assert out["yield_fraction"] == pytest.approx(result.yield_fraction, abs=0.03)
    chrom = out["chromatogram"]
    assert chrom.times_min[-1] == pytest.approx(params.run_time_min, abs=0.01)
    # an unknown vial is refused before anything moves
    with pytest.raises(LimitError, match="vial"):
        analytics.measure_sample(device, params, "vial_99")


def test_hplc_time_axis_starts_at_the_inject_command_not_its_late_confirmation(flow_rig):
    """A host stall between the inject command and its confirmation (10 s of simulated time: half a
    second of wall time with the twin at 20x) must not shift the chromatogram: t = 0 is when the
    command went out. (With t = 0 at the confirmation, the ortho peak sat 10 s early against its
    window and the HPLC read the vial as diluted, about 0.7x: the bug seen across processes.)"""
    rig = flow_rig(seed=3)
    hplc_emulator = build_online_hplc("hplc", vial_positions={f"vial_{i}": i for i in range(1, 6)} | {"std": 8},
                                      seed=7)
    rig.lab.add("hplc", hplc_emulator)
    rig.twin.chromatograph = hplc_emulator
    rig.emulators["thermostat"].internal_temp_c = 70.0
    result = rig.controller.run_experiment(FlowConditions(0.75, 70.0, 2.5, 0.25), experiment_id="h2")
    device, params = _hplc(rig.clock, hplc_emulator, stall_after_inject_s=10.0)
    out = analytics.measure_sample(device, params, "vial_1", conc_dfnb_fed_m=result.conc_dfnb_fed_m)
    ortho = next(p for p in out["peaks"] if p.name == "ortho")
    assert ortho.retention_min == pytest.approx(4.6, abs=0.03)
    assert out["yield_fraction"] == pytest.approx(result.yield_fraction, abs=0.03)


def test_an_estop_mid_run_ends_the_hplc_run_at_once_with_its_pumps_stopped(flow_rig):
    from aichemist.errors import EmergencyStop

    rig = flow_rig(seed=4)
    hplc_emulator = build_online_hplc("hplc", vial_positions={f"vial_{i}": i for i in range(1, 6)} | {"std": 8},
                                      seed=7)
    rig.lab.add("hplc", hplc_emulator)
    device, params = _hplc(rig.clock, hplc_emulator)
    start = rig.clock.now()
    device.should_stop = lambda: EmergencyStop("button") if rig.clock.now() - start > 90.0 else None
    with pytest.raises(EmergencyStop):
        analytics.measure_sample(device, params, "vial_2")
    assert rig.clock.now() - start < 90.0 + 2 * params.sample_interval_s + 1.0  # not the 8 min run
    assert not hplc_emulator.pump.running and not hplc_emulator.loop_pump.running
