"""The embedded launcher with real nodes: cross-process calls, respawn, clean shutdown."""

from __future__ import annotations

import os
import select
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from aichemist.launcher import Launcher

pytestmark = pytest.mark.ros
REPO = pathlib.Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_noop_device_answers_action_and_service_across_processes(launch, ros_probe):
    from std_srvs.srv import Trigger
    from rclpy.action import ActionClient

    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import call_action

    launcher = launch("launch/bench.yaml")
    client = ros_probe.create_client(Trigger, "/noop_device/trigger")
    assert client.wait_for_service(timeout_sec=15.0)
    response = client.call(Trigger.Request(), timeout_sec=5.0)
    assert response is not None and response.success and response.message == "ok"

    action = ActionClient(ros_probe, Ping, "/noop_device/ping")
    goal = Ping.Goal(payload="hello")
    result = call_action(action, goal, timeout_s=10.0)
    assert result.code == 0 and result.payload == "hello"
    assert launcher.pid("noop_device") is not None


def _crasher_manifest(tmp_path: pathlib.Path) -> pathlib.Path:
    pkg = tmp_path / "crashpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "crasher.py").write_text(textwrap.dedent("""
        import os, sys
        print("crasher up", os.getpid(), flush=True)
        sys.exit(3)
    """))
    manifest = tmp_path / "crash.yaml"
    manifest.write_text(textwrap.dedent(f"""
        name: crash
        env: {{PYTHONPATH: "{tmp_path}"}}
        nodes:
          - {{name: crasher, package: crashpkg, executable: crasher, respawn: true,
              respawn_delay_s: 0.1, max_respawns: 2}}
    """))
    return manifest


def test_respawn_is_bounded_and_output_is_prefixed(tmp_path):
    lines: list[str] = []

    class Sink:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    launcher = Launcher(_crasher_manifest(tmp_path), out=Sink(), run_dir=tmp_path / "run")
    with launcher:
        launcher.wait_for_line("crasher", r"respawning \(2/2\)", timeout_s=30)
        launcher.wait_for_line("crasher", r"exited with code 3", timeout_s=30)
    starts = [line for line in lines if "crasher up" in line]
    assert len(starts) >= 2
    assert all(line.startswith("[crasher] ") for line in lines)


def test_sigterm_to_aichemist_up_stops_every_node(tmp_path):
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, "-m", "aichemist.cli", "up", str(REPO / "launch/bench.yaml"),
                             "--arg", f"run_dir={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    started = threading.Event()
    node_pid: list[int] = []
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "[noop_device] [launcher] started (pid" in line:
                node_pid.append(int(line.split("pid ")[1].rstrip(")\n")))
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(30), "".join(output)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    reader.join(timeout=5)
    assert not _alive(node_pid[0]), "the node outlived the launcher"
    assert any("stopped (exit code" in line for line in output), "".join(output)


def test_nodes_do_not_outlive_a_killed_launcher(tmp_path):
    """Even a SIGKILLed `aichemist up` leaves no node behind (PR_SET_PDEATHSIG)."""
    proc = subprocess.Popen([sys.executable, "-m", "aichemist.cli", "up", str(REPO / "launch/bench.yaml"),
                             "--arg", f"run_dir={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    node_pid = None
    for line in proc.stdout:
        if "[noop_device] [launcher] started (pid" in line:
            node_pid = int(line.split("pid ")[1].rstrip(")\n"))
            break
    assert node_pid is not None
    pidfd = os.pidfd_open(node_pid)
    proc.kill()
    proc.wait(timeout=10)
    readable, _, _ = select.select([pidfd], [], [], 15.0)  # a pidfd is readable when its process exits
    os.close(pidfd)
    assert readable, "the node outlived its SIGKILLed launcher"
