"""The lab arbiter: tasks' executors share the robot, the reactor, the HPLC and the vial slots."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from aichemist.clock import WallClock
from aichemist.errors import ValidationError
from planner.arbiter import LabArbiter, VialTracker
from planner.compiler import Step, compile_task
from planner.executor import Executor, StepJournal
from planner.lab import load_lab
from planner.runner import run_task

GOOD = {"residence_time_min": 1.0, "temp_c": 90.0, "equivalents": 2.0, "conc_dfnb_m": 0.3}


def tracker(lab):
    return VialTracker.from_state(lab.vial_tracker_slots(),
                                  {"positions": {v: w.split("/") for w, v in lab.vials.items()}})


def test_a_vial_follows_its_task_and_slots_are_never_shared():
    lab = load_lab("default")
    vials = tracker(lab)
    fetch = vials.plan("t1", "vial0", "vial_rack", "reactor_outlet")
    assert (fetch.vial, fetch.from_slot, fetch.to_slot) == ("vial_r01", "A1", "A1")
    vials.reserve("t1", "vial0", fetch)
    other = vials.plan("t2", "vial0", "vial_rack", "reactor_outlet")
    assert (other.vial, other.to_slot) == ("vial_r02", "A2")  # not the reserved vial, not the reserved slot
    vials.reserve("t2", "vial0", other)
    assert vials.plan("t3", "vial0", "vial_rack", "reactor_outlet") is None  # the outlet's two slots are taken
    vials.finish(fetch, moved=True)
    assert vials.where("t1", "vial0") == ("reactor_outlet", "A1")
    move = vials.plan("t1", "vial0", "reactor_outlet", "hplc_autosampler")
    assert (move.vial, move.from_slot, move.to_station, move.to_slot) == ("vial_r01", "A1", "hplc_autosampler", "A1")
    vials.finish(other, moved=False)  # a failed fetch: the vial stays in the rack
    assert vials.positions["vial_r02"] == ("vial_rack", "A2")


def test_a_transfer_from_the_wrong_station_is_refused_with_the_vials_place():
    lab = load_lab("default")
    vials = tracker(lab)
    fetch = vials.plan("t1", "vial0", "vial_rack", "reactor_outlet")
    vials.reserve("t1", "vial0", fetch)
    vials.finish(fetch, moved=True)
    with pytest.raises(ValidationError) as err:
        vials.plan("t1", "vial0", "hplc_autosampler", "vial_rack")
    assert "reactor_outlet" in str(err.value)


def test_inconsistent_saved_positions_name_the_vial_and_slot():
    lab = load_lab("default")
    with pytest.raises(ValidationError) as err:
        VialTracker.from_state(lab.vial_tracker_slots(), {"positions": {"vial_x": ["vial_rack", "Z9"]}})
    assert err.value.problems[0]["field"] == "vials.vial_x" and err.value.problems[0]["value"] == "vial_rack/Z9"


def test_an_older_tasks_waiting_step_goes_first():
    arbiter = LabArbiter({"robot": 1, "reactor": 1})
    older = Step("t1.move", "move_vial", ["robot"], 1.0)
    younger = Step("t2.fetch", "fetch_vial", ["robot"], 1.0)
    holder = Step("t0.x", "wait", ["robot"], 1.0)
    assert arbiter.try_start("t0", 0, holder)[0]
    assert not arbiter.try_start("t1", 1, older)[0]       # robot busy: t1 waits
    arbiter.finish("t0", holder, None, True)
    assert not arbiter.try_start("t2", 2, younger)[0]     # free, but the older t1 could take it now
    assert arbiter.try_start("t1", 1, older)[0]
    arbiter.finish("t1", older, None, True)
    assert arbiter.try_start("t2", 2, younger)[0]


class Devices:
    """Adapters that record which task holds which device, and where each task's vial was."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holding: dict[str, int] = {}
        self.max_holding: dict[str, int] = {}
        self.collected_into: dict[str, str] = {}
        self.measured_at: dict[str, str] = {}
        self.arbiter: LabArbiter | None = None

    def _use(self, device: str, ctx, seconds: float) -> None:
        with self.lock:
            self.holding[device] = self.holding.get(device, 0) + 1
            self.max_holding[device] = max(self.max_holding.get(device, 0), self.holding[device])
        try:
            ctx.sleep(seconds)
        finally:
            with self.lock:
                self.holding[device] -= 1

    def adapters(self, lab):
        def transfer(step, ctx):
            assert ctx.transfer is not None and ctx.transfer.from_station == step.params["from_station"]
            self._use("robot", ctx, 0.01)
            return ctx.transfer.to_dict()

        def run_flow(step, ctx):
            station, slot = self.arbiter.slot_of(ctx.owner, step.params["collect_vial"])
            self.collected_into[ctx.owner] = lab.station(station).slots[slot]
            self._use("reactor", ctx, 0.03)
            return {"yield_fraction": 0.5, "sty_kg_m3_h": 1.0, "e_factor": 2.0}

        def measure(step, ctx):
            station, slot = self.arbiter.slot_of(ctx.owner, step.params["vial_id"])
            assert station == "hplc_autosampler"
            self.measured_at[ctx.owner] = slot
            self._use("hplc", ctx, 0.04)
            return {"yield_fraction": 0.5}

        return {"fetch_vial": transfer, "move_vial": transfer, "store_vial": transfer, "run_flow": run_flow,
                "measure": measure}


