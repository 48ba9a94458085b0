"""In the robot mode the twin's HPLC sees a collected vial only where the robot put it."""

from __future__ import annotations

import numpy as np
import pytest

from sim.lab_twin import LabTwin, TwinParams
from sim.reactor_twin import SPECIES, Vial
from sim.vial_hand_over import HandOverParams, VialHandOver


@pytest.fixture
def twin():
    return LabTwin.from_config(TwinParams().subsystems)


def collected(twin, position: int, ortho_m: float) -> None:
    moles = np.zeros(len(SPECIES))
    moles[SPECIES.index("ortho")] = ortho_m * 0.5e-3
    twin.subsystems["flow_reactor"].physics.vials[position] = Vial(moles, 0.5)


def test_the_vial_reaches_the_autosampler_only_when_the_robot_places_it(twin):
    reactor, hplc = twin.subsystems["flow_reactor"], twin.subsystems["hplc"]
    hand_over = VialHandOver(twin.subsystems, HandOverParams())
    assert reactor.chromatograph is None  # no shortcut past the robot
    collected(twin, 3, 0.2)  # outlet slot A2 = valve position 3
    reactor._hand_over_vial(3)  # the collection ended: nothing reaches the HPLC by itself
    assert hplc.vials.get(hplc.vial_positions["vial_4"]) is None
    hand_over.on_transfer("vial_r02", "reactor_collection", "A2", "hplc_autosampler", "A4")
    assert hplc.vials[hplc.vial_positions["vial_4"]]["ortho"] == pytest.approx(0.2)
    assert 3 not in reactor.physics.vials  # the vial left the valve position
    # taken out of the autosampler to the rack: the position is empty again
    hand_over.on_transfer("vial_r02", "hplc_autosampler", "A4", "reagent_rack", "A2")
    assert hplc.vial_positions["vial_4"] not in hplc.vials


def test_an_empty_vial_placed_in_the_autosampler_holds_nothing(twin):
    hplc = twin.subsystems["hplc"]
    hand_over = VialHandOver(twin.subsystems, HandOverParams())
    hand_over.on_transfer("vial_r01", "reagent_rack", "A1", "hplc_autosampler", "A1")
    assert not any(hplc.vials[hplc.vial_positions["vial_1"]].values())
