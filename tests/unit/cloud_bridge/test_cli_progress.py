"""`aichemist submit --wait` shows a task's progress: one line per change, from the SSE events
as the bridge stores them ({"id", "task_id", "type", "data": {...}, "at"})."""

from __future__ import annotations

from cloud_bridge.cli import ProgressPrinter


def _stored(kind: str, data: dict) -> dict:
    return {"event": kind, "data": {"id": 1, "task_id": "t", "type": kind, "data": data, "at": 0.0}}


def test_progress_lines_follow_changes_only(capsys):
    printer = ProgressPrinter()
    heating = {"phase": "running", "progress": 0.1,
               "detail": {"step_id": "e0.run_flow", "device": "flow_reactor", "phase": "heating"}}
    events = [
        {"event": "snapshot", "data": {"status": "queued"}},
        _stored("claimed", {}),
        _stored("progress", heating),
        _stored("progress", heating),
        _stored("progress", {**heating, "detail": {**heating["detail"], "phase": "equilibrating"}}),
        {"event": "heartbeat", "data": {}},
        _stored("finished", {"status": "succeeded", "code": 0}),
    ]
    for ev in events:
        printer(ev)
    assert capsys.readouterr().err.splitlines() == [
        "status: queued", "claimed",
        "[ 10.0%] running (e0.run_flow, flow_reactor, heating)",
        "[ 10.0%] running (e0.run_flow, flow_reactor, equilibrating)",
        "finished: succeeded"]


def test_unreachable_bridge_is_a_clear_error_not_a_traceback():
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "aichemist.cli", "status", "--url", f"http://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"cannot reach the bridge at http://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
