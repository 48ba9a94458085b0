"""twin_node: hosts the digital twin in one process.

- builds ``sim.lab_twin.LabTwin`` from the subsystem plugins in its params (the flow reactor twin
  by default: reactor physics + the device emulators);
- serves every device emulator on a pseudo-terminal with a stable symlink
  ``<twin_dir>/<device_name>`` (``sim.pty_host.PtyHost``): drivers open it like a serial port;
- advances simulated time at ``real_time_factor`` and publishes it on /clock, so nodes started
  with ``use_sim_time: true`` wait on the twin's time;
- service /twin/inject_fault (TwinInjectFault): faults into an emulator or a subsystem (tests,
  demos of the interlocks across processes);
- with ``robot_carries_vials``, collected vials reach the HPLC's autosampler only when the robot
  places them there (subscribes /manipulator/vial_transfers; sim.vial_hand_over);
- with ``state_path``, the twin outlives its process (``sim.lab_twin.TwinStateStore``): simulated
  time and the vials (collection vials, the autosampler's rack, vials the robot carries) are
  written atomically every ``state_save_period_s`` of wall time (from the runner thread) and on
  each vial event, and restored at start. A respawned twin resumes /clock at the saved time plus
  the longest the save can lag (so no node's ROS time goes backwards) and serves its ports again
  at the same links; its devices are in their power-on state (pumps stopped, valves home).
"""

from __future__ import annotations

import json
import os

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg

from aichemist.errors import AIChemistError, ValidationError
from aichemist_interfaces.srv import TwinInjectFault
from aichemist_nodes.node_base import declare_params, load_params, set_error, spin_node
from sim.lab_twin import LabTwin, RealTimeRunner, TwinParams, TwinStateStore, default_twin_dir
from sim.pty_host import PtyHost


class TwinNode(Node):
    def __init__(self) -> None:
        super().__init__("twin_node")
        declare_params(self, TwinParams)
        self.params = load_params(self, TwinParams)
        self.twin_dir = self.params.twin_dir or default_twin_dir()
        os.makedirs(self.twin_dir, exist_ok=True)
        self.twin = LabTwin.from_config(self.params.subsystems, max_step_s=self.params.max_step_s)
        self.hand_over = None
        if self.params.robot_carries_vials:
            from sim.vial_hand_over import VialHandOver

            self.hand_over = VialHandOver(self.twin.subsystems, self.params.vial_hand_over, lock=self.twin._lock)
        self.runner = RealTimeRunner(self.twin, self.params.real_time_factor, 1.0 / self.params.clock_rate_hz,
                                     on_tick=self._publish_clock)
        self.state_store = None
        if self.params.state_path:
            rtf, period = self.params.real_time_factor, self.params.state_save_period_s
            self.state_store = TwinStateStore(self.params.state_path, self.twin, {"vial_hand_over": self.hand_over},
                                              period_s=period, max_sim_gap_s=rtf * period,
                                              max_tick_advance_s=self.runner.max_advance_s)
            state = self.state_store.load()
            if state is not None:
                resumed = self.state_store.restore(state)
                self.get_logger().warning(
                    f"restarted: resuming at t = {resumed:.1f} s (saved {state['t_s']:.1f} s + at most "
                    f"{state.get('resume_margin_s', 0.0):.1f} s it could lag); vials restored from "
                    f"{self.params.state_path}; devices in their power-on state")
            self.runner.state_store = self.state_store
        self.hosts = []
        for name in self.twin.emulators:
            link = os.path.join(self.twin_dir, name)
            if os.path.islink(link):  # a killed predecessor's link: its pty is gone
                os.unlink(link)
        for name, emulator in self.twin.emulators.items():
            host = PtyHost(emulator, os.path.join(self.twin_dir, name)).start()
            self.hosts.append(host)
            self.get_logger().info(f"{name}: {type(emulator).__name__} on {host.link_path}")
        clock_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", clock_qos)
        self.create_service(TwinInjectFault, "/twin/inject_fault", self._on_inject_fault)
        if self.hand_over is not None:
            from aichemist_interfaces.msg import VialTransfer

            self.create_subscription(VialTransfer, "/manipulator/vial_transfers", self._on_vial_transfer,
                                     QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.runner.start()
        self.get_logger().info(f"twin running at {self.params.real_time_factor:g}x real time from "
                               f"t = {self.twin.now():.1f} s, ports in {self.twin_dir}")

    def _on_inject_fault(self, request, response):  # noqa: ANN001
        try:
            kwargs = json.loads(request.kwargs_json) if request.kwargs_json.strip() else {}
            if not isinstance(kwargs, dict):
                raise ValidationError("kwargs_json must be a JSON object")
            self.twin.inject_fault(request.device, request.fault, **kwargs)
            response.code, response.error_type = 0, ""
            response.message = (f"{request.device}: {request.fault} injected" if request.fault
                                else f"{request.device}: faults cleared")
            self.get_logger().warning(response.message)
        except json.JSONDecodeError as exc:
            set_error(response, ValidationError(f"kwargs_json is not valid JSON: {exc}"))
        except AIChemistError as exc:
            set_error(response, exc)
        return response

    def _on_vial_transfer(self, msg) -> None:  # noqa: ANN001
        self.hand_over.on_transfer(msg.vial_id, msg.source_station, msg.source_slot, msg.target_station,
                                   msg.target_slot)
        if self.state_store is not None:  # a vial event: on disk before anything else happens
            try:
                self.state_store.save()
            except OSError as exc:
                self.get_logger().error(f"twin state: cannot write {self.state_store.path}: {exc}")
        self.get_logger().info(f"robot moved {msg.vial_id}: {msg.source_station}/{msg.source_slot} -> "
                               f"{msg.target_station}/{msg.target_slot}")

    def _publish_clock(self, sim_time_s: float) -> None:
        msg = ClockMsg()
        ns = int(round(sim_time_s * 1e9))
        msg.clock.sec, msg.clock.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
        try:
            self._clock_pub.publish(msg)
        except Exception:  # shutting down
            pass

    def on_process_exit(self) -> None:
        self.runner.stop()
        for host in self.hosts:
            host.stop()


def main(args=None) -> int:  # noqa: ANN001
    return spin_node(TwinNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
