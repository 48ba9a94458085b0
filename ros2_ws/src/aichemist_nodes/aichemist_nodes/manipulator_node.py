"""manipulator_node: the mobile manipulator's actions over the pure-Python skills core.

Actions (aichemist_interfaces):
  /manipulator/navigate_to_station  NavigateToStation  drive to a station and re-localise on it
  /manipulator/pick_place           PickPlace          move a vial from one rack slot to another
Service:
  /manipulator/get_inventory        GetInventory       where the robot believes every vial is, and what it
                                                       holds (answered once configured, inactive too)
Topics: /manipulator/joint_states (sensor_msgs/JointState, arm + fingers),
        /manipulator/odom (nav_msgs/Odometry: the base pose the robot believes, frame "map"),
        /manipulator/vial_transfers (VialTransfer: each vial placed; the twin moves its contents).

Lifecycle: configure loads the lab layout and builds the planner and the robot's drivers;
activate enables motion. Goals are refused (result code, no motion) while an e-stop is active,
while inactive, while another goal runs, and for unknown stations/slots, empty sources or full
targets. A cancel halts the arm and the base at the next control step; the e-stop
(/safety/estop) does the same for a running goal, within one control period (20 ms of the
robot's simulated time, far inside the 200 ms budget).

Hardware: ``hardware: twin`` runs the robot's MuJoCo twin (sim.robot_twin) in this process,
stepped lock-step with the skills and paced either at ``twin_real_time_factor`` against the wall
clock, or (``pace_with: ros_clock`` + ``use_sim_time``) against twin_node's /clock, so the robot
shares the lab's simulated timeline; joint states and odometry carry that time. The localiser is the twin's ground truth
plus the fiducial pipeline's noise (``twin_ground_truth``) or the perception node's
/perception/locate_station service (``perception_service``).

The twin's world outlives the process when ``twin_state_path`` is set: the robot twin's world
(each vial's slot and pose, the base's true pose, the vial in the gripper) is saved atomically
there when a pick or a place finishes, when a vial is lost, at the end of every goal and at
cleanup, and loaded at configure. A respawned node (after a kill -9) so finds the vials where they
were; a vial that was in the gripper stands back in the slot it was picked from, and the robot's
belief (inventory, odometry) restarts from the restored world.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: the wrist camera renders headless

import math  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
from pydantic import Field, field_validator  # noqa: E402

from aichemist.errors import (AIChemistError, Cancelled, ConflictError, EmergencyStop, PerceptionError,  # noqa: E402
                              error_from_result)
from aichemist.params import Params, launch_substituted  # noqa: E402
from aichemist_nodes.node_base import (STATE_QOS, HardwareNode, action_server, call_service, set_error,  # noqa: E402
                                       spin_node)


class ManipulatorNodeParams(Params):
    layout_path: str = Field("", description="lab layout YAML; empty = sim/world/lab.yaml")
    hardware: Literal["twin"] = Field("twin", description="robot drivers: the in-process MuJoCo twin")
    localiser: Literal["twin_ground_truth", "perception_service"] = "twin_ground_truth"
    planner_backend: Literal["auto", "embedded", "moveit"] = "embedded"
    twin_real_time_factor: float = Field(10.0, ge=0.1, le=1000.0, description="simulated s per wall s")
    pace_with: Literal["wall", "ros_clock"] = Field(
        "wall", description="pace the robot twin against the wall clock (twin_real_time_factor) or the "
                            "node's ROS clock (use_sim_time: follows twin_node's /clock)")
    twin_seed: int = Field(0, ge=0, le=1_000_000, description="odometry error draw of the twin robot")
    start_station: str = Field("charging_dock", description="where the twin robot starts")
    joint_state_rate_hz: float = Field(20.0, ge=1.0, le=200.0)
    locate_timeout_s: float = Field(5.0, gt=0.0, le=60.0)
    wrist_camera_rate_hz: float = Field(
        0.0, ge=0.0, le=30.0, description="publish the twin's wrist_camera (/wrist_camera/image_raw, camera_info, "
                                          "pose in base_footprint) for perception_node; 0 = off")
    wrist_camera_trigger: bool = Field(
        False, description="serve /wrist_camera/trigger (std_srvs/Trigger): one frame per request, rendered from "
                           "the robot as it is then (a software-triggered camera); with wrist_camera_rate_hz 0 "
                           "the camera renders only on request")
    wrist_camera_width: int = Field(640, ge=16, le=1280)
    wrist_camera_look_q: list[float] = Field(
        default_factory=lambda: [-0.917, -1.919, 0.514, -0.803, -1.268, 0.0], min_length=6, max_length=6,
        description="arm joints (rad) in which the wrist camera sees a station's tag from the pre-dock and "
                    "the dock pose; used with localiser: perception_service")
    wrist_camera_height: int = Field(480, ge=16, le=960)
    twin_state_path: str = Field(
        "", description="JSON file the robot twin's world (vial slots, base pose, held vial) is saved to after "
                        "each pick/place and goal and restored from at configure; empty = none (start from the "
                        "layout's initial vials at start_station)")

    @field_validator("twin_state_path")
    @classmethod
    def _substituted(cls, value: str) -> str:
        return launch_substituted(value)


class PacedSimClock:
    """Lock-step simulated time for the skills, paced against the wall clock at a real-time factor
    (``sleep`` steps the twin, then waits the rest of dt / factor)."""

    def __init__(self, twin: Any, real_time_factor: float) -> None:
        from aichemist.clock import SimClock

        self._sim = SimClock(max_step=0.02)
        self._sim.add_stepper(twin.step)
        self.factor = real_time_factor
        self._wall0 = time.monotonic()
        self._sim0 = 0.0

    def now(self) -> float:
        return self._sim.now()

    def sleep(self, seconds: float) -> None:
        self._sim.sleep(seconds)
        ahead = (self._sim.now() - self._sim0) / self.factor - (time.monotonic() - self._wall0)
        if ahead > 0:
            time.sleep(ahead)
        elif ahead < -1.0:  # fell behind (slow machine): do not try to catch up in a burst
            self._wall0, self._sim0 = time.monotonic(), self._sim.now()


class RosClockPacedSimClock(PacedSimClock):
    """Lock-step robot twin that keeps pace with the node's ROS clock: with use_sim_time that is
    twin_node's /clock, so the robot and the rest of the lab share one simulated timeline."""

    def __init__(self, twin: Any, node: Any, stall_timeout_s: float = 10.0) -> None:
        super().__init__(twin, 1.0)
        self.node = node
        self.stall_timeout_s = stall_timeout_s
        self._anchor: tuple[float, float] | None = None

    def ros_now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def sleep(self, seconds: float) -> None:
        from aichemist.errors import StepTimeout

        if self._anchor is None:
            self._anchor = (self._sim.now(), self.ros_now())
        self._sim.sleep(seconds)
        target = self._anchor[1] + (self._sim.now() - self._anchor[0])
        waiter = threading.Event()
        last, last_change = self.ros_now(), time.monotonic()
        while self.ros_now() < target:
            waiter.wait(0.002)
            now = self.ros_now()
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > self.stall_timeout_s:
                self._anchor = None
                raise StepTimeout(f"the ROS clock has not moved for {self.stall_timeout_s:g} s (is /clock published?)")


