"""Motion planning behind one interface, two backends.

``EmbeddedPlanner`` runs everywhere: pinocchio IK, coal collision (URDF + SRDF + scene + attached
vial), OMPL RRTConnect when the direct joint-space motion is blocked, OMPL shortcutting, and
toppra time-optimal timing within the joint speed and acceleration limits.

Every trajectory is verified before it is returned, continuously rather than at a fixed
resolution: at each sample the true minimum distance d to everything (coal) is computed and the
next sample is placed so that no point of the robot or the held vial moves more than 0.9 d in
between, so nothing can be touched between samples; every sample must keep the clearance
(2 cm in free space, 2 mm on approach lines).

``MoveItPlanner`` wraps MoveIt 2's ``moveit_py`` where it is installed (full ROS installs);
``make_planner("auto")`` picks it when importable and the embedded planner otherwise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from pydantic import Field

from aichemist.errors import ConfigurationError
from aichemist.params import Params
from manipulation import robot_spec
from manipulation.errors import NoPathFound, PathInCollision, Unreachable
from manipulation.robot_model import RobotModel, SceneObject


class PlannerParams(Params):
    free_margin_m: float = Field(0.02, gt=0, le=0.1, description="clearance kept in free-space motions")
    contact_margin_m: float = Field(0.002, gt=0, le=0.02, description="clearance kept in approach/retreat lines")
    planning_time_s: float = Field(1.0, gt=0, le=30)
    simplify_time_s: float = Field(0.05, gt=0, le=5)
    toppra_gridpoints: int = Field(41, ge=11, le=1001)
    velocity_scale: float = Field(1.0, gt=0, le=1.0)
    acceleration_scale: float = Field(1.0, gt=0, le=1.0)
    linear_step_m: float = Field(0.02, gt=0, le=0.05, description="Cartesian step of approach lines")


@dataclass
class JointTrajectory:
    joint_names: tuple[str, ...]
    times_s: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    planning_time_s: float = 0.0
    stats: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1])

    @property
    def start(self) -> np.ndarray:
        return self.positions[0]

    @property
    def goal(self) -> np.ndarray:
        return self.positions[-1]

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        if t <= 0:
            return self.positions[0].copy(), np.zeros(len(self.joint_names))
        if t >= self.duration_s:
            return self.positions[-1].copy(), np.zeros(len(self.joint_names))
        k = int(np.searchsorted(self.times_s, t, side="right")) - 1
        t0, t1 = self.times_s[k], self.times_s[k + 1]
        a = (t - t0) / (t1 - t0)
        q = (1 - a) * self.positions[k] + a * self.positions[k + 1]
        qd = (1 - a) * self.velocities[k] + a * self.velocities[k + 1]
        return q, qd

    def concat(self, other: "JointTrajectory") -> "JointTrajectory":
        if np.abs(other.start - self.goal).max() > 1e-6:
            raise ValueError("trajectories do not join")
        return JointTrajectory(self.joint_names, np.concatenate([self.times_s, other.times_s[1:] + self.duration_s]),
                               np.vstack([self.positions, other.positions[1:]]),
                               np.vstack([self.velocities, other.velocities[1:]]),
                               self.planning_time_s + other.planning_time_s)


class MotionPlanner(Protocol):
    name: str
    robot: RobotModel

    def set_scene(self, objects: Sequence[SceneObject]) -> None: ...

    def ik(self, pose: np.ndarray, seeds: Sequence[Sequence[float]] = ()) -> np.ndarray: ...

    def plan_joints(self, start: Sequence[float], goal: Sequence[float]) -> JointTrajectory: ...

    def plan_pose(self, start: Sequence[float], pose: np.ndarray) -> JointTrajectory: ...

    def plan_linear(self, start: Sequence[float], pose: np.ndarray,
                    allowed: Sequence[tuple[str, str]] = ()) -> JointTrajectory: ...


class EmbeddedPlanner:
    name = "embedded"

    def __init__(self, robot: RobotModel | None = None, params: PlannerParams | None = None) -> None:
        import toppra

        toppra.setup_logging("WARNING")
        from ompl import util as ou

        ou.setLogLevel(ou.LOG_ERROR)
        self.robot = robot or RobotModel()
        self.params = params or PlannerParams()
        import pinocchio as pin

        self._pin = pin
        self._moving_joints = list(range(1, self.robot.model.njoints))
        self._joint_extent = self._extents()
        self._extent_arr = np.array(self._joint_extent)
        self._margin = None
        self._constraints = None
        self._set_margin(self.params.free_margin_m)

    def _extents(self) -> list[float]:
        """Per joint, the farthest any geometry it carries reaches from the joint origin."""
        model = self.robot.model
        gm = self.robot._pin.buildGeomFromUrdf(model, str(self.robot.urdf_path), self.robot._pin.COLLISION)
        extent = {j: 0.0 for j in self._moving_joints}
        for g in gm.geometryObjects:
            g.geometry.computeLocalAABB()
            half_diag = float(np.linalg.norm(g.geometry.aabb_local.max_ - g.geometry.aabb_local.min_)) / 2
            reach = float(np.linalg.norm(g.placement.translation)) + half_diag
            if g.parentJoint in extent:
                extent[g.parentJoint] = max(extent[g.parentJoint], reach)
        # the held vial hangs below the TCP on the last arm joint: include it always
        last = self.robot.arm_joint_ids[-1]
        extent[last] = max(extent[last], robot_spec.UR5E_DH_D_M[5] + self.robot.spec.tcp_offset_m + 0.04)
        return [extent[j] for j in self._moving_joints]

    # --- scene -----------------------------------------------------------------------------
    def set_scene(self, objects: Sequence[SceneObject]) -> None:
        self.robot.set_scene(objects)
        self._margin = None

    def _set_margin(self, margin: float) -> None:
        if self._margin == margin and len(self.robot.geom_data.collisionRequests) == self._n_requests:
            return
        for req in self.robot.geom_data.collisionRequests:
            req.security_margin = margin
        self._margin = margin
        self._n_requests = len(self.robot.geom_data.collisionRequests)

    def valid(self, q: Sequence[float], margin: float | None = None) -> bool:
        self._sync()
        self._set_margin(self.params.free_margin_m if margin is None else margin)
        return self.robot.within_limits(q) and not self.robot.in_collision(q)

    def _sync(self) -> None:
        # the model rebuilds its collision data on attach/detach/scene: re-apply the margin then
        if getattr(self, "_geom_data_id", None) != id(self.robot.geom_data):
            self._geom_data_id = id(self.robot.geom_data)
            self._margin = None

    # --- queries ---------------------------------------------------------------------------
    def ik(self, pose: np.ndarray, seeds: Sequence[Sequence[float]] = (), margin: float | None = None) -> np.ndarray:
        self._sync()
        self._set_margin(self.params.free_margin_m if margin is None else margin)
        return self.robot.ik(pose, seeds)

    def plan_pose(self, start: Sequence[float], pose: np.ndarray) -> JointTrajectory:
        t0 = time.perf_counter()
        goal = self.ik(pose, [self.robot.spec.ready_q, start])  # ready: same arm configuration family as bench poses
        traj = self.plan_joints(start, goal)
        traj.planning_time_s = time.perf_counter() - t0
        return traj

    def plan_joints(self, start: Sequence[float], goal: Sequence[float]) -> JointTrajectory:
        t0 = time.perf_counter()
        start, goal = np.asarray(start, float), np.asarray(goal, float)
        margin = self.params.free_margin_m
        for name, q in (("start", start), ("goal", goal)):
            if not self.robot.within_limits(q):
                raise Unreachable(f"{name} configuration {np.round(q, 3).tolist()} is outside the joint limits")
            if not self.valid(q, margin):
                pairs = self.robot.colliding_pairs(q)
                raise PathInCollision(f"{name} configuration is in collision or closer than {margin} m: {pairs}",
                                      pairs=[list(p) for p in pairs])
        stats = {"ompl": False, "via_ready": False}
        traj = self._time_and_verify(np.vstack([start, goal]), margin)
        ready = np.array(self.robot.spec.ready_q)
        if traj is None and self.valid(ready, margin):
            # most blocked moves are stow <-> bench: the arm's ready pose above the bench is a
            # cheap via-point before searching
            traj = self._time_and_verify(np.vstack([start, ready, goal]), margin)
            stats["via_ready"] = traj is not None
        if traj is None:
            stats["ompl"] = True
            traj = None
            for attempt in range(3):
                waypoints = self._ompl(start, goal, margin, seed_offset=attempt)
                traj = self._time_and_verify(waypoints, margin)
                if traj is not None:
                    break
            if traj is None:
                raise NoPathFound("no collision-free joint path found (RRTConnect, 3 attempts)",
                                  start=start.tolist(), goal=goal.tolist())
        traj.planning_time_s = time.perf_counter() - t0
        traj.stats.update(stats)
        return traj

    def plan_linear(self, start: Sequence[float], pose: np.ndarray,
                    allowed: Sequence[tuple[str, str]] = ()) -> JointTrajectory:
        """A straight TCP line from the pose at ``start`` to ``pose`` (approach, retreat)."""
        t0 = time.perf_counter()
        start = np.asarray(start, float)
        p0 = self.robot.fk(start)
        n = max(2, int(math.ceil(np.linalg.norm(pose[:3, 3] - p0[:3, 3]) / self.params.linear_step_m)) + 1)
        self.robot.allow(allowed)
        try:
            margin = self.params.contact_margin_m
            self._sync()
            self._set_margin(margin)
            qs = [start]
            for k in range(1, n):
                a = k / (n - 1)
                target = _interpolate_pose(p0, pose, a)
                q = self.robot._solve(self._pin_se3(target), qs[-1], 1e-6, 100)
                if q is None or np.abs(_wrap(q - qs[-1])).max() > 0.3:
                    raise Unreachable(f"straight line to ({pose[0, 3]:.3f}, {pose[1, 3]:.3f}, {pose[2, 3]:.3f}) "
                                      f"leaves the arm's workspace at {a:.0%}")
                q = qs[-1] + _wrap(q - qs[-1])  # stay on the same turn as the previous step
                if not self.robot.within_limits(q):
                    raise Unreachable("straight line crosses a joint limit")
                qs.append(q)
            traj = self._time_and_verify(np.vstack(qs), margin, densify=False)
            if traj is None:
                raise PathInCollision("straight-line motion would collide", pairs=[])
        finally:
            self.robot.allow(())
        traj.planning_time_s = time.perf_counter() - t0
        return traj

    # --- internals ---------------------------------------------------------------------------
    def _pin_se3(self, t: np.ndarray):
        import pinocchio as pin

        return pin.SE3(t[:3, :3].copy(), t[:3, 3].copy())

    def _ompl(self, start: np.ndarray, goal: np.ndarray, margin: float, seed_offset: int = 0) -> np.ndarray:
        from ompl import base as ob
        from ompl import geometric as og
        from ompl import util as ou

        _seed_ompl_once(ou)
        space = ob.RealVectorStateSpace(6)
        bounds = ob.RealVectorBounds(6)
        for i in range(6):
            bounds.setLow(i, float(self.robot.lower[i]))
            bounds.setHigh(i, float(self.robot.upper[i]))
        space.setBounds(bounds)
        ss = og.SimpleSetup(space)
        self._set_margin(margin)
        robot = self.robot

        def is_valid(state) -> bool:
            return not robot.in_collision([state[i] for i in range(6)])

        ss.setStateValidityChecker(is_valid)
        si = ss.getSpaceInformation()
        si.setStateValidityCheckingResolution(0.002)
        a, b = space.allocState(), space.allocState()
        for i in range(6):
            a[i] = float(start[i])
            b[i] = float(goal[i])
        ss.setStartAndGoalStates(a, b)
        ss.setPlanner(og.RRTConnect(si))
        status = ss.solve(self.params.planning_time_s)
        if not ss.haveExactSolutionPath():
            raise NoPathFound(f"RRTConnect: {status} within {self.params.planning_time_s} s",
                              start=start.tolist(), goal=goal.tolist())
        ss.simplifySolution(self.params.simplify_time_s)
        path = ss.getSolutionPath()
        return np.array([[path.getState(k)[i] for i in range(6)] for k in range(path.getStateCount())])

    def _time_and_verify(self, waypoints: np.ndarray, margin: float, densify: bool = True) -> JointTrajectory | None:
        """Verify and time a path. Free-space paths (``densify``) are polylines: each straight
        segment is verified exactly and timed by toppra from rest to rest, so the robot follows
        the verified lines (a spline through corners could cut them). Approach lines are dense,
        nearly straight IK samples: one natural spline through them, verified as sampled."""
        import toppra as ta

        keep = [0]
        for k in range(1, len(waypoints)):
            if np.abs(waypoints[k] - waypoints[keep[-1]]).max() > 1e-6:
                keep.append(k)
        pts = waypoints[keep]
        if len(pts) < 2:
            q = np.vstack([waypoints[0], waypoints[0]])
            return JointTrajectory(robot_spec.ARM_JOINTS, np.array([0.0, 1e-3]), q, np.zeros((2, 6)))
        if densify:
            pieces = []
            for a, b in zip(pts[:-1], pts[1:]):
                line = ta.SplineInterpolator([0.0, 1.0], np.vstack([a, b]), bc_type="natural")
                if not self._verify_path(line, margin):
                    return None
                pieces.append(line)
        else:
            seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
            s = np.concatenate([[0.0], np.cumsum(seg)])
            s /= s[-1]
            # "natural": a clamped spline (zero path speed at the ends) made toppra crawl
            spline = ta.SplineInterpolator(s, pts, bc_type="natural")
            if not self._verify_path(spline, margin):
                return None
            pieces = [spline]
        out = None
        for path in pieces:
            traj = self._toppra(path)
            if traj is None:
                return None
            out = traj if out is None else out.concat(traj)
        return out

    def _toppra(self, path) -> JointTrajectory | None:
        import toppra.algorithm as algo
        import toppra.constraint as constraint

        if self._constraints is None:  # building them formats strings: build once
            vmax = self.robot.velocity_limits * self.params.velocity_scale
            amax = self.robot.acceleration_limits * self.params.acceleration_scale
            self._constraints = [constraint.JointVelocityConstraint(np.stack([-vmax, vmax], axis=1)),
                                 constraint.JointAccelerationConstraint(np.stack([-amax, amax], axis=1))]
        # grid resolution grows with the joint distance (rest-to-rest lines need few points)
        length = float(np.abs(path(path.path_interval[1]) - path(path.path_interval[0])).max())
        n = int(min(self.params.toppra_gridpoints, max(11, 8 + 12 * length)))
        # lower bound on the duration: the slowest joint at full speed, plus accelerating
        dq = np.abs(path(path.path_interval[1]) - path(path.path_interval[0]))
        bound = float(np.max(dq / self.robot.velocity_limits))
        timed = None
        for grid in (n, 101):
            instance = algo.TOPPRA(self._constraints, path, parametrizer="ParametrizeConstAccel",
                                   gridpoints=np.linspace(*path.path_interval, grid))
            timed = instance.compute_trajectory()
            # a coarse grid can starve toppra's reachable sets (crawling solutions): refine once
            if timed is not None and timed.duration <= 10 * bound + 2.0:
                break
            timed = None
        if timed is None:
            return None
        n = max(10, int(math.ceil(timed.duration / 0.01)) + 1)
        ts = np.linspace(0, timed.duration, n)
        q = timed(ts)
        qd = timed(ts, 1)
        q[0], q[-1] = path(0.0), path(1.0)
        qd[0], qd[-1] = 0.0, 0.0
        return JointTrajectory(robot_spec.ARM_JOINTS, ts, q, qd)

    def _verify_path(self, path, margin: float) -> bool:
        """True if the path keeps ``margin`` to everything at every point, not only at samples.

        At each sample the true minimum distance d (coal, over the active pairs) is computed;
        the next sample is chosen so that no point of the robot or the held vial moves more than
        0.9 * d in between (a body's points move at most |dp| + |angle| * extent over a short
        step), so nothing can be touched between samples. Far from obstacles the steps are long,
        close to them short."""
        s, ds = 0.0, 0.05
        q = path(0.0)
        frames = self._body_poses(q)
        while True:
            if not self.robot.within_limits(q):
                return False
            d = self.robot.min_distance(q)
            if d < margin:
                return False
            if s >= 1.0:
                return True
            allowed = 0.9 * d
            while True:
                s_next = min(1.0, s + ds)
                q_next = path(s_next)
                frames_next = self._body_poses(q_next)
                if self._max_displacement(frames, frames_next) <= allowed:
                    break
                ds *= 0.5
                if ds < 1e-7:
                    return False
            s, q, frames = s_next, q_next, frames_next
            ds *= 2.0

    def _body_poses(self, q_arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pin = self._pin
        model, data = self.robot.model, self.robot.data
        pin.forwardKinematics(model, data, self.robot.full_q(q_arm))
        omi = data.oMi
        pos = np.array([omi[j].translation for j in self._moving_joints])
        rot = np.array([omi[j].rotation for j in self._moving_joints])
        return pos, rot

    def _max_displacement(self, a, b) -> float:
        (pa, ra), (pb, rb) = a, b
        cos = (np.einsum("nij,nij->n", ra, rb) - 1.0) / 2.0   # trace(Ra^T Rb)
        angle = np.arccos(np.clip(cos, -1.0, 1.0))
        return float(np.max(np.linalg.norm(pb - pa, axis=1) + angle * self._extent_arr))


_OMPL_SEEDED = False


def _seed_ompl_once(ou) -> None:
    """OMPL's RNG can be seeded once per process, before first use: makes runs repeatable."""
    global _OMPL_SEEDED
    if not _OMPL_SEEDED and hasattr(ou, "RNG") and hasattr(ou.RNG, "setSeed"):
        ou.RNG.setSeed(1234)
    _OMPL_SEEDED = True


