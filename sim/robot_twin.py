"""The robot's physical twin in MuJoCo (headless): a ``sim.lab_twin.TwinSubsystem``.

The lab and robot model come from ``sim.world.mjcf`` (the one lab description + the robot's
URDF). The arm and base follow their commands kinematically, like the stiff position control of a
real UR arm and base controller; the vials are free rigid bodies under gravity and contact.

What makes the twin worth testing against:
- base odometry drifts like a mecanum base's: the true motion differs from the commanded one by
  per-robot scale errors (about 2 % in translation, 1.5 % in rotation) plus noise, while the
  wheel odometry integrates the command, so the error grows with distance driven;
- the gripper closes until its pads meet a vial (then the vial is held rigidly, centred between
  the pads) or closes fully on nothing; a finger landing on a vial pushes it over;
- vials slip and fall: fault ``slip`` drops the held vial once it has been lifted 2 cm,
  ``drop`` drops it at once; a released vial falls under gravity and can topple;
- the base's footprint is checked against the lab furniture (``base_collisions``).

Drivers for the skills (``TwinArm``, ``TwinGripper``, ``TwinBase``, ``TwinLocaliser``) are views
on one ``RobotTwin``; step it with ``SimClock.add_stepper(twin.step)`` or inside ``LabTwin``.

The world can outlive the process: ``world_state()`` is where every vial is, the base's true pose
and the vial in the gripper (``sim.robot_twin_state.RobotWorldState``, saved as JSON);
``restore_world(state)`` puts a new twin back into it, the held vial standing back in the slot it
was picked from (the twin's stand-in for "the gripper let go over its slot"), the arm stowed, the
gripper open and the odometry equal to the true pose.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from manipulation import robot_spec
from manipulation.errors import LocalisationFailed
from manipulation.hardware import StationFix
from manipulation.layout import LabLayout, Pose2D, load_layout, se2_matrix, se3_matrix
from manipulation.navigation import footprint_collides
from manipulation.planning import JointTrajectory
from sim.robot_twin_state import RobotWorldState, VialState

FINGER_SPEED_M_S = 0.1
PAD_HALF_WIDTH_M = robot_spec.DEFAULT_SPEC.finger_size_m[0] / 2
# pad extent along the TCP's z (pointing out of the gripper): fingertips 5 mm past the TCP
PAD_Z_RANGE_M = (robot_spec.DEFAULT_SPEC.tcp_offset_m - robot_spec.DEFAULT_SPEC.gripper_body_size_m[2]) * -1, \
    robot_spec.DEFAULT_SPEC.gripper_body_size_m[2] + robot_spec.DEFAULT_SPEC.finger_size_m[2] \
    - robot_spec.DEFAULT_SPEC.tcp_offset_m
#: a vial standing upright on a rack plate within this distance of a slot's centre is in that slot
#: (for the saved world state; ``vial_slot``'s default 4 mm is the tests' "placed in the slot")
SLOT_CAPTURE_M = 0.015


class RobotTwin:
    """Robot + lab physics. Thread-safe: drivers may be called from other threads."""

    def __init__(self, layout: LabLayout | None = None, *, seed: int = 0, start_station: str = "charging_dock",
                 odometry_scale_sigma: float = 0.02, odometry_yaw_sigma: float = 0.015,
                 odometry_noise_m_s: float = 0.002, asset_dir: str | None = None, timestep_s: float = 0.002) -> None:
        import mujoco

        from sim.world.mjcf import build_mjcf

        self._mj = mujoco
        self.layout = layout or load_layout()
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.layout, asset_dir, timestep_s=timestep_s))
        self.data = mujoco.MjData(self.model)
        self.rng = np.random.default_rng(seed)
        self.lock = threading.RLock()
        m = self.model

        def qadr(name: str) -> int:
            return int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)])

        def dadr(name: str) -> int:
            return int(m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)])

        self._base_q = [qadr(n) for n in ("base_x", "base_y", "base_yaw")]
        self._base_v = [dadr(n) for n in ("base_x", "base_y", "base_yaw")]
        self._arm_q = [qadr(n) for n in robot_spec.ARM_JOINTS]
        self._arm_v = [dadr(n) for n in robot_spec.ARM_JOINTS]
        self._finger_q = [qadr(n) for n in robot_spec.FINGER_JOINTS]
        self._tcp_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, robot_spec.TCP_FRAME)
        self.vial_ids = list(self.layout.initial_vials.values())
        self._vial_body = {v: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"vial_{v}") for v in self.vial_ids}
        self._vial_geom = {v: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"vial_{v}") for v in self.vial_ids}
        self._vial_conaffinity = {v: int(m.geom_conaffinity[g]) for v, g in self._vial_geom.items()}
        # per-robot odometry errors: fixed for this twin (like worn wheels), plus white noise
        self.scale_error = np.array([self.rng.normal(0, odometry_scale_sigma), self.rng.normal(0, odometry_scale_sigma),
                                     self.rng.normal(0, odometry_yaw_sigma)])
        self.odometry_noise_m_s = odometry_noise_m_s
        start = self.layout.station(start_station).dock_pose()
        self.true_pose = np.array([start.x, start.y, start.yaw])
        self.odom_pose = self.true_pose.copy()
        self.cmd_vel = np.zeros(3)
        self.arm_q = np.array(robot_spec.DEFAULT_SPEC.stow_q, dtype=float)
        self.arm_qd = np.zeros(6)
        self._traj: JointTrajectory | None = None
        self._traj_t0 = 0.0
        self.opening = robot_spec.DEFAULT_SPEC.gripper_max_opening_m
        self.opening_target = self.opening
        self.held: str | None = None
        self.held_from: str | None = None  # '<station>/<slot>' the held vial stood in when grasped
        self._held_origin = np.zeros(7)  # its free-body pose then
        self._grasp_blocked = False
        self._grasp_tcp_z = 0.0
        self.faults: dict[str, dict] = {}
        self.base_collisions = 0
        self.base_collision_log: list[tuple[float, Pose2D]] = []
        self.t = 0.0
        self._accum = 0.0
        self._since_footprint = 0.0
        self._settle()

    def _settle(self) -> None:
        """Let the vials settle where they stand (0.3 s of physics), the robot where it is commanded."""
        self._mj.mj_forward(self.model, self.data)
        for _ in range(int(0.3 / self.model.opt.timestep)):
            self._write_robot()  # held in place: unheld, the arm would sag into a rack next to it
            self._mj.mj_step(self.model, self.data)
        self._write_robot()
        self._mj.mj_forward(self.model, self.data)

    # --- TwinSubsystem -------------------------------------------------------------------------
    def step(self, t: float, dt: float) -> None:
        with self.lock:
            if self.opening == self.opening_target and self._quiescent():
                # nothing but the robot moves and it touches nothing: one kinematic step for dt
                self._move_robot(dt)
                self._write_robot()
                self._write_held_vial()
                self._mj.mj_kinematics(self.model, self.data)
                self._mj.mj_camlight(self.model, self.data)  # cameras (the wrist camera) follow the robot
                self.data.time += dt
                return
            h = self.model.opt.timestep
            self._accum += dt
            while self._accum >= h - 1e-12:
                self._substep(h)
                self._accum -= h

    def _move_robot(self, h: float) -> None:
        self.t += h
        # base: the true motion departs from the command; odometry integrates the command
        vx, vy, wz = self.cmd_vel
        if np.any(self.cmd_vel != 0.0):
            true_body = np.array([vx * (1 + self.scale_error[0]) + 0.01 * vx * self.scale_error[1],
                                  vy * (1 + self.scale_error[1]), wz * (1 + self.scale_error[2])])
            true_body[:2] += self.rng.normal(0, self.odometry_noise_m_s, 2) * (abs(vx) + abs(vy) > 0)
            self.true_pose = _integrate(self.true_pose, true_body, h)
            self.odom_pose = _integrate(self.odom_pose, self.cmd_vel, h)
            self._since_footprint += h
            if self._since_footprint >= 0.2:
                self._since_footprint = 0.0
                if footprint_collides(self.layout, Pose2D(x=self.true_pose[0], y=self.true_pose[1], yaw=self.true_pose[2])):
                    self.base_collisions += 1
                    self.base_collision_log.append((round(self.t, 2), self.true_base_pose()))
        # arm: follow the trajectory
        if self._traj is not None:
            q, qd = self._traj.sample(self.t - self._traj_t0)
            self.arm_q, self.arm_qd = q, qd
            if self.t - self._traj_t0 >= self._traj.duration_s:
                self._traj = None
                self.arm_qd = np.zeros(6)

    def _substep(self, h: float) -> None:
        self._move_robot(h)
        # gripper
        if self.opening != self.opening_target:
            step = FINGER_SPEED_M_S * h
            if self.opening_target < self.opening:
                new = max(self.opening_target, self.opening - step)
                if self.held is None and not self._grasp_blocked:
                    vial, offset = self._vial_between_pads(self.opening)
                    r = self.layout.vial.diameter_m / 2
                    if vial is not None and new / 2 <= offset + r:
                        # a pad meets the vial and pushes it to the centre: held at its diameter
                        new = 2 * r + 0.0004
                        self.opening_target = new
                        self._attach(vial)
                self.opening = new
            else:
                self.opening = min(self.opening_target, self.opening + step)
                if self.held is not None and self.opening > self.layout.vial.diameter_m + 0.001:
                    self._release()
        if self.held is not None:
            lifted = self.data.xpos[self._tcp_body][2] - self._grasp_tcp_z
            if "drop" in self.faults or ("slip" in self.faults and lifted > 0.02):
                self.faults.pop("drop", None)
                self.faults.pop("slip", None)
                self._release()
                self.opening_target = 0.0  # the fingers close on the space the vial left
                self._grasp_blocked = True  # the falling vial is not caught again by this closing
        self._write_robot()
        self._write_held_vial()
        if self._quiescent():
            # nothing can move but the robot, which touches nothing: kinematics only (driving
            # across the lab costs no contact physics)
            self._mj.mj_kinematics(self.model, self.data)
            self._mj.mj_camlight(self.model, self.data)
            self.data.time += h
            return
        self._mj.mj_step(self.model, self.data)
        # the robot is position-controlled: undo the integrator's update of its joints so the state
        # (and any mj_forward a camera does) shows exactly the commanded pose
        self._write_robot()
        self._write_held_vial()

    def _quiescent(self) -> bool:
        """Nothing moves but the robot and the vial it holds (which moves rigidly with the fingers,
        its own contacts overridden), and neither touches anything: every other vial at rest, the
        gripper at least 15 cm from each, no drop or slip fault pending. Carrying a vial across the
        lab then costs no contact physics either."""
        if self.held is not None and ("drop" in self.faults or "slip" in self.faults):
            return False
        tcp = self.data.xpos[self._tcp_body]
        for vial, body in self._vial_body.items():
            if vial == self.held:
                continue
            dof = self.model.body_dofadr[body]
            if np.abs(self.data.qvel[dof:dof + 6]).max() > 0.05:  # resting contact jitters at ~1 cm/s
                return False
            if np.linalg.norm(self.data.xpos[body] - tcp) < 0.15:
                return False
        return True

    def _write_robot(self) -> None:
        d = self.data
        for i, a in enumerate(self._base_q):
            d.qpos[a] = self.true_pose[i]
        c, s = math.cos(self.true_pose[2]), math.sin(self.true_pose[2])
        vx, vy, wz = self.cmd_vel
        for i, v in enumerate((c * vx - s * vy, s * vx + c * vy, wz)):
            d.qvel[self._base_v[i]] = v
        for i, a in enumerate(self._arm_q):
            d.qpos[a] = self.arm_q[i]
            d.qvel[self._arm_v[i]] = self.arm_qd[i]
        for a in self._finger_q:
            d.qpos[a] = self.opening / 2

    # --- grasp physics ---------------------------------------------------------------------------
    def _tcp(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.xpos[self._tcp_body].copy(), self.data.xmat[self._tcp_body].reshape(3, 3).copy()

    def _vial_between_pads(self, opening: float) -> tuple[str | None, float]:
        pos, rot = self._tcp()
        r, h = self.layout.vial.diameter_m / 2, self.layout.vial.height_m
        best, best_y = None, 1.0
        for vial, body in self._vial_body.items():
            p = rot.T @ (self.data.xpos[body] - pos)
            axis = rot.T @ self.data.xmat[body].reshape(3, 3)[:, 2]
            if abs(axis[2]) < 0.95:
                continue  # lying or tilted vials are not grasped by a top-down gripper
            overlap = min(p[2] + h / 2, PAD_Z_RANGE_M[1]) - max(p[2] - h / 2, PAD_Z_RANGE_M[0])
            if overlap < 0.008 or abs(p[0]) > PAD_HALF_WIDTH_M + 0.3 * r:
                continue
            if abs(p[1]) + r > opening / 2 + 1e-4:
                continue  # not between the pads (under one, or outside)
            if abs(p[1]) < best_y:
                best, best_y = vial, abs(p[1])
        return best, best_y

    def _attach(self, vial: str) -> None:
        pos, rot = self._tcp()
        body = self._vial_body[vial]
        self.held_from = self.vial_slot(vial, tol_m=SLOT_CAPTURE_M)
        self._held_origin = self._vial_qpos(vial).copy()
        rel = rot.T @ (self.data.xpos[body] - pos)
        rel[:2] = 0.0  # V-groove pads centre a round vial both across and along the pads
        # a firm grip: the vial moves rigidly with the TCP until released (or until it slips)
        self._held_rel = (rel, rot.T @ self.data.xmat[body].reshape(3, 3))
        # held: the pads' (kinematic) contact would fight the grip; the grip holds it
        self.model.geom_conaffinity[self._vial_geom[vial]] = self._vial_conaffinity[vial] & ~4
        self.held = vial
        self._grasp_tcp_z = pos[2]

    def _write_held_vial(self) -> None:
        if self.held is None:
            return
        self._mj.mj_kinematics(self.model, self.data)
        pos, rot = self._tcp()
        rel, rel_rot = self._held_rel
        body = self._vial_body[self.held]
        adr = self.model.jnt_qposadr[self.model.body_jntadr[body]]
        dof = self.model.jnt_dofadr[self.model.body_jntadr[body]]
        quat = np.zeros(4)
        self._mj.mju_mat2Quat(quat, (rot @ rel_rot).reshape(9))
        self.data.qpos[adr:adr + 3] = pos + rot @ rel
        self.data.qpos[adr + 3:adr + 7] = quat
        self.data.qvel[dof:dof + 6] = 0.0

    def _release(self) -> None:
        if self.held is not None:
            self.model.geom_conaffinity[self._vial_geom[self.held]] = self._vial_conaffinity[self.held]
            self.held = None
            self.held_from = None

    def _vial_qpos(self, vial: str) -> np.ndarray:
        """View of the vial's free-joint qpos: x, y, z, qw, qx, qy, qz."""
        adr = self.model.jnt_qposadr[self.model.body_jntadr[self._vial_body[vial]]]
        return self.data.qpos[adr:adr + 7]

    # --- commands (drivers call these) -------------------------------------------------------------
    def start_trajectory(self, traj: JointTrajectory) -> None:
        with self.lock:
            if np.abs(traj.start - self.arm_q).max() > 1e-3:
                raise ValueError(f"trajectory starts {np.abs(traj.start - self.arm_q).max():.4f} rad away from "
                                 "the arm's position")
            self._traj = traj
            self._traj_t0 = self.t

    def halt_arm(self) -> None:
        with self.lock:
            self._traj = None
            self.arm_qd = np.zeros(6)

    def arm_moving(self) -> bool:
        return self._traj is not None

    def set_gripper(self, opening_m: float) -> None:
        with self.lock:
            if opening_m > self.opening:
                self._grasp_blocked = False
            self.opening_target = float(np.clip(opening_m, 0.0, robot_spec.DEFAULT_SPEC.gripper_max_opening_m))

    def set_base_velocity(self, vx: float, vy: float, wz: float) -> None:
        with self.lock:
            self.cmd_vel = np.array([vx, vy, wz], dtype=float)

    def inject(self, fault: str, **kw: Any) -> None:
        if fault not in ("slip", "drop"):
            raise ValueError(f"unknown robot twin fault {fault!r} (slip, drop)")
        self.faults[fault] = kw

    def clear_faults(self) -> None:
        self.faults.clear()

    # --- ground truth (tests, localiser, cameras) -----------------------------------------------------
    def true_base_pose(self) -> Pose2D:
        return Pose2D(x=float(self.true_pose[0]), y=float(self.true_pose[1]), yaw=float(self.true_pose[2]))

    def vial_position(self, vial: str) -> np.ndarray:
        return self.data.xpos[self._vial_body[vial]].copy()

    def vial_upright(self, vial: str) -> bool:
        return self.data.xmat[self._vial_body[vial]].reshape(3, 3)[2, 2] > 0.98

    def vial_slot(self, vial: str, tol_m: float = 0.004) -> str | None:
        """'<station>/<slot>' where the vial stands upright, else None."""
        p = self.vial_position(vial)
        if not self.vial_upright(vial):
            return None
        for st in self.layout.stations:
            if st.rack is None:
                continue
            for slot in st.rack.slot_names():
                bottom = st.slot_world_xyz(slot)
                if (np.linalg.norm(p[:2] - bottom[:2]) < tol_m
                        and abs(p[2] - self.layout.vial.height_m / 2 - bottom[2]) < 0.003):
                    return f"{st.name}/{slot}"
        return None


    # --- the world outliving the process (sim.robot_twin_state) ------------------------------------------
    def world_state(self) -> RobotWorldState:
        """Where everything is now: the base's true pose, each vial's slot and pose, the held vial."""
        with self.lock:
            vials: dict[str, VialState] = {}
            taken: set[str] = set()
            held, held_from = self.held, self.held_from
            for vial in self.vial_ids:
                if vial == held and held_from is not None:
                    continue
                pose = self._held_origin if vial == held else self._vial_qpos(vial)
                slot = None if vial == held else self.vial_slot(vial, tol_m=SLOT_CAPTURE_M)
                if slot is not None and slot in taken:
                    slot = None  # two vials on one slot's place: the second is somewhere, not in it
                if slot is not None:
                    taken.add(slot)
                vials[vial] = VialState(slot=slot, pose=tuple(float(v) for v in pose))
            if held is not None and held_from is None:
                held = None  # grasped off any slot: goes back to where it was grasped, like a slot's vial
            return RobotWorldState(layout=self.layout.name, sim_time_s=round(self.t, 3),
                                   base_pose=self.true_base_pose(), vials=vials, held_vial=held,
                                   held_from=held_from if held is not None else None)

    def restore_world(self, state: RobotWorldState, *, source: str = "robot world state") -> None:
        """Put the twin into ``state`` (checked against the layout first: ConfigurationError).

        Vials go back to their saved poses; a vial that was in the gripper stands back in the slot it
        was picked from; the arm is stowed, the gripper open, the base at the saved true pose and the
        odometry equal to it."""
        state.check(self.layout, self.vial_ids, source=source)
        with self.lock:
            self._release()
            self._traj = None
            self.arm_q = np.array(robot_spec.DEFAULT_SPEC.stow_q, dtype=float)
            self.arm_qd = np.zeros(6)
            self.cmd_vel = np.zeros(3)
            self.opening = self.opening_target = robot_spec.DEFAULT_SPEC.gripper_max_opening_m
            self._grasp_blocked = False
            poses = {vial: np.array(v.pose) for vial, v in state.vials.items()}
            if state.held_vial is not None and state.held_from is not None:
                station, _, slot = state.held_from.partition("/")
                bottom = self.layout.station(station).slot_world_xyz(slot)
                centre = bottom + np.array([0.0, 0.0, self.layout.vial.height_m / 2 + 0.0005])
                poses[state.held_vial] = np.concatenate([centre, [1.0, 0.0, 0.0, 0.0]])
            for vial, pose in poses.items():
                self._vial_qpos(vial)[:] = pose
                dof = self.model.jnt_dofadr[self.model.body_jntadr[self._vial_body[vial]]]
                self.data.qvel[dof:dof + 6] = 0.0
            b = state.base_pose
            self.true_pose = np.array([b.x, b.y, b.yaw])
            self.odom_pose = self.true_pose.copy()
            self._settle()


