"""The lab's shared resources across tasks: devices (robot, reactor, HPLC) and vial slots.

Every task the planner runs has its own executor; the lab has one robot, one reactor and one
HPLC. ``LabArbiter`` is what those executors share, so that experiments of different tasks
overlap safely (while the HPLC measures task k's vial, the reactor runs task k+1 and the robot
fetches a vial for task k+2):

- A step starts only when all its resources are free *and*, for a vial transfer, its vial and a
  free target slot exist. The check and the reservation are one atomic decision, so a step never
  holds the robot while it waits for a slot (the deadlock of "fetch holds the robot, waiting for
  an outlet slot that only the robot can free").
- Older tasks first: a step does not take a resource that a waiting step of an older task could
  take now (the move of task k's finished vial goes before the fetch for task k+2).
- ``VialTracker`` knows where each vial is (station, slot) and which slots are reserved. A task's
  logical vial ("vial0" in its plan) is bound to a physical vial at its first transfer, and follows
  it: the flow reactor collects into the slot the vial stands in, the HPLC injects from the slot the
  robot put it in. The tracker's state is persisted (``save``) so a restarted planner knows where
  the vials are.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from aichemist.errors import NotFoundError, ValidationError

#: step ops that move a vial between stations with the robot
TRANSFER_OPS = ("fetch_vial", "move_vial", "store_vial")


@dataclass
class Transfer:
    """The concrete slots of one vial transfer, chosen when the step starts."""

    vial: str                  # the physical vial
    from_station: str
    from_slot: str
    to_station: str
    to_slot: str

    def to_dict(self) -> dict[str, str]:
        return {"vial": self.vial, "from_station": self.from_station, "from_slot": self.from_slot,
                "to_station": self.to_station, "to_slot": self.to_slot}


@dataclass
class VialTracker:
    """Where every vial is; which slots are reserved by running transfers."""

    slots: dict[str, list[str]]                       # station -> its slots, in the order to use them
    positions: dict[str, tuple[str, str]] = field(default_factory=dict)   # vial -> (station, slot)
    bindings: dict[str, str] = field(default_factory=dict)               # "<owner>:<logical>" -> vial
    reserved: set[tuple[str, str]] = field(default_factory=set)          # (station, slot)
    busy_vials: set[str] = field(default_factory=set)

    @classmethod
    def from_state(cls, slots: dict[str, list[str]], state: dict[str, Any]) -> "VialTracker":
        problems = []
        positions: dict[str, tuple[str, str]] = {}
        for vial, where in (state.get("positions") or {}).items():
            station, slot = where
            if slot not in slots.get(station, []):
                problems.append({"field": f"vials.{vial}", "value": f"{station}/{slot}",
                                 "limit": {k: v for k, v in slots.items()}, "message": "no such station slot"})
            positions[vial] = (station, slot)
        taken = [p for p in positions.values()]
        if len(set(taken)) != len(taken):
            problems.append({"field": "vials", "value": sorted(map("/".join, taken)), "limit": "one vial per slot",
                             "message": "two vials in one slot"})
        if problems:
            raise ValidationError("vial positions are inconsistent", problems=problems)
        return cls(slots, positions, dict(state.get("bindings") or {}))

    def state(self) -> dict[str, Any]:
        return {"positions": {v: list(p) for v, p in self.positions.items()}, "bindings": dict(self.bindings)}

    def at(self, station: str, slot: str) -> Optional[str]:
        for vial, pos in self.positions.items():
            if pos == (station, slot):
                return vial
        return None

    def _free_slot(self, station: str) -> Optional[str]:
        occupied = {s for v, (st, s) in self.positions.items() if st == station}
        for slot in self.slots.get(station, []):
            if slot not in occupied and (station, slot) not in self.reserved:
                return slot
        return None

    def plan(self, owner: str, logical: str, from_station: str, to_station: str) -> Optional[Transfer]:
        """The transfer to make now, or None if the vial or a target slot is not available yet."""
        for station in (from_station, to_station):
            if station not in self.slots:
                raise NotFoundError(f"station {station!r} has no vial slots in the lab profile "
                                    f"({sorted(self.slots)})")
        key = f"{owner}:{logical}"
        vial = self.bindings.get(key)
        if vial is not None:
            if vial in self.busy_vials:
                return None
            station, slot = self.positions.get(vial, ("", ""))
            if station != from_station:
                raise ValidationError(f"vial {logical} ({vial}) is at {station or 'an unknown place'}, "
                                      f"not {from_station}",
                                      problems=[{"field": "from_station", "value": from_station,
                                                 "limit": station or "unknown", "message": "vial elsewhere"}])
        else:
            bound = set(self.bindings.values())
            slot = vial = None
            for s in self.slots[from_station]:
                v = self.at(from_station, s)
                if v is not None and v not in bound and v not in self.busy_vials and (from_station, s) not in self.reserved:
                    vial, slot = v, s
                    break
            if vial is None:
                return None
        target = self._free_slot(to_station)
        if target is None:
            return None
        return Transfer(vial, from_station, slot, to_station, target)

    def reserve(self, owner: str, logical: str, transfer: Transfer) -> None:
        self.bindings[f"{owner}:{logical}"] = transfer.vial
        self.busy_vials.add(transfer.vial)
        self.reserved.add((transfer.to_station, transfer.to_slot))

    def finish(self, transfer: Transfer, moved: bool) -> None:
        self.busy_vials.discard(transfer.vial)
        self.reserved.discard((transfer.to_station, transfer.to_slot))
        if moved:
            self.positions[transfer.vial] = (transfer.to_station, transfer.to_slot)

    def release_owner(self, owner: str, home: str = "") -> list[str]:
        """A task ended: its logical vials are no longer bound (the vials stay where they are).
        Returns the vials it leaves away from ``home`` (the rack), for the planner to tidy up."""
        stray = []
        for key in [k for k in self.bindings if k.startswith(owner + ":")]:
            vial = self.bindings.pop(key)
            if home and self.positions.get(vial, (home, ""))[0] != home:
                stray.append(vial)
        return stray

    def adopt(self, owner: str, logical: str, vial: str) -> None:
        """Bind ``vial`` to ``owner``'s logical name (a tidy-up task taking over a stray vial)."""
        self.bindings[f"{owner}:{logical}"] = vial

    def where(self, owner: str, logical: str) -> Optional[tuple[str, str]]:
        vial = self.bindings.get(f"{owner}:{logical}")
        return self.positions.get(vial) if vial is not None else None


