"""Raise or clear the software e-stop from a terminal (no ros2cli needed):

    .venv/bin/python scripts/estop.py on "door open"     # every actuator node goes to its safe state
    .venv/bin/python scripts/estop.py off                # clear (nodes accept goals / activation again)

Publishes aichemist_interfaces/msg/SafetyState on /safety/estop (reliable, transient local) and
stays up until Ctrl-C, so that nodes started later still receive the latched state. The software
e-stop complements the lab's hard-wired emergency stop; it never replaces it.
"""

from __future__ import annotations

import argparse
import getpass

import rclpy

from aichemist_interfaces.msg import SafetyState
from aichemist_nodes.node_base import ESTOP_QOS, ESTOP_TOPIC, publish_estop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state", choices=["on", "off"])
    parser.add_argument("reason", nargs="*", help="why (logged by every node)")
    parser.add_argument("--source", default=f"operator:{getpass.getuser()}")
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("operator_estop")
    publisher = node.create_publisher(SafetyState, ESTOP_TOPIC, ESTOP_QOS)
    publish_estop(node, publisher, args.state == "on", args.source, " ".join(args.reason) or "manual")
    print(f"e-stop {args.state} published on {ESTOP_TOPIC}; Ctrl-C to stop latching it", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