def _integrate(pose: np.ndarray, body_vel: np.ndarray, h: float) -> np.ndarray:
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return np.array([pose[0] + (c * body_vel[0] - s * body_vel[1]) * h,
                     pose[1] + (s * body_vel[0] + c * body_vel[1]) * h,
                     math.atan2(math.sin(pose[2] + body_vel[2] * h), math.cos(pose[2] + body_vel[2] * h))])


# --- drivers ---------------------------------------------------------------------------------------
class TwinArm:
    def __init__(self, twin: RobotTwin) -> None:
        self.twin = twin

    def joint_positions(self) -> np.ndarray:
        return self.twin.arm_q.copy()

    def start_trajectory(self, trajectory: JointTrajectory) -> None:
        self.twin.start_trajectory(trajectory)

    def trajectory_done(self) -> bool:
        return not self.twin.arm_moving()

    def halt(self) -> None:
        self.twin.halt_arm()


class TwinGripper:
    def __init__(self, twin: RobotTwin) -> None:
        self.twin = twin

    def command_opening(self, opening_m: float) -> None:
        self.twin.set_gripper(opening_m)

    def opening_m(self) -> float:
        return float(self.twin.opening)

    def is_moving(self) -> bool:
        return abs(self.twin.opening - self.twin.opening_target) > 1e-6


