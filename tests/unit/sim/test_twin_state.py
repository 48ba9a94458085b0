"""The twin's state across a restart (sim.lab_twin.TwinStateStore): simulated time never goes
backwards, the chemistry (collection vials, the autosampler's rack, carried vials) survives, the
devices come back in their power-on state, and the file is only ever whole."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from aichemist.clock import SimClock
from aichemist.errors import ConfigurationError
from sim.lab_twin import LabTwin, RealTimeRunner, TwinParams, TwinStateStore
from sim.reactor_twin import SPECIES, Vial
from sim.vial_hand_over import HandOverParams, VialHandOver


def _lab(path, hand_over=True, **kw):
    twin = LabTwin.from_config(TwinParams().subsystems)
    ho = VialHandOver(twin.subsystems, HandOverParams(), lock=twin._lock) if hand_over else None
    kw.setdefault("period_s", 0.5)
    kw.setdefault("max_sim_gap_s", 30.0)
    kw.setdefault("max_tick_advance_s", 1.0)
    store = TwinStateStore(path, twin, {"vial_hand_over": ho}, **kw)
    return twin, ho, store


def _fill(twin, position: int, ortho_m: float, volume_ml: float = 0.5) -> None:
    moles = np.zeros(len(SPECIES))
    moles[SPECIES.index("ortho")] = ortho_m * volume_ml * 1e-3
    twin.subsystems["flow_reactor"].physics.vials[position] = Vial(moles, volume_ml)


def test_time_and_vials_survive_a_restart_and_devices_are_at_power_on(tmp_path):
    path = tmp_path / "twin_state.json"
    twin, ho, store = _lab(path)
    reactor, hplc = twin.subsystems["flow_reactor"], twin.subsystems["hplc"]
    twin.advance(12.0)
    _fill(twin, 2, 0.21)  # outlet A1: collected, still at the valve
    _fill(twin, 3, 0.17)  # outlet A2: the robot takes it to the autosampler's A4
    ho.on_transfer("vial_r02", "reactor_collection", "A2", "hplc_autosampler", "A4")
    _fill(twin, 2, 0.21)
    ho.on_transfer("vial_r01", "reactor_collection", "A1", "robot", "gripper")  # in the gripper
    _fill(twin, 2, 0.33, volume_ml=0.25)  # and a new one collected at A1
    hplc.load_sample("extra", {"ortho": 0.05})  # a name the config did not know: next free position
    reactor.pump("pump_dfnb").running = True  # a device state: not kept
    saved = store.save()
    assert saved["t_s"] == pytest.approx(12.0)

    twin2, ho2, store2 = _lab(path)
    state = store2.load()
    resumed = store2.restore(state)
    # resumes at the saved time plus the saver's margin (30 s + one tick): never behind the old twin
    assert resumed == pytest.approx(12.0 + 31.0) and twin2.now() == pytest.approx(43.0)
    reactor2, hplc2 = twin2.subsystems["flow_reactor"], twin2.subsystems["hplc"]
    assert reactor2.vial_contents(2)["ortho"] == pytest.approx(0.33)
    assert reactor2.physics.vials[2].volume_ml == pytest.approx(0.25)
    assert 3 not in reactor2.physics.vials  # the robot took it away before the restart
    assert hplc2.vials[hplc2.vial_positions["vial_4"]]["ortho"] == pytest.approx(0.17)
    assert hplc2.vials[hplc2.vial_positions["extra"]]["ortho"] == pytest.approx(0.05)
    assert hplc2.vial_positions == hplc.vial_positions
    assert ho2.carried["vial_r01"]["ortho"] == pytest.approx(0.21)
    # the carried vial still reaches the autosampler with what it was filled with
    ho2.on_transfer("vial_r01", "robot", "gripper", "hplc_autosampler", "A1")
    assert hplc2.vials[hplc2.vial_positions["vial_1"]]["ortho"] == pytest.approx(0.21)
    assert not reactor2.pump("pump_dfnb").running  # power-on state
    # the restored twin keeps stepping from the resumed time, chemistry intact
    twin2.advance(1.0)
    assert twin2.now() == pytest.approx(44.0) and reactor2.vial_contents(2)["ortho"] == pytest.approx(0.33)


def test_no_file_means_a_fresh_twin_and_a_broken_file_is_named(tmp_path):
    path = tmp_path / "twin_state.json"
    _twin, _ho, store = _lab(path)
    assert store.load() is None
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="twin_state.json.*delete it"):
        store.load()
    path.write_text(json.dumps({"version": 99, "t_s": 1.0}))
    with pytest.raises(ConfigurationError, match="version-1"):
        store.load()


def test_resume_only_forward_and_only_on_an_owned_clock(tmp_path):
    twin = LabTwin({}, max_step_s=0.05)
    twin.advance(5.0)
    with pytest.raises(ConfigurationError, match="before now"):
        twin.resume_at(4.0)
    twin.resume_at(9.0)
    twin.advance(1.0)
    assert twin.now() == pytest.approx(10.0)
    with pytest.raises(ConfigurationError, match="does not own"):
        LabTwin({}, clock=SimClock()).resume_at(1.0)


def test_saves_when_due_by_wall_time_simulated_time_or_a_vial_event(tmp_path):
    wall = [0.0]
    twin, ho, store = _lab(tmp_path / "s.json", period_s=0.5, max_sim_gap_s=10.0, wall=lambda: wall[0])
    assert store.maybe_save() and store.saves == 1  # never saved yet
    assert not store.maybe_save()
    wall[0] = 0.6
    assert store.maybe_save() and store.saves == 2  # wall period
    twin.advance(10.2)
    assert store.maybe_save() and store.saves == 3  # simulated time ran ahead (a catching-up runner)
    assert not store.maybe_save()
    ho.on_transfer("vial_r01", "reagent_rack", "A1", "hplc_autosampler", "A1")
    assert store.maybe_save() and store.saves == 4  # a vial event
    assert not store.maybe_save()
    # the reactor's collection starting and ending are vial events too
    reactor = twin.subsystems["flow_reactor"]
    reactor.valve._start_move(2)
    twin.advance(0.05)
    assert store.maybe_save() and store.saves == 5
    reactor.valve._start_move(1)
    twin.advance(0.05)
    assert store.maybe_save() and store.saves == 6


def test_a_save_is_atomic_and_a_write_failure_does_not_stop_the_twin(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    wall = [0.0]
    twin, _ho, store = _lab(path, wall=lambda: wall[0])
    store.save()
    before = path.read_text()
    twin.advance(2.0)
    wall[0] = 1.0  # due

    def broken_dump(obj, f):  # the process dies half way through writing the temporary file
        f.write('{"version": 1, "t_')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", broken_dump)
    assert store.maybe_save() is False  # logged, not raised
    assert path.read_text() == before  # the last complete state is still there
    monkeypatch.undo()
    assert store.maybe_save() is True and json.loads(path.read_text())["t_s"] == pytest.approx(2.0)
    assert not os.path.exists(f"{path}.tmp")


def test_runner_keeps_every_moment_within_the_margin_of_the_file(tmp_path):
    """Wherever the runner is killed, the time on /clock is at most saved + margin: checked at
    every tick of a twin running at 60x, with a stall and its catch-up in the middle."""
    path = tmp_path / "s.json"
    wall = [0.0]
    twin = LabTwin({}, max_step_s=0.05)
    runner = RealTimeRunner(twin, real_time_factor=60.0, tick_s=0.01, wall=lambda: wall[0])
    store = TwinStateStore(path, twin, period_s=0.5, max_sim_gap_s=60.0 * 0.5,
                           max_tick_advance_s=runner.max_advance_s, wall=lambda: wall[0])
    runner.state_store = store
    worst = [0.0]
    done = threading.Event()
    ticks = [0]

    def on_tick(sim_t):
        ticks[0] += 1
        wall[0] += 2.0 if ticks[0] == 50 else 0.01  # one 2 s stall: the runner catches up after it
        saved = json.loads(path.read_text())
        worst[0] = max(worst[0], sim_t - saved["t_s"])
        assert sim_t <= saved["t_s"] + saved["resume_margin_s"] + 1e-9
        if ticks[0] >= 600:
            done.set()

    runner.on_tick = on_tick
    runner.start()
    try:
        assert done.wait(30.0)
    finally:
        runner.stop()
    assert worst[0] > 20.0  # the bound was approached, not trivially met
    assert store.resume_margin_s == pytest.approx(31.0)
