"""Online HPLC (chromatograph role) over its five emulated devices, on simulated time."""

from __future__ import annotations

import numpy as np
import pytest

from aichemist.clock import SimClock
from aichemist.errors import DeviceError, LimitError
from flow_reactor.plugins import create_device
from flow_reactor.roles import Chromatograph
from sim.emulators.loopback import LoopbackTransport
from sim.emulators.online_hplc import RETENTION_MIN, OnlineHPLCEmulator


def _hplc(seed=0, **kw):
    emu = OnlineHPLCEmulator(seed=seed)
    clock = SimClock(max_step=0.25)
    clock.add_stepper(emu.step)
    parts = {"selector": emu.selector, "injector": emu.injector, "loop_pump": emu.loop_pump,
             "pump": emu.pump, "detector": emu.detector}
    components = {part: {"transport": LoopbackTransport(e)} for part, e in parts.items()}
    components["loop_pump"]["options"] = {"max_flow_ml_min": 1.0}
    components["selector"]["options"] = {"num_positions": emu.selector.num_positions}
    hplc = create_device("chromatograph", "online_hplc", name="hplc", components=components, clock=clock,
                         run_time_min=8.0, **kw)
    hplc.connect()
    return emu, hplc, clock


def _area(chrom, species, flow=1.0, half_width_min=0.4):
    t_r = RETENTION_MIN[species] / flow
    window = np.abs(chrom.times_min - t_r) < half_width_min
    base = np.median(chrom.signal_mau[chrom.times_min < 0.8])
    return float(np.trapezoid(chrom.signal_mau[window] - base, chrom.times_min[window]))


def test_chromatogram_peaks_at_retention_times_with_areas_proportional_to_concentration():
    emu, hplc, clock = _hplc()
    assert isinstance(hplc, Chromatograph)
    emu.load_sample("vial_1", {"dfnb": 0.10, "ortho": 0.30, "para": 0.02})
    emu.load_sample("vial_2", {"dfnb": 0.10, "ortho": 0.15, "para": 0.02})
    areas = []
    for vial in ("vial_1", "vial_2"):
        hplc.inject(vial)
        assert hplc.is_running()
        hplc.run()
        chrom = hplc.read_chromatogram()
        assert chrom.sample_id == vial and chrom.times_min[-1] == pytest.approx(8.0, abs=0.01)
        # the ortho peak maximum sits at its retention time
        near = np.abs(chrom.times_min - RETENTION_MIN["ortho"]) < 0.5
        t_peak = chrom.times_min[near][np.argmax(chrom.signal_mau[near])]
        assert t_peak == pytest.approx(RETENTION_MIN["ortho"], abs=0.05)
        areas.append((_area(chrom, "ortho"), _area(chrom, "dfnb")))
    (o1, d1), (o2, d2) = areas
    assert o1 / o2 == pytest.approx(2.0, rel=0.05)      # area proportional to concentration
    assert d1 / d2 == pytest.approx(1.0, rel=0.05)
    assert len(emu.injections) == 2 and emu.injector.position == 1


def test_baseline_noise_is_seeded_and_present():
    def baseline(seed):
        emu, hplc, _ = _hplc(seed=seed)
        emu.load_sample("vial_1", {})
        hplc.inject("vial_1")
        hplc.run(run_time_min=1.0)
        return hplc.read_chromatogram().signal_mau

    a, b, c = baseline(1), baseline(1), baseline(2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.01 < np.std(a) < 5.0


def test_short_draw_injects_nothing_and_bad_input_is_rejected():
    emu, hplc, clock = _hplc(flush_volume_ul=1.0)  # too little to replace the line's 15 uL
    emu.load_sample("vial_1", {"ortho": 0.3})
    hplc.inject("vial_1")
    hplc.run(run_time_min=0.2)
    assert emu.injections[-1]["moles"] == {}
    with pytest.raises(LimitError, match="hplc: vial='vial_99'"):
        hplc.inject("vial_99")
    with pytest.raises(LimitError, match="volume_ul"):
        hplc.inject("vial_1", volume_ul=5.0)
    with pytest.raises(DeviceError, match="nothing injected"):
        hplc.run()


def test_safe_state_stops_the_pumps():
    emu, hplc, clock = _hplc()
    emu.load_sample("vial_1", {"ortho": 0.1})
    hplc.inject("vial_1")
    assert emu.pump.running
    hplc.safe_state()
    assert not emu.pump.running and not emu.loop_pump.running and not hplc.is_running()


def test_emulator_is_a_twin_subsystem_with_named_ports():
    from sim.emulators.online_hplc import build_online_hplc

    hplc = build_online_hplc("hplc", seed=3, num_vials=6)
    assert sorted(hplc.emulators) == ["hplc_detector", "hplc_injector", "hplc_loop_pump", "hplc_pump",
                                      "hplc_selector"]
    assert all(hasattr(e, "feed") for e in hplc.emulators.values())
    assert hplc.load_sample("vial_9", {"ortho": 0.1}) == 1
    hplc.step(0.0, 0.1)
    assert hplc.t_s == pytest.approx(0.1)
