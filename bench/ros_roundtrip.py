"""Round trip of a no-op goal through the planner's device-call path, against a baseline.

The device-call path is the one the planner's device adapters use: a
``node_base.DeviceActionClient`` and ``node_base.call_action`` (send goal -> accepted -> result;
``--client rclpy`` uses rclpy's ActionClient instead, for comparison), here to the no-op
device node running as its own process (started from launch/bench.yaml by the embedded
launcher). The baseline, in the same run and to the same process, is a std_srvs/Trigger call.

    .venv/bin/python bench/ros_roundtrip.py [--calls 1000]

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--client", choices=["device", "rclpy"], default="device",
                        help="the planner's DeviceActionClient (default) or rclpy's ActionClient")
    opts = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from std_srvs.srv import Trigger

    from aichemist.launcher import Launcher
    from aichemist_interfaces.action import Ping
    from aichemist_nodes.node_base import DeviceActionClient, call_action

    with Launcher(REPO / "launch" / "bench.yaml", out=None, run_dir=f"/tmp/aichemist-bench-{os.getpid()}"):
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

            samples: dict[str, list[float]] = {"trigger": [], "action": []}
            for name, fn in (("trigger", trigger_once), ("action", action_once)):
                for _ in range(opts.warmup):
                    fn()
                for i in range(opts.calls):
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - t0) * 1e3)
                    if (i + 1) % 250 == 0:
                        print(f"{name}: {i + 1}/{opts.calls}", file=sys.stderr)
        finally:
            executor.shutdown()
            spinner.join(timeout=5)
            node.destroy_node()
            rclpy.shutdown()

    a50, a99 = percentile(samples["action"], 50), percentile(samples["action"], 99)
    t50, t99 = percentile(samples["trigger"], 50), percentile(samples["trigger"], 99)
    print(f"action  mean {statistics.mean(samples['action']):.3f} ms  p50 {a50:.3f}  p99 {a99:.3f}", file=sys.stderr)
    print(f"trigger mean {statistics.mean(samples['trigger']):.3f} ms  p50 {t50:.3f}  p99 {t99:.3f}", file=sys.stderr)
    print(f"client: {opts.client}", file=sys.stderr)
    print(f"RESULT action_p50_ms={a50:.3f} action_p99_ms={a99:.3f} trigger_p50_ms={t50:.3f} "
          f"ratio_p50={a50 / t50:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