def _wrap(d: np.ndarray) -> np.ndarray:
    return (d + np.pi) % (2 * np.pi) - np.pi


def _interpolate_pose(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    import pinocchio as pin

    pa, pb = pin.SE3(a[:3, :3].copy(), a[:3, 3].copy()), pin.SE3(b[:3, :3].copy(), b[:3, 3].copy())
    return pin.SE3.Interpolate(pa, pb, alpha).homogeneous if hasattr(pin.SE3, "Interpolate") else \
        (pa * pin.exp6(alpha * pin.log6(pa.actInv(pb)))).homogeneous


class MoveItPlanner:
    """MoveIt 2 through moveit_py (only where a full ROS 2 install provides it).

    Uses the same URDF/SRDF (description package) and the "arm" planning group; IK and collision
    checks for the scene stay in the embedded ``RobotModel`` so both backends see one scene.
    """

    name = "moveit"

    def __init__(self, robot: RobotModel | None = None, node_name: str = "aichemist_moveit_py") -> None:
        try:
            from moveit.planning import MoveItPy  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConfigurationError(f"planner backend 'moveit' needs moveit_py (MoveIt 2), which is not "
                                     f"importable here: {exc}") from None
        self.robot = robot or RobotModel()
        self._moveit = MoveItPy(node_name=node_name)
        self._arm = self._moveit.get_planning_component("arm")
        self._embedded = EmbeddedPlanner(self.robot)

    def set_scene(self, objects: Sequence[SceneObject]) -> None:
        from moveit_msgs.msg import CollisionObject  # type: ignore[import-not-found]
        from shape_msgs.msg import SolidPrimitive  # type: ignore[import-not-found]
        from geometry_msgs.msg import Pose  # type: ignore[import-not-found]

        self._embedded.set_scene(objects)
        with self._moveit.get_planning_scene_monitor().read_write() as scene:
            scene.remove_all_collision_objects()
            for obj in objects:
                co = CollisionObject()
                co.header.frame_id = robot_spec.BASE_FRAME
                co.id = obj.name
                prim = SolidPrimitive()
                if obj.shape == "box":
                    prim.type = SolidPrimitive.BOX
                    prim.dimensions = [float(s) + 2 * obj.padding_m for s in obj.size]
                else:
                    prim.type = SolidPrimitive.CYLINDER
                    prim.dimensions = [float(obj.size[1]) + 2 * obj.padding_m, float(obj.size[0]) + obj.padding_m]
                pose = Pose()
                pose.position.x, pose.position.y, pose.position.z = (float(v) for v in obj.pose[:3, 3])
                w, x, y, z = _quat_wxyz(obj.pose[:3, :3])
                pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = w, x, y, z
                co.primitives.append(prim)
                co.primitive_poses.append(pose)
                co.operation = CollisionObject.ADD
                scene.apply_collision_object(co)
            scene.current_state.update()

    def ik(self, pose: np.ndarray, seeds: Sequence[Sequence[float]] = ()) -> np.ndarray:
        return self._embedded.ik(pose, seeds)

    def plan_joints(self, start: Sequence[float], goal: Sequence[float]) -> JointTrajectory:
        from moveit.core.robot_state import RobotState  # type: ignore[import-not-found]

        t0 = time.perf_counter()
        model = self._moveit.get_robot_model()
        start_state, goal_state = RobotState(model), RobotState(model)
        start_state.set_joint_group_positions("arm", np.asarray(start, float))
        goal_state.set_joint_group_positions("arm", np.asarray(goal, float))
        self._arm.set_start_state(robot_state=start_state)
        self._arm.set_goal_state(robot_state=goal_state)
        result = self._arm.plan()
        if not result:
            raise NoPathFound("MoveIt 2 found no plan", start=list(start), goal=list(goal))
        msg = result.trajectory.get_robot_trajectory_msg().joint_trajectory
        names = tuple(msg.joint_names)
        order = [names.index(j) for j in robot_spec.ARM_JOINTS]
        times = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
        q = np.array([[p.positions[i] for i in order] for p in msg.points])
        qd = np.array([[p.velocities[i] if p.velocities else 0.0 for i in order] for p in msg.points])
        traj = JointTrajectory(robot_spec.ARM_JOINTS, times, q, qd, time.perf_counter() - t0)
        if not self._embedded._verify_path(lambda s: _polyline(q, s), self._embedded.params.free_margin_m):
            raise PathInCollision("MoveIt 2 plan failed the embedded fine-resolution verification")
        return traj

    def plan_pose(self, start: Sequence[float], pose: np.ndarray) -> JointTrajectory:
        return self.plan_joints(start, self.ik(pose, [start]))

    def plan_linear(self, start: Sequence[float], pose: np.ndarray,
                    allowed: Sequence[tuple[str, str]] = ()) -> JointTrajectory:
        return self._embedded.plan_linear(start, pose, allowed)


def _polyline(q: np.ndarray, s: float) -> np.ndarray:
    x = s * (len(q) - 1)
    k = min(int(x), len(q) - 2)
    a = x - k
    return (1 - a) * q[k] + a * q[k + 1]


def _quat_wxyz(r: np.ndarray) -> tuple[float, float, float, float]:
    w = math.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    return w, x, y, z


def moveit_available() -> bool:
    try:
        import moveit.planning  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def make_planner(backend: str = "auto", robot: RobotModel | None = None,
                 params: PlannerParams | None = None) -> MotionPlanner:
    """'embedded', 'moveit', or 'auto' (MoveIt 2 when moveit_py imports, else embedded)."""
    if backend not in ("auto", "embedded", "moveit"):
        raise ConfigurationError(f"planner backend={backend!r} is not one of 'auto', 'embedded', 'moveit'")
    if backend == "moveit" or (backend == "auto" and moveit_available()):
        return MoveItPlanner(robot)
    return EmbeddedPlanner(robot, params)