def test_concurrent_tasks_share_the_lab_without_double_booking_or_deadlock(tmp_path):
    lab = load_lab("default")
    assert lab.analysis == "hplc_robot"
    saved: list[dict] = []
    arbiter = LabArbiter({r.name: r.capacity for r in lab.resources}, tracker(lab), on_change=saved.append)
    devices = Devices()
    devices.arbiter = arbiter
    journal = StepJournal(tmp_path / "j.db")
    task = {"kind": "flow_experiment", "conditions": GOOD}
    assert [s.op for s in compile_task(task, lab).steps] == ["fetch_vial", "run_flow", "move_vial", "measure",
                                                             "store_vial"]

    def one(n: int) -> dict:
        ex = Executor(devices.adapters(lab), journal, clock=WallClock(), arbiter=arbiter, owner=f"t{n}", priority=n)
        return run_task(f"t{n}", task, lab, ex)

    with ThreadPoolExecutor(max_workers=8) as pool:  # 8 tasks, 6 vials, 2 outlet slots, 5 autosampler slots
        results = list(pool.map(one, range(8), timeout=60))
    assert all(r["experiments"][0]["yield_fraction"] == 0.5 for r in results)
    assert devices.max_holding == {"robot": 1, "reactor": 1, "hplc": 1}
    assert set(devices.collected_into.values()) <= {"vial_1", "vial_2"}
    # every vial is back in the rack, nothing reserved or bound; the last state was persisted
    assert sorted(st for st, _ in arbiter.vials.positions.values()) == ["vial_rack"] * 6
    assert not arbiter.vials.reserved and not arbiter.vials.bindings and not arbiter.in_use()
    assert saved[-1]["positions"] == {v: list(p) for v, p in arbiter.vials.positions.items()}


def test_a_failed_task_reports_the_vials_it_left_away_from_the_rack(tmp_path):
    from aichemist.errors import DeviceError

    lab = load_lab("default")
    arbiter = LabArbiter({r.name: r.capacity for r in lab.resources}, tracker(lab), home=lab.rack_station)
    devices = Devices()
    devices.arbiter = arbiter
    adapters = devices.adapters(lab)

    def broken_reactor(step, ctx):
        raise DeviceError("pump_dfnb: motor stalled")

    ex = Executor({**adapters, "run_flow": broken_reactor}, StepJournal(tmp_path / "j.db"), clock=WallClock(),
                  arbiter=arbiter, owner="t1")
    with pytest.raises(DeviceError):
        run_task("t1", {"kind": "flow_experiment", "conditions": GOOD}, lab, ex)
    assert ex.left_behind == ["vial_r01"] and arbiter.position("vial_r01") == ("reactor_outlet", "A1")
    # the planner's tidy-up adopts the stray vial and stores it
    arbiter.adopt("t1/tidy", "vial_r01", "vial_r01")
    tidy = Executor(adapters, StepJournal(tmp_path / "j.db"), clock=WallClock(), arbiter=arbiter, owner="t1/tidy")
    tidy.run("t1/tidy", [Step("tidy", "store_vial", ["robot"], 1.0,
                              params={"vial_id": "vial_r01", "from_station": "reactor_outlet", "to_station": "vial_rack"})])
    assert arbiter.position("vial_r01")[0] == "vial_rack" and tidy.left_behind == []


def test_an_interrupted_transfer_leaves_the_books_where_the_robot_says_the_vial_is():
    lab = load_lab("default")
    saved = []
    arbiter = LabArbiter({"robot": 1}, tracker(lab), on_change=saved.append, home="vial_rack")
    fetch = Step("fetch", "fetch_vial", ["robot"], 10.0,
                 params={"vial_id": "vial0", "from_station": "vial_rack", "to_station": "reactor_outlet"})
    ok, transfer = arbiter.try_start("t1", 0, fetch)
    assert ok and transfer.vial == "vial_r01"
    # the robot placed it, then the goal was cancelled on its way back: the step failed, yet the
    # vial is at the outlet, and a tidy-up must start from there
    arbiter.relocate("vial_r01", ("reactor_outlet", "A1"))
    arbiter.finish("t1", fetch, transfer, succeeded=False)
    assert arbiter.position("vial_r01") == ("reactor_outlet", "A1")
    assert saved[-1]["positions"]["vial_r01"] == ["reactor_outlet", "A1"]  # persisted for a restart
    assert arbiter.forget("t1") == ["vial_r01"]  # a stray for the tidy-up
    # a report the books cannot hold changes nothing (the journal stays one the planner restarts from)
    assert "not a slot" in arbiter.relocate("vial_r01", ("reactor_outlet", "Z9"))
    assert "holds vial_r02" in arbiter.relocate("vial_r01", ("vial_rack", "A2"))
    assert arbiter.position("vial_r01") == ("reactor_outlet", "A1")
    VialTracker.from_state(lab.vial_tracker_slots(), saved[-1])  # what was saved loads again
    assert arbiter.relocate("vial_r01", None) is None  # dropped: in no slot the robot knows
    assert arbiter.position("vial_r01") is None