class TwinBase:
    def __init__(self, twin: RobotTwin) -> None:
        self.twin = twin

    def odometry(self) -> Pose2D:
        x, y, yaw = self.twin.odom_pose
        return Pose2D(x=float(x), y=float(y), yaw=float(yaw))

    def reset_odometry(self, pose: Pose2D) -> None:
        with self.twin.lock:
            self.twin.odom_pose = np.array([pose.x, pose.y, pose.yaw])

    def command_velocity(self, vx_m_s: float, vy_m_s: float, wz_rad_s: float) -> None:
        self.twin.set_base_velocity(vx_m_s, vy_m_s, wz_rad_s)

    def halt(self) -> None:
        self.twin.set_base_velocity(0.0, 0.0, 0.0)


class TwinLocaliser:
    """Station fix from the twin's ground truth plus the fiducial pipeline's measured error
    (about 1 mm and 0.3 deg at 0.4-0.6 m: notes/dependencies.md); fails beyond camera range."""

    def __init__(self, twin: RobotTwin, *, position_sigma_m: float = 0.001, yaw_sigma_rad: float = 0.005,
                 max_range_m: float = 1.2, seed: int = 1) -> None:
        self.twin = twin
        self.position_sigma_m = position_sigma_m
        self.yaw_sigma_rad = yaw_sigma_rad
        self.max_range_m = max_range_m
        self.rng = np.random.default_rng(seed)

    def locate_station(self, station: str) -> StationFix:
        st = self.twin.layout.station(station)
        base = self.twin.true_base_pose()
        true = np.linalg.inv(se2_matrix(base.x, base.y, base.yaw)) @ st.matrix()
        distance = float(np.linalg.norm(true[:2, 3]))
        if distance > self.max_range_m:
            raise LocalisationFailed(f"fiducial {st.fiducial.id} of '{station}' not visible: {distance:.2f} m away")
        noise = se3_matrix(self.rng.normal(0, self.position_sigma_m, 3), (0.0, 0.0, self.rng.normal(0, self.yaw_sigma_rad)))
        return StationFix(station=station, base_to_station=true @ noise, distance_m=distance)


def make_robot_twin(**kwargs: Any) -> RobotTwin:
    """LabTwin plugin factory: ``sim.robot_twin:make_robot_twin``."""
    return RobotTwin(**kwargs)