class LabArbiter:
    """Resources and vial slots shared by every executor of the lab (thread-safe)."""

    def __init__(self, capacities: dict[str, int] | None = None, vials: VialTracker | None = None,
                 on_change: Callable[[dict[str, Any]], None] | None = None, home: str = "") -> None:
        self.capacities = dict(capacities or {})
        self.home = home                    # where vials belong between tasks (the rack)
        self.vials = vials
        self.on_change = on_change          # persist the vial state (called under the lock)
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}
        self._waiting: dict[tuple[str, str], tuple[int, Any]] = {}   # (owner, step id) -> (priority, step)
        self._listeners: list[Callable[[], None]] = []

    # -- listeners: executors waiting for a resource are woken when one is released -------------
    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(wake)

        def unlisten() -> None:
            with self._lock:
                if wake in self._listeners:
                    self._listeners.remove(wake)
        return unlisten

    def _wake(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    # -- decisions ------------------------------------------------------------------------------
    def _free(self, step: Any) -> bool:
        return all(self._in_use.get(r, 0) < self.capacities.get(r, 1) for r in step.resources)

    def _transfer_for(self, owner: str, step: Any) -> Optional[Transfer]:
        p = step.params
        return self.vials.plan(owner, p["vial_id"], p["from_station"], p["to_station"])  # type: ignore[union-attr]

    def _startable(self, owner: str, step: Any) -> tuple[bool, Optional[Transfer]]:
        if not self._free(step):
            return False, None
        if self.vials is not None and step.op in TRANSFER_OPS:
            transfer = self._transfer_for(owner, step)
            return transfer is not None, transfer
        return True, None

    def try_start(self, owner: str, priority: int, step: Any) -> tuple[bool, Optional[Transfer]]:
        """Start ``step`` of ``owner`` (lower priority number = older task) if it can start now and
        no older task's waiting step that needs one of its resources could start instead."""
        with self._lock:
            ok, transfer = self._startable(owner, step)
            if ok:
                for (other, sid), (prio, other_step) in self._waiting.items():
                    if prio < priority and other != owner and set(other_step.resources) & set(step.resources):
                        if self._startable(other, other_step)[0]:
                            ok, transfer = False, None
                            break
            if not ok:
                self._waiting[(owner, step.id)] = (priority, step)
                return False, None
            self._waiting.pop((owner, step.id), None)
            for r in step.resources:
                self._in_use[r] = self._in_use.get(r, 0) + 1
            if transfer is not None:
                self.vials.reserve(owner, step.params["vial_id"], transfer)  # type: ignore[union-attr]
            return True, transfer

    def finish(self, owner: str, step: Any, transfer: Optional[Transfer], succeeded: bool) -> None:
        with self._lock:
            for r in step.resources:
                self._in_use[r] = max(0, self._in_use.get(r, 0) - 1)
            if transfer is not None and self.vials is not None:
                self.vials.finish(transfer, moved=succeeded)
                self._changed()
        self._wake()

    def forget(self, owner: str) -> list[str]:
        """``owner``'s run ended: drop its waiting steps and its vial bindings; returns the vials it
        left away from the home station (``home``)."""
        stray: list[str] = []
        with self._lock:
            for key in [k for k in self._waiting if k[0] == owner]:
                del self._waiting[key]
            if self.vials is not None:
                stray = self.vials.release_owner(owner, self.home)
                self._changed()
        self._wake()
        return stray

    def reconcile(self, positions: dict[str, tuple[str, str]]) -> list[str]:
        """Replace the vial positions with what the robot reports (no task may be running); returns
        the vials away from the home station."""
        with self._lock:
            if self.vials is None:
                return []
            fresh = VialTracker.from_state(self.vials.slots, {"positions": {v: list(p) for v, p in positions.items()}})
            self.vials.positions = fresh.positions
            self.vials.bindings.clear()
            self._changed()
            return sorted(v for v, (st, _) in fresh.positions.items() if self.home and st != self.home)

    def relocate(self, vial: str, where: Optional[tuple[str, str]]) -> Optional[str]:
        """The robot reports ``vial`` at ``where`` (None: in no slot it knows, e.g. dropped): the
        books follow, whatever a transfer in flight was meant to do. A report the books cannot
        hold (no such slot, or the slot booked for another vial) changes nothing and is returned
        as the reason, so a confused report never becomes a journal the planner cannot restart
        from."""
        with self._lock:
            if self.vials is None:
                return None
            if where is None:
                self.vials.positions.pop(vial, None)
            else:
                station, slot = where
                if slot not in self.vials.slots.get(station, []):
                    return f"{station}/{slot} is not a slot of the lab profile"
                other = self.vials.at(station, slot)
                if other is not None and other != vial:
                    return f"{station}/{slot} holds {other} in the planner's books"
                self.vials.positions[vial] = (station, slot)
            self._changed()
            return None

    def adopt(self, owner: str, logical: str, vial: str) -> None:
        with self._lock:
            if self.vials is not None:
                self.vials.adopt(owner, logical, vial)

    def position(self, vial: str) -> Optional[tuple[str, str]]:
        with self._lock:
            return self.vials.positions.get(vial) if self.vials is not None else None

    def slot_of(self, owner: str, logical: str) -> Optional[tuple[str, str]]:
        with self._lock:
            return self.vials.where(owner, logical) if self.vials is not None else None

    def _changed(self) -> None:
        if self.on_change is not None and self.vials is not None:
            self.on_change(self.vials.state())

    def in_use(self) -> dict[str, int]:
        with self._lock:
            return {r: n for r, n in self._in_use.items() if n}
