"""Round trip of a no-op goal through the planner's device-call path, against a baseline.

The device-call path is the one the planner's device adapters use: a
``node_base.DeviceActionClient`` and ``node_base.call_action`` (send goal -> accepted -> result;
``--client rclpy`` uses rclpy's ActionClient instead, for comparison), here to the no-op
device node running as its own process (started from launch/bench.yaml by the embedded
launcher). The baseline, in the same run and to the same process, is a std_srvs/Trigger call
made the same way (call_async, wait on an event). The two alternate in blocks (``--rounds``) so
that a change of the host's load hits both; the no-op node's CPU time is read around each block
(``server_cpu_*_ms``: its CPU time per call, which the host's load does not inflate).

    .venv/bin/python bench/ros_roundtrip.py [--calls 1000] [--rounds 4] [--device-threads 1|4]

Last line: RESULT action_p50_ms=... action_p99_ms=... trigger_p50_ms=... ratio_p50=...
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def process_cpu_s(pid: int) -> float:
    """CPU seconds of all threads of a process (/proc/PID/task/*/schedstat, nanoseconds)."""
    total = 0
    for stat in pathlib.Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            pass
    return total / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4, help="alternating trigger/action blocks")
    parser.add_argument("--device-threads", type=int, default=1,
                        help="executor threads of the no-op node (1: as it runs; 4: as hardware nodes spin)")
    parser.add_argument("--client", choices=["device", "rclpy"], default="device",
                        help="the planner's DeviceActionClient (default) or rclpy's ActionClient")
    opts = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["NOOP_DEVICE_THREADS"] = str(opts.device_threads)

    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from std_srvs.srv import Trigger

    from aichemist.launcher import Launcher
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import DeviceActionClient, call_action

    run_dir = f"/tmp/aichemist-bench-{os.getpid()}"
    with Launcher(REPO / "launch" / "bench.yaml", out=None, run_dir=run_dir) as launcher:
        rclpy.init()
        node = rclpy.create_node("bench_roundtrip")
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            trigger = node.create_client(Trigger, "/noop_device/trigger")
            action = (DeviceActionClient(node, Ping, "/noop_device/ping") if opts.client == "device"
                      else ActionClient(node, Ping, "/noop_device/ping"))
            if not trigger.wait_for_service(timeout_sec=30) or not action.wait_for_server(timeout_sec=30):
                print("noop_device did not come up", file=sys.stderr)
                return 1

            def trigger_once() -> None:
                done = threading.Event()
                future = trigger.call_async(Trigger.Request())
                future.add_done_callback(lambda _f: done.set())
                if not done.wait(5.0) or not future.result().success:
                    raise RuntimeError("trigger failed")

            def action_once() -> None:
                call_action(action, Ping.Goal(payload="x"), timeout_s=5.0)

            server_pid = launcher.pid("noop_device")
            samples: dict[str, list[float]] = {"trigger": [], "action": []}
            server_cpu = {"trigger": 0.0, "action": 0.0}
            client_cpu = {"trigger": 0.0, "action": 0.0}
            for name, fn in (("trigger", trigger_once), ("action", action_once)):
                for _ in range(opts.warmup):
                    fn()
            per_round = max(1, opts.calls // opts.rounds)
            for r in range(opts.rounds):
                for name, fn in (("trigger", trigger_once), ("action", action_once)):
                    cpu0, own0 = process_cpu_s(server_pid), process_cpu_s(os.getpid())
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        fn()
                        samples[name].append((time.perf_counter() - t0) * 1e3)
                    server_cpu[name] += process_cpu_s(server_pid) - cpu0
                    client_cpu[name] += process_cpu_s(os.getpid()) - own0
                    print(f"{name}: round {r + 1}/{opts.rounds}", file=sys.stderr)
        finally:
            executor.shutdown()
            spinner.join(timeout=5)
            node.destroy_node()
            rclpy.shutdown()

    n = len(samples["action"])
    cpu_a, cpu_t = server_cpu["action"] / n * 1e3, server_cpu["trigger"] / n * 1e3
    print(f"client CPU per call: action {client_cpu['action'] / n * 1e3:.3f} ms, "
          f"trigger {client_cpu['trigger'] / n * 1e3:.3f} ms", file=sys.stderr)
    a50, a99 = percentile(samples["action"], 50), percentile(samples["action"], 99)
    t50, t99 = percentile(samples["trigger"], 50), percentile(samples["trigger"], 99)
    print(f"action  mean {statistics.mean(samples['action']):.3f} ms  p50 {a50:.3f}  p99 {a99:.3f}", file=sys.stderr)
    print(f"trigger mean {statistics.mean(samples['trigger']):.3f} ms  p50 {t50:.3f}  p99 {t99:.3f}", file=sys.stderr)
    print(f"client: {opts.client}, device threads: {opts.device_threads}, {n} calls each in "
          f"{opts.rounds} alternating rounds, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"RESULT action_p50_ms={a50:.3f} action_p99_ms={a99:.3f} trigger_p50_ms={t50:.3f} "
          f"ratio_p50={a50 / t50:.2f} trigger_p99_ms={t99:.3f} server_cpu_action_ms={cpu_a:.3f} "
          f"server_cpu_trigger_ms={cpu_t:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