class ServiceLocaliser:
    """Localiser over the perception node's /perception/locate_station service."""

    def __init__(self, node: Any, timeout_s: float) -> None:
        import perception.errors  # noqa: F401  (so error_from_result rebuilds MarkerNotFound & co. by name)
        from aichemist_interfaces.srv import LocateStation

        self._srv = LocateStation
        self.client = node.create_client(LocateStation, "/perception/locate_station", callback_group=node.cb_group)
        self.timeout_s = timeout_s

    def locate_station(self, station: str):
        from manipulation.errors import LocalisationFailed
        from manipulation.hardware import StationFix

        if not self.client.wait_for_service(timeout_sec=self.timeout_s):
            raise LocalisationFailed("perception service /perception/locate_station is not available")
        request = self._srv.Request()
        request.station, request.timeout_s = station, float(self.timeout_s)
        # asked once: perception spends up to timeout_s on it, and a re-ask would queue behind it
        res = call_service(self.client, request, self.timeout_s + 2.0)
        if res is None:
            raise LocalisationFailed(f"/perception/locate_station gave no answer for '{station}'")
        if res.code != 0:
            err = error_from_result(res.code, res.error_type, res.message)
            raise err if isinstance(err, PerceptionError) else LocalisationFailed(str(err))
        frame = res.station_pose.header.frame_id
        if frame not in ("", "base_footprint", "base_link"):  # base_link == base_footprint on this robot
            raise LocalisationFailed(f"station pose of '{station}' is in frame '{frame}', expected base_footprint")
        p, q = res.station_pose.pose.position, res.station_pose.pose.orientation
        t = np.eye(4)
        t[:3, :3] = _quat_to_matrix(q.w, q.x, q.y, q.z)
        t[:3, 3] = (p.x, p.y, p.z)
        return StationFix(station, t, distance_m=res.distance_m, reprojection_error_px=res.reprojection_error_px)


