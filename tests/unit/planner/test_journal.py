"""The task journal: once per task id, terminal state written once, recovery after a crash."""

from __future__ import annotations

import pytest

from aichemist.errors import ConflictError
from planner.journal import TaskJournal


def test_a_task_id_runs_once_and_its_terminal_state_is_written_once(tmp_path):
    j = TaskJournal(tmp_path / "j.db")
    j.begin("t1", "{}")
    with pytest.raises(ConflictError, match="already run"):
        j.begin("t1", "{}")
    j.finish("t1", code=0, result={"experiments": [{"yield_fraction": 0.8}]})
    with pytest.raises(ConflictError, match="written once"):
        j.finish("t1", code=99, message="late")
    assert j.get("t1")["state"] == "succeeded"
    assert j.get("t1")["result"]["experiments"][0]["yield_fraction"] == 0.8
    assert j.get("nope") is None


def test_recover_fails_tasks_in_flight_after_a_restart(tmp_path):
    j = TaskJournal(tmp_path / "j.db")
    j.begin("running", "{}")
    j.begin("done", "{}")
    j.finish("done", code=0)
    j.close()
    j2 = TaskJournal(tmp_path / "j.db")  # a new planner process
    assert j2.recover() == ["running"]
    assert j2.get("running")["state"] == "failed" and "restarted" in j2.get("running")["message"]
    assert j2.get("done")["state"] == "succeeded"
    with pytest.raises(ConflictError):
        j2.begin("running", "{}")
