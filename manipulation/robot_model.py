"""The robot's kinematic and collision model: pinocchio (kinematics, IK) + coal (collision).

Loaded from the description package's URDF and SRDF (the SRDF's disabled pairs are honoured).
The planning scene (benches, racks, vials near the robot) is expressed in the robot's base frame
(``base_footprint``): the base stands still while the arm moves, so each dock builds a new
scene from the lab layout and the (re-localised) base pose. A grasped vial is attached to the
TCP and checked against the world and the arm like any link.
"""

from __future__ import annotations

import math
import pathlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

from manipulation import robot_spec
from manipulation.errors import Unreachable

# Links that stand still while the arm moves: never checked against the world.
_STATIC_ROBOT_LINKS = {"base_link", "arm_base_link", "shoulder_link"}
_GRIPPER_LINKS = {"gripper_base_link", "finger_left_link", "finger_right_link", "wrist_camera_link"}
ATTACHED_NAME = "attached_object"


@dataclass(frozen=True)
class SceneObject:
    """A collision object in the robot's base frame. ``size``: box full extents, or cylinder (radius, length)."""

    name: str
    shape: Literal["box", "cylinder"]
    size: tuple[float, ...]
    pose: np.ndarray
    padding_m: float = 0.0


def _shape(shape: str, size: Sequence[float], pad: float):
    import coal

    if shape == "box":
        return coal.Box(*(float(s) + 2 * pad for s in size))
    if shape == "cylinder":
        return coal.Cylinder(float(size[0]) + pad, float(size[1]) + 2 * pad)
    raise ValueError(f"unknown shape {shape}")


def srdf_disabled_pairs(srdf_path: pathlib.Path) -> set[frozenset[str]]:
    root = ET.parse(srdf_path).getroot()
    return {frozenset((d.get("link1"), d.get("link2"))) for d in root.findall("disable_collisions")}