def _quat_to_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class ManipulatorNode(HardwareNode):
    params_model = ManipulatorNodeParams

    def __init__(self) -> None:
        super().__init__("manipulator_node")
        self.skills = None
        self.twin = None
        self.clock_sim = None
        self._busy = threading.Lock()
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import JointState

        self.joint_pub = self.create_publisher(JointState, "/manipulator/joint_states", STATE_QOS)
        self.odom_pub = self.create_publisher(Odometry, "/manipulator/odom", STATE_QOS)
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.transfer_pub = self.create_publisher(_msg("VialTransfer"), "/manipulator/vial_transfers",
                                                  QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self._timer = None
        self.camera_streams = None
        self._save_lock = threading.Lock()
        from aichemist_interfaces.srv import GetInventory

        # served in every state: before configure it answers with a typed error
        self.inventory_srv = self.create_service(GetInventory, "/manipulator/get_inventory", self._get_inventory,
                                                 callback_group=self.cb_group)

    # --- lifecycle hooks ----------------------------------------------------------------------
    def configure_core(self, params: ManipulatorNodeParams) -> None:
        from aichemist.errors import ConfigurationError
        from manipulation.layout import load_layout
        from manipulation.planning import make_planner
        from manipulation.skills import Inventory, Skills
        from sim.robot_twin import RobotTwin, TwinArm, TwinBase, TwinGripper, TwinLocaliser
        from sim.robot_twin_state import load_world_state

        layout = load_layout(params.layout_path or None)
        if params.start_station not in layout.station_names():
            raise ConfigurationError(f"start_station={params.start_station!r} is not a station of the layout "
                                     f"({', '.join(layout.station_names())})")
        planner = make_planner(params.planner_backend)
        self.twin = RobotTwin(layout, seed=params.twin_seed, start_station=params.start_station)
        inventory = None
        saved = load_world_state(params.twin_state_path) if params.twin_state_path else None
        if saved is not None:
            self.twin.restore_world(saved, source=f"robot world state {params.twin_state_path}")
            # the belief restarts from the restored world (the held vial is back in its slot)
            inventory = Inventory(self.twin.world_state().slots())
            b = saved.base_pose
            self.get_logger().info(
                f"restored the robot twin's world from {params.twin_state_path}: base at ({b.x:.2f}, {b.y:.2f}, "
                f"{b.yaw:.2f}), {len(inventory.slots)} vials in slots"
                + (f", '{saved.held_vial}' (held) put back in {saved.held_from}" if saved.held_vial else ""))
        self.clock_sim = (RosClockPacedSimClock(self.twin, self) if params.pace_with == "ros_clock"
                          else PacedSimClock(self.twin, params.twin_real_time_factor))
        localiser = (TwinLocaliser(self.twin) if params.localiser == "twin_ground_truth"
                     else ServiceLocaliser(self, params.locate_timeout_s))
        self.skills = Skills(layout, planner, TwinArm(self.twin), TwinGripper(self.twin), TwinBase(self.twin),
                             localiser, self.clock_sim, should_stop=self._should_stop, inventory=inventory,
                             look_q=params.wrist_camera_look_q if params.localiser == "perception_service" else None,
                             on_inventory_change=self._save_world)
        if params.twin_state_path:
            # written now, so an unwritable path fails the configure instead of the first transfer
            try:
                self._write_world(params.twin_state_path)
            except OSError as exc:
                raise ConfigurationError(f"twin_state_path={params.twin_state_path!r} cannot be written: {exc}",
                                         problems=[{"field": "twin_state_path", "value": params.twin_state_path,
                                                    "limit": None, "message": str(exc)}]) from None
        from rclpy.clock import Clock, ClockType

        # a wall-clock rate: with sim time at 20x a sim-time timer would publish 20x as often
        self._timer = self.create_timer(1.0 / params.joint_state_rate_hz, self._publish_state,
                                        callback_group=self.cb_group, clock=Clock(clock_type=ClockType.STEADY_TIME))
        if params.wrist_camera_rate_hz > 0 or params.wrist_camera_trigger:
            # rendered under the twin's lock, so the image and the camera pose show the robot's true state
            from aichemist_nodes.camera_publishing import CameraStreams

            self.camera_streams = CameraStreams(
                self, self.twin.model, self.twin.data, ["wrist_camera"], width=params.wrist_camera_width,
                height=params.wrist_camera_height, robot_body="base_footprint", robot_frame="base_footprint",
                lock=self.twin.lock, software_trigger=params.wrist_camera_trigger,
                trigger_timeout_s=params.locate_timeout_s).start(params.wrist_camera_rate_hz)
        self._nav_server = action_server(self, _action("NavigateToStation"), "/manipulator/navigate_to_station",
                                         self._execute_navigate, cancel_callback=self._accept_cancel)
        self._pick_server = action_server(self, _action("PickPlace"), "/manipulator/pick_place",
                                          self._execute_pick_place, cancel_callback=self._accept_cancel)

    def cleanup_core(self) -> None:
        if self.skills is not None:  # configured: the world as it is now (not after a failed restore)
            self._save_world()
        if self.camera_streams is not None:
            self.camera_streams.stop()
            self.camera_streams = None
        for attr in ("_nav_server", "_pick_server"):
            server = getattr(self, attr, None)
            if server is not None:
                server.destroy()
                setattr(self, attr, None)
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        self.skills = None
        self.twin = None

    # --- the twin's world on disk, the inventory service -----------------------------------------------
    def _write_world(self, path: str) -> None:
        from sim.robot_twin_state import save_world_state

        with self._save_lock:
            save_world_state(path, self.twin.world_state())

    def _save_world(self) -> None:
        """Save the robot twin's world to ``twin_state_path`` (if set); a failure is logged, the goal goes on."""
        path = self.params.twin_state_path if self.params is not None else ""
        if not path or self.twin is None:
            return
        try:
            self._write_world(path)
        except Exception as exc:  # noqa: BLE001 - the robot works on; only the restart memory is stale
            self.get_logger().error(f"could not save the robot twin's world to {path}: {exc!r}")

    def _get_inventory(self, _request: Any, response: Any) -> Any:
        skills = self.skills
        if skills is None:
            return set_error(response, ConflictError(
                f"{self.get_name()}: not configured (state '{self._state_machine.current_state[1]}'); "
                "no inventory yet"))
        inv = skills.inventory_snapshot()
        keys = sorted(inv.slots)
        response.slots, response.vials = keys, [inv.slots[k] for k in keys]
        response.held_vial = inv.held or ""
        response.held_from = (inv.held_from or "") if inv.held is not None else ""
        response.code, response.error_type, response.message = 0, "", "ok"
        return response

    def safe_state(self) -> None:
        """Halt the arm and the base now (running goals see the stop at their next control step)."""
        if self.twin is not None:
            self.twin.halt_arm()
            self.twin.set_base_velocity(0.0, 0.0, 0.0)

    # --- actions -------------------------------------------------------------------------------
    def _accept_cancel(self, _goal_handle: Any) -> Any:
        from rclpy.action import CancelResponse

        return CancelResponse.ACCEPT

    def _should_stop(self) -> AIChemistError | None:
        if self.estop_active:
            return EmergencyStop(f"emergency stop ({self.estop_reason}): all motion halted")
        if self._goal is not None and self._goal.is_cancel_requested:
            return Cancelled("goal cancelled: arm and base halted")
        return None

    _goal: Any = None

    def _run(self, goal_handle: Any, action: Any, work) -> Any:
        result = action.Result()
        t0 = self.clock_sim.now() if self.clock_sim is not None else 0.0
        if not self._busy.acquire(blocking=False):
            set_error(result, ConflictError("manipulator is busy with another goal; goal refused"))
            goal_handle.abort()
            return result
        try:
            self.require_actuation()
            self._goal = goal_handle
            last = {"phase": None, "t": 0.0}

            def feedback(phase: str, progress: float) -> None:
                now = time.monotonic()
                if phase == last["phase"] and now - last["t"] < 0.2:
                    return
                last.update(phase=phase, t=now)
                fb = action.Feedback()
                fb.phase, fb.progress = phase, float(progress)
                goal_handle.publish_feedback(fb)

            self.skills.feedback = feedback
            work(result)
            result.code, result.error_type, result.message = 0, "", "ok"
            result.duration_s = float(self.clock_sim.now() - t0)
            goal_handle.succeed()
        except AIChemistError as exc:
            set_error(result, exc)
            result.duration_s = float(self.clock_sim.now() - t0) if self.clock_sim else 0.0
            self.get_logger().warning(f"goal failed: {exc.error_type}: {exc}")
            if isinstance(exc, Cancelled) and goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        except Exception as exc:  # noqa: BLE001 - reported as INTERNAL, motion halted
            self.safe_state()
            set_error(result, exc)
            self.get_logger().error(f"goal crashed: {exc!r}")
            goal_handle.abort()
        finally:
            self._goal = None
            self._save_world()  # where the goal left the robot and the vials (cancelled, failed or done)
            self._busy.release()
        return result

    def _execute_navigate(self, goal_handle: Any) -> Any:
        def work(res: Any) -> None:
            self.skills.station(goal_handle.request.station)  # unknown station: refused before motion
            self.skills.dock(goal_handle.request.station)
            pose = self.skills.base.odometry()
            res.base_pose.x, res.base_pose.y, res.base_pose.theta = pose.x, pose.y, pose.yaw

        return self._run(goal_handle, _action("NavigateToStation"), work)

    def _execute_pick_place(self, goal_handle: Any) -> Any:
        g = goal_handle.request

        def work(res: Any) -> None:
            res.vial_id = self.skills.transfer(g.source_station, g.source_slot, g.target_station, g.target_slot)
            msg = _msg("VialTransfer")()
            msg.stamp = self.get_clock().now().to_msg()
            msg.vial_id, msg.source_station, msg.source_slot = res.vial_id, g.source_station, g.source_slot
            msg.target_station, msg.target_slot = g.target_station, g.target_slot
            self.transfer_pub.publish(msg)

        return self._run(goal_handle, _action("PickPlace"), work)

    # --- state ---------------------------------------------------------------------------------
    def _publish_state(self) -> None:
        twin = self.twin
        if twin is None:
            return
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import JointState

        from manipulation import robot_spec

        with twin.lock:
            t = twin.t
            q = twin.arm_q.copy()
            qd = twin.arm_qd.copy()
            opening = twin.opening
            odom = twin.odom_pose.copy()
            vel = twin.cmd_vel.copy()
        # stamped on the shared timeline when paced by the ROS clock, else on the twin's own
        stamp = (self.get_clock().now().to_msg() if isinstance(self.clock_sim, RosClockPacedSimClock)
                 else _time_msg(t))
        js = JointState()
        js.header.stamp = stamp
        js.name = list(robot_spec.ARM_JOINTS) + list(robot_spec.FINGER_JOINTS)
        js.position = [float(v) for v in q] + [opening / 2, opening / 2]
        js.velocity = [float(v) for v in qd] + [0.0, 0.0]
        self.joint_pub.publish(js)
        od = Odometry()
        od.header.stamp = stamp
        od.header.frame_id = "map"
        od.child_frame_id = robot_spec.BASE_FRAME
        od.pose.pose.position.x, od.pose.pose.position.y = float(odom[0]), float(odom[1])
        od.pose.pose.orientation.z, od.pose.pose.orientation.w = math.sin(odom[2] / 2), math.cos(odom[2] / 2)
        od.twist.twist.linear.x, od.twist.twist.linear.y = float(vel[0]), float(vel[1])
        od.twist.twist.angular.z = float(vel[2])
        self.odom_pub.publish(od)


def _time_msg(t: float) -> Any:
    from builtin_interfaces.msg import Time

    msg = Time()
    msg.sec = int(math.floor(t))
    msg.nanosec = int((t - math.floor(t)) * 1e9)
    return msg


def _msg(name: str) -> Any:
    import aichemist_interfaces.msg as msgs

    return getattr(msgs, name)


def _action(name: str) -> Any:
    import aichemist_interfaces.action as actions

    return getattr(actions, name)


def main(args: list[str] | None = None) -> int:
    return spin_node(ManipulatorNode, args)


__all__ = ["ManipulatorNode", "ManipulatorNodeParams", "PacedSimClock", "RosClockPacedSimClock", "ServiceLocaliser",
           "main"]


if __name__ == "__main__":
    main()
