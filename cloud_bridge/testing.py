"""Test helpers shipped with the bridge (principle: test doubles live in the packages): a settable
clock, a valid task document, a set of API keys covering the scopes and kinds, auth headers."""

from __future__ import annotations

from cloud_bridge import store


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


TASK = {"kind": "flow_experiment", "conditions": {"residence_time_min": 1.0, "temp_c": 90.0,
                                                  "equivalents": 2.0, "conc_dfnb_m": 0.2}}


def task(**conditions: float) -> dict:
    return {"kind": "flow_experiment", "conditions": {**TASK["conditions"], **conditions}}



class Keys:
    def __init__(self, db) -> None:
        self.admin, _ = store.create_key(db, lab="lab1", scopes=["submit", "read", "approve", "admin"],
                                         kind="human", name="alice")
        self.model, _ = store.create_key(db, lab="lab1", scopes=["submit", "read"], kind="model_service",
                                         name="brain")
        self.scheduler, _ = store.create_key(db, lab="lab1", scopes=["submit", "read"], kind="scheduler")
        self.reader, _ = store.create_key(db, lab="lab1", scopes=["read"], kind="human")
        self.model_approver, _ = store.create_key(db, lab="lab1", scopes=["read", "approve"], kind="model_service")
        self.other_lab, _ = store.create_key(db, lab="lab2", scopes=["submit", "read", "approve", "admin"])



def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}