class RobotModel:
    def __init__(self, urdf_path: str | pathlib.Path | None = None, srdf_path: str | pathlib.Path | None = None,
                 spec: robot_spec.RobotSpec = robot_spec.DEFAULT_SPEC) -> None:
        import pinocchio as pin

        self._pin = pin
        directory = robot_spec.description_dir()
        self.urdf_path = pathlib.Path(urdf_path or directory / "urdf" / "aichemist_robot.urdf")
        self.srdf_path = pathlib.Path(srdf_path or directory / "srdf" / "aichemist_robot.srdf")
        self.spec = spec
        self.model = pin.buildModelFromUrdf(str(self.urdf_path))
        self.data = self.model.createData()
        self.tcp_id = self.model.getFrameId(robot_spec.TCP_FRAME)
        self.arm_joint_ids = [self.model.getJointId(j) for j in robot_spec.ARM_JOINTS]
        self.arm_idx_q = np.array([self.model.joints[j].idx_q for j in self.arm_joint_ids])
        self.finger_idx_q = np.array([self.model.joints[self.model.getJointId(j)].idx_q
                                      for j in robot_spec.FINGER_JOINTS])
        self.lower = np.array(spec.joint_lower_rad)
        self.upper = np.array(spec.joint_upper_rad)
        self.velocity_limits = np.array(spec.joint_speed_rad_s)
        self.acceleration_limits = np.array(spec.joint_accel_rad_s2)
        self.disabled = srdf_disabled_pairs(self.srdf_path)
        self._scene: list[SceneObject] = []
        self._attached: tuple[SceneObject, set[str]] | None = None
        self._allowed: set[frozenset[str]] = set()
        self.finger_opening_m = spec.gripper_max_opening_m
        self.checks = 0
        self._rebuild()

    # --- kinematics ----------------------------------------------------------------------
    def full_q(self, q_arm: Sequence[float], finger_opening_m: float | None = None) -> np.ndarray:
        q = np.zeros(self.model.nq)
        q[self.arm_idx_q] = q_arm
        half = (self.finger_opening_m if finger_opening_m is None else finger_opening_m) / 2
        q[self.finger_idx_q] = half
        return q

    def fk(self, q_arm: Sequence[float], frame: str = robot_spec.TCP_FRAME) -> np.ndarray:
        pin = self._pin
        q = self.full_q(q_arm)
        pin.framesForwardKinematics(self.model, self.data, q)
        return self.data.oMf[self.model.getFrameId(frame)].homogeneous.copy()

    def within_limits(self, q_arm: Sequence[float]) -> bool:
        q = np.asarray(q_arm)
        return bool(np.all(q >= self.lower - 1e-9) and np.all(q <= self.upper + 1e-9))

    def ik(self, target: np.ndarray, seeds: Iterable[Sequence[float]] = (), *, check_collision: bool = True,
           random_seeds: int = 12, rng_seed: int = 7, tol: float = 1e-5, max_iter: int = 150) -> np.ndarray:
        """A joint solution for the TCP pose ``target`` (4x4, base frame), else ``Unreachable``."""
        pin = self._pin
        goal = pin.SE3(target[:3, :3], target[:3, 3])
        rng = np.random.default_rng(rng_seed)
        candidates = [np.asarray(s, dtype=float) for s in seeds]
        candidates += [np.array(self.spec.ready_q)]
        candidates += [rng.uniform(self.lower, self.upper) for _ in range(random_seeds)]
        reason = "no seed converged"
        for seed in candidates:
            q = self._solve(goal, seed, tol, max_iter)
            if q is None:
                continue
            if not self.within_limits(q):
                reason = "solutions outside joint limits"
                continue
            if check_collision and self.in_collision(q):
                reason = "every solution found is in collision"
                continue
            return q
        p = target[:3, 3]
        raise Unreachable(f"pose at ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m in the base frame is unreachable: {reason}",
                          position_m=[float(x) for x in p])

    def _solve(self, goal, seed: np.ndarray, tol: float, max_iter: int) -> np.ndarray | None:
        pin = self._pin
        q = self.full_q(seed)
        damping = 1e-6
        for _ in range(max_iter):
            pin.framesForwardKinematics(self.model, self.data, q)
            err_se3 = self.data.oMf[self.tcp_id].actInv(goal)
            err = pin.log6(err_se3).vector
            if np.linalg.norm(err) < tol:
                qa = q[self.arm_idx_q]
                return (qa + math.pi) % (2 * math.pi) - math.pi  # +-pi joints: pick the in-range turn
            pin.computeJointJacobians(self.model, self.data, q)
            jac = pin.getFrameJacobian(self.model, self.data, self.tcp_id, pin.LOCAL)[:, self.arm_idx_q]
            jac = -pin.Jlog6(err_se3.inverse()) @ jac
            dq = -jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(6), err)
            step = np.clip(dq, -0.5, 0.5)
            q[self.arm_idx_q] += step
        return None

    # --- collision -------------------------------------------------------------------------
    def set_scene(self, objects: Sequence[SceneObject]) -> None:
        names = [o.name for o in objects]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate scene object names: {names}")
        self._scene = list(objects)
        self._rebuild()

    @property
    def scene(self) -> list[SceneObject]:
        return list(self._scene)

    def attach(self, shape: str, size: Sequence[float], tcp_to_object: np.ndarray,
               touch_links: Iterable[str] = tuple(_GRIPPER_LINKS)) -> None:
        """Attach an object (a grasped vial) to the TCP; ``touch_links`` may touch it."""
        self._attached = (SceneObject(ATTACHED_NAME, shape, tuple(size), tcp_to_object), set(touch_links))
        self._rebuild()

    def detach(self) -> None:
        self._attached = None
        self._rebuild()

    @property
    def attached(self) -> bool:
        return self._attached is not None

    def allow(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Allow contact between pairs of (link or object) names until ``allow(())`` resets it."""
        self._allowed = {frozenset(p) for p in pairs}
        self._apply_allowed()

    def _rebuild(self) -> None:
        pin = self._pin
        gm = pin.buildGeomFromUrdf(self.model, str(self.urdf_path), pin.COLLISION)
        owner = {}
        for g in gm.geometryObjects:
            owner[g.name] = self.model.frames[g.parentFrame].name
        robot_geoms = [g.name for g in gm.geometryObjects]
        for obj in self._scene:
            placement = pin.SE3(obj.pose[:3, :3].copy(), obj.pose[:3, 3].copy())
            gm.addGeometryObject(pin.GeometryObject(obj.name, 0, 0, placement, _shape(obj.shape, obj.size, obj.padding_m)))
            owner[obj.name] = obj.name
        touch: set[str] = set()
        if self._attached is not None:
            obj, touch = self._attached
            tcp = self.model.frames[self.tcp_id]
            placement = tcp.placement * pin.SE3(obj.pose[:3, :3].copy(), obj.pose[:3, 3].copy())
            gm.addGeometryObject(pin.GeometryObject(obj.name, tcp.parentJoint, self.tcp_id, placement,
                                                    _shape(obj.shape, obj.size, 0.0)))
            owner[obj.name] = obj.name
        ids = {g.name: i for i, g in enumerate(gm.geometryObjects)}
        pairs: list[tuple[str, str]] = []
        for i, a in enumerate(robot_geoms):
            for b in robot_geoms[i + 1:]:
                if owner[a] != owner[b] and frozenset((owner[a], owner[b])) not in self.disabled:
                    pairs.append((a, b))
        moving = [g for g in robot_geoms if owner[g] not in _STATIC_ROBOT_LINKS]
        for obj in self._scene:
            pairs += [(g, obj.name) for g in moving]
        if self._attached is not None:
            pairs += [(g, ATTACHED_NAME) for g in robot_geoms
                      if owner[g] not in touch and owner[g] not in {"wrist_3_link"}]
            pairs += [(ATTACHED_NAME, obj.name) for obj in self._scene]
        for a, b in pairs:
            gm.addCollisionPair(pin.CollisionPair(ids[a], ids[b]))
        self.geom_model = gm
        self.geom_data = pin.GeometryData(gm)
        self._pair_owners = [(owner[gm.geometryObjects[p.first].name], owner[gm.geometryObjects[p.second].name])
                             for p in gm.collisionPairs]
        self._apply_allowed()

    def _apply_allowed(self) -> None:
        for k, (a, b) in enumerate(self._pair_owners):
            if frozenset((a, b)) in self._allowed:
                self.geom_data.deactivateCollisionPair(k)
            else:
                self.geom_data.activateCollisionPair(k)

    def in_collision(self, q_arm: Sequence[float], finger_opening_m: float | None = None) -> bool:
        self.checks += 1
        return bool(self._pin.computeCollisions(self.model, self.data, self.geom_model, self.geom_data,
                                                self.full_q(q_arm, finger_opening_m), True))

    def min_distance(self, q_arm: Sequence[float], finger_opening_m: float | None = None) -> float:
        """Smallest distance (m) over the active pairs; negative when penetrating."""
        pin = self._pin
        self.checks += 1
        if not self.geom_model.collisionPairs:
            return math.inf
        k = pin.computeDistances(self.model, self.data, self.geom_model, self.geom_data,
                                 self.full_q(q_arm, finger_opening_m))
        if k >= len(self.geom_data.distanceResults):
            return math.inf
        return float(self.geom_data.distanceResults[k].min_distance)

    def colliding_pairs(self, q_arm: Sequence[float], finger_opening_m: float | None = None) -> list[tuple[str, str]]:
        pin = self._pin
        pin.computeCollisions(self.model, self.data, self.geom_model, self.geom_data,
                              self.full_q(q_arm, finger_opening_m), False)
        out = []
        for k, res in enumerate(self.geom_data.collisionResults):
            if res.isCollision():
                out.append(self._pair_owners[k])
        return out
