"""The robot carries the chemistry: collected vials reach the HPLC only when the robot puts them there.

The flow reactor twin fills the vial standing at a collection valve position; the online HPLC
injects from the vial at an autosampler position. ``VialHandOver`` joins them through the robot's
transfers (``on_transfer``, from manipulator_node's /manipulator/vial_transfers in the twin): a vial
taken from a reactor outlet slot and placed in an autosampler slot brings the contents it was
filled with; a vial taken out of the autosampler leaves that position empty, so measuring a slot
the robot did not fill finds no sample. The vials on their way (``carried``) outlive a restart of
the twin (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from pydantic import Field

from aichemist.params import Params


class HandOverParams(Params):
    reactor: str = Field("flow_reactor", description="the twin subsystem that fills vials")
    hplc: str = Field("hplc", description="the twin subsystem whose autosampler injects them")
    source_station: str = Field("reactor_collection", description="the robot's name of the reactor outlet rack")
    source_slots: dict[str, int] = Field(default_factory=lambda: {"A1": 2, "A2": 3},
                                         description="outlet slot -> collection valve position")
    target_station: str = Field("hplc_autosampler", description="the robot's name of the autosampler rack")
    target_slots: dict[str, str] = Field(
        default_factory=lambda: {f"A{i}": f"vial_{i}" for i in range(1, 6)},
        description="autosampler slot -> the HPLC's vial name")


class VialHandOver:
    def __init__(self, subsystems: Mapping[str, Any], params: HandOverParams, lock: Any = None) -> None:
        self.reactor = subsystems[params.reactor]
        self.hplc = subsystems[params.hplc]
        self.params = params
        self._lock = lock or threading.RLock()
        self.reactor.chromatograph = None  # no shortcut: the vial goes nowhere unless the robot takes it
        self.carried: dict[str, dict[str, float]] = {}  # vial id -> contents, while it is on its way
        self.log: list[tuple[str, str, str]] = []
        self.state_revision = 0  # counts transfers (see state_dict)

    # --- state across a twin restart (sim.lab_twin.TwinStateStore) ----------------------------
    def state_dict(self) -> dict[str, Any]:
        """The vials on their way (taken from a slot this hand-over tracks, not yet placed in one)."""
        with self._lock:
            return {"carried": {vial: dict(contents) for vial, contents in self.carried.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with self._lock:
            self.carried = {str(vial): {s: float(c) for s, c in dict(contents).items()}
                            for vial, contents in dict(state.get("carried") or {}).items()}

    def on_transfer(self, vial_id: str, source_station: str, source_slot: str, target_station: str,
                    target_slot: str) -> None:
        p = self.params
        with self._lock:
            contents: dict[str, float] | None = None
            if source_station == p.source_station and source_slot in p.source_slots:
                position = p.source_slots[source_slot]
                contents = self.reactor.vial_contents(position)
                self.reactor.physics.vials.pop(position, None)  # the vial left the valve's position
            elif source_station == p.target_station and source_slot in p.target_slots:
                name = p.target_slots[source_slot]
                position = self.hplc.vial_positions.get(name)
                contents = self.hplc.vials.pop(position, None) if position is not None else None
            else:
                contents = self.carried.pop(vial_id, None)
            if target_station == p.target_station and target_slot in p.target_slots:
                self.hplc.load_sample(p.target_slots[target_slot], contents or {})
                self.log.append((vial_id, f"{source_station}/{source_slot}", f"{target_station}/{target_slot}"))
            elif contents:
                self.carried[vial_id] = contents
            self.state_revision += 1
