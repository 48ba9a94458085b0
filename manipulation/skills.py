"""Skills of the mobile manipulator: navigate, dock + re-localise, pick, place, verify, recover.

Pure Python over injected roles (``manipulation.hardware``: Arm, Gripper, Base, Localiser), a
motion planner and a Clock, so the same code drives the lab robot and the twin. Every skill
checks its input against the lab layout and the inventory BEFORE anything moves (unknown station
or slot, empty source, full target, hands full): bad input changes nothing.

While executing, ``should_stop()`` is polled every control period (20 ms of the clock's time):
when it returns an error (``EmergencyStop``, ``Cancelled``) the arm and the base are halted at
once and that error is raised.

Re-localisation: wheel odometry drifts by a few centimetres over a drive across the lab, more
than a 2 mL vial (12 mm) between fingers opened to 30 mm forgives. At the station the robot
measures the station frame from its fiducial (the Localiser), corrects its odometry, drives a
short correction when the error is large, and plans the arm against the measured station.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
from pydantic import Field

from aichemist.clock import Clock
from aichemist.errors import AIChemistError, PerceptionError, StepTimeout, ValidationError
from aichemist.params import Params
from manipulation.errors import (GraspFailed, GripperNotEmpty, LocalisationFailed, PathInCollision, SlotEmpty,
                                 SlotOccupied, UnknownSlot, UnknownStation)
from manipulation.hardware import Arm, Base, Gripper, Localiser, StationFix
from manipulation.layout import LabLayout, Pose2D, Station, matrix_to_pose2d, se3_matrix, wrap_angle
from manipulation.navigation import BaseRoutePlanner
from manipulation.planning import JointTrajectory, MotionPlanner
from manipulation.robot_model import ATTACHED_NAME
from manipulation.scene import build_scene
from perception.errors import UntrustworthyEstimate

DOWN = (math.pi, 0.0, 0.0)


class SkillParams(Params):
    control_period_s: float = Field(0.02, gt=0, le=0.1)
    grasp_height_m: float = Field(0.012, ge=0.005, le=0.03, description="TCP above the vial bottom when grasping")
    pre_grasp_height_m: float = Field(0.09, gt=0.04, le=0.3)
    release_clearance_m: float = Field(0.003, ge=0, le=0.01)
    approach_opening_m: float = Field(0.030, gt=0.012, le=0.085)
    grasp_width_tolerance_m: float = Field(0.003, gt=0, le=0.01)
    nav_speed_m_s: float = Field(0.5, gt=0, le=1.5)
    nav_yaw_rate_rad_s: float = Field(0.8, gt=0, le=2.0)
    dock_speed_m_s: float = Field(0.1, gt=0, le=0.5)
    waypoint_tolerance_m: float = Field(0.01, gt=0, le=0.1)
    relocalise_threshold_m: float = Field(0.02, gt=0, le=0.2)
    relocalise_threshold_rad: float = Field(0.035, gt=0, le=0.5)
    max_dock_corrections: int = Field(2, ge=0, le=5)
    # a pre-dock fix not trusted from afar (a small tag) gets a closer look: creep up, ask again;
    # together at most half the pre-dock distance (0.35 m), so the base stays clear of the bench
    coarse_creep_m: float = Field(0.08, gt=0, le=0.1)
    max_coarse_creeps: int = Field(2, ge=0, le=2)
    max_grasp_attempts: int = Field(2, ge=1, le=5)
    motion_timeout_factor: float = Field(3.0, ge=1.0, le=20.0)


@dataclass
class Inventory:
    """What the robot believes is where: '<station>/<slot>' -> vial id, and the held vial."""

    slots: dict[str, str] = field(default_factory=dict)
    held: str | None = None
    held_from: str | None = None  # the slot the held vial was picked from

    @classmethod
    def from_layout(cls, layout: LabLayout) -> "Inventory":
        return cls(dict(layout.initial_vials))

    def copy(self) -> "Inventory":
        return Inventory(dict(self.slots), self.held, self.held_from)


Feedback = Callable[[str, float], None]
StopCheck = Callable[[], "AIChemistError | None"]
InventoryChanged = Callable[[], None]


class Skills:
    def __init__(self, layout: LabLayout, planner: MotionPlanner, arm: Arm, gripper: Gripper, base: Base,
                 localiser: Localiser, clock: Clock, *, params: SkillParams | None = None,
                 inventory: Inventory | None = None, should_stop: StopCheck | None = None,
                 feedback: Feedback | None = None, look_q: Sequence[float] | None = None,
                 on_inventory_change: InventoryChanged | None = None) -> None:
        self.layout = layout
        self.planner = planner
        self.robot = planner.robot
        self.arm, self.gripper, self.base, self.localiser = arm, gripper, base, localiser
        self.clock = clock
        self.params = params or SkillParams()
        self.inventory = inventory or Inventory.from_layout(layout)
        # guards the inventory's updates so another thread's ``inventory_snapshot`` is never torn
        self._inventory_lock = threading.Lock()
        # called when a pick or a place has finished (arm stowed) and when a vial was lost: the moment
        # to record the world (manipulator_node saves the twin's state there)
        self.on_inventory_change: InventoryChanged = on_inventory_change or (lambda: None)
        self.should_stop: StopCheck = should_stop or (lambda: None)
        self.feedback: Feedback = feedback or (lambda phase, progress: None)
        self.routes = BaseRoutePlanner(layout)
        self.docked_at: str | None = None
        self.fix: StationFix | None = None
        self.stats = {"relocalisations": 0, "dock_corrections": 0, "regrasps": 0, "coarse_creeps": 0}
        # arm configuration in which the wrist camera sees the station's tag from the pre-dock and
        # the dock pose; None when the localiser does not look through the arm's camera
        self.look_q = None if look_q is None else np.array(look_q, dtype=float)
        if self.look_q is not None and self.look_q.shape != (6,):
            raise ValidationError(f"look_q must hold 6 joint angles, got {len(self.look_q)}")

    def inventory_snapshot(self) -> Inventory:
        """A consistent copy of the inventory (safe to call from another thread while a skill runs)."""
        with self._inventory_lock:
            return self.inventory.copy()

    # --- validation (no motion) ------------------------------------------------------------
    def station(self, name: str) -> Station:
        try:
            return self.layout.station(name)
        except AIChemistError:
            raise UnknownStation(f"station '{name}' does not exist; known stations: "
                                 f"{', '.join(self.layout.station_names())}", station=name) from None

    def _slot(self, station: Station, slot: str) -> str:
        if station.rack is None:
            raise UnknownSlot(f"station '{station.name}' has no rack slots", station=station.name, slot=slot)
        if slot not in station.rack.slot_names():
            raise UnknownSlot(f"slot '{slot}' does not exist at '{station.name}' (slots "
                              f"{station.rack.slot_names()[0]}..{station.rack.slot_names()[-1]})",
                              station=station.name, slot=slot)
        return f"{station.name}/{slot}"

    def check_pick(self, station_name: str, slot: str) -> str:
        key = self._slot(self.station(station_name), slot)
        if self.inventory.held is not None:
            raise GripperNotEmpty(f"cannot pick from {key}: already holding vial '{self.inventory.held}'")
        if key not in self.inventory.slots:
            raise SlotEmpty(f"cannot pick from {key}: the slot is empty", slot=key)
        return key

    def check_place(self, station_name: str, slot: str, *, holding: bool = True) -> str:
        key = self._slot(self.station(station_name), slot)
        if holding and self.inventory.held is None:
            raise GripperNotEmpty(f"cannot place into {key}: not holding a vial")
        if key in self.inventory.slots:
            raise SlotOccupied(f"cannot place into {key}: the slot already holds vial '{self.inventory.slots[key]}'",
                               slot=key)
        return key

    # --- composite ---------------------------------------------------------------------------
    def transfer(self, src_station: str, src_slot: str, dst_station: str, dst_slot: str) -> str:
        """Pick a vial and place it elsewhere: validated as a whole before anything moves.

        A transfer that was interrupted after the pick (cancelled, timed out, e-stopped) is resumed
        when asked again: the robot still holds the vial from that slot, so it goes on to place it."""
        key = self._slot(self.station(src_station), src_slot)
        if self.inventory.held is not None and self.inventory.held_from == key:
            self.check_place(dst_station, dst_slot)
            vial = self.inventory.held
            self.feedback("resuming: placing the held vial", 0.0)
            self._retreat_up()
            self.place(dst_station, dst_slot)
            return vial
        if (self.inventory.held is not None and self.inventory.held_from
                and self.inventory.held_from not in self.inventory.slots):
            # holding another transfer's vial (it was interrupted): once this request is known to be
            # valid, put that vial back where it came from (where the planner still counts it)
            if key not in self.inventory.slots:
                raise SlotEmpty(f"cannot pick from {key}: the slot is empty", slot=key)
            self.check_place(dst_station, dst_slot)
            station, _, slot = self.inventory.held_from.partition("/")
            self.feedback("putting the held vial back", 0.0)
            self._retreat_up()
            self.place(station, slot)
        src = self.check_pick(src_station, src_slot)
        dst = self.check_place(dst_station, dst_slot, holding=False)
        if src == dst:
            raise SlotOccupied(f"source and target are the same slot {src}")
        vial = self.pick(src_station, src_slot)
        self.place(dst_station, dst_slot)
        return vial

    # --- navigation ----------------------------------------------------------------------------
    def navigate(self, station_name: str) -> Pose2D:
        station = self.station(station_name)
        self.feedback("navigating", 0.0)
        self._stow_arm()
        route = self.routes.route(self.base.odometry(), station)
        self.docked_at = None
        self.fix = None
        for k, wp in enumerate(route):
            final = k == len(route) - 1
            if final:
                # coarse-to-fine: the drift of a long drive (several cm) is corrected on the
                # station's fiducial before the last, slow, straight leg towards the bench
                self.feedback("localising", 0.0)
                self._relocalise_coarse(station)
                self.feedback("navigating", k / len(route))
            self._drive_to(wp, self.params.dock_speed_m_s if final else self.params.nav_speed_m_s)
            self.feedback("navigating", (k + 1) / len(route))
        return self.base.odometry()

    def dock(self, station_name: str) -> StationFix:
        """Navigate to the station and re-localise on its fiducial (correcting if needed)."""
        station = self.station(station_name)
        if self.docked_at != station.name:
            self.navigate(station.name)
        self.feedback("localising", 0.0)
        for attempt in range(self.params.max_dock_corrections + 1):
            fix = self._localise(station)
            measured = matrix_to_pose2d(station.matrix() @ np.linalg.inv(fix.base_to_station))
            self.base.reset_odometry(measured)
            self.stats["relocalisations"] += 1
            dock = station.dock_pose()
            err = math.hypot(measured.x - dock.x, measured.y - dock.y)
            yaw_err = abs(wrap_angle(measured.yaw - dock.yaw))
            self.fix = fix
            self.docked_at = station.name
            if err <= self.params.relocalise_threshold_m and yaw_err <= self.params.relocalise_threshold_rad:
                break
            if attempt == self.params.max_dock_corrections:
                break  # close enough for the arm to compensate; the plan uses the measured pose
            self.stats["dock_corrections"] += 1
            self.feedback("docking correction", attempt + 1.0)
            self._drive_to(dock, self.params.dock_speed_m_s)
        self.feedback("localising", 1.0)
        return self.fix

    def _localise(self, station: Station) -> StationFix:
        self._point_camera()
        try:
            fix = self.localiser.locate_station(station.name)
        except PerceptionError:
            raise
        except AIChemistError as exc:
            raise LocalisationFailed(f"locating '{station.name}' failed: {exc}") from exc
        d = float(np.linalg.norm(fix.base_to_station[:2, 3]))
        if not 0.2 < d < 1.5:
            raise LocalisationFailed(f"implausible fix for '{station.name}': station {d:.2f} m from the base")
        return fix

    def _drive_to(self, goal: Pose2D, speed: float) -> None:
        p = self.params
        distance = math.hypot(goal.x - self.base.odometry().x, goal.y - self.base.odometry().y)
        turn = abs(wrap_angle(goal.yaw - self.base.odometry().yaw))
        timeout = self.params.motion_timeout_factor * (distance / speed + turn / p.nav_yaw_rate_rad_s) + 5.0
        t_end = self.clock.now() + timeout
        try:
            while True:
                self._check_stop()
                pose = self.base.odometry()
                dx, dy = goal.x - pose.x, goal.y - pose.y
                dist = math.hypot(dx, dy)
                dyaw = wrap_angle(goal.yaw - pose.yaw)
                if dist < p.waypoint_tolerance_m and abs(dyaw) < 0.01:
                    break
                if self.clock.now() > t_end:
                    raise StepTimeout(f"base did not reach ({goal.x:.2f}, {goal.y:.2f}) within {timeout:.0f} s")
                # proportional approach with speed limits, slowing down over the last 0.2 m
                v = min(speed, max(0.03, dist * 2.0)) if dist >= p.waypoint_tolerance_m else 0.0
                wz = max(-p.nav_yaw_rate_rad_s, min(p.nav_yaw_rate_rad_s, 2.0 * dyaw))
                vx_w, vy_w = (v * dx / dist, v * dy / dist) if dist > 1e-9 else (0.0, 0.0)
                c, s = math.cos(pose.yaw), math.sin(pose.yaw)
                self.base.command_velocity(c * vx_w + s * vy_w, -s * vx_w + c * vy_w, wz)
                self.clock.sleep(p.control_period_s)
        finally:
            self.base.command_velocity(0.0, 0.0, 0.0)

    # --- arm -------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        err = self.should_stop()
        if err is not None:
            self.arm.halt()
            self.base.halt()
            raise err

    def _execute(self, traj: JointTrajectory, phase: str) -> None:
        self.arm.start_trajectory(traj)
        t_end = self.clock.now() + traj.duration_s * self.params.motion_timeout_factor + 1.0
        t0 = self.clock.now()
        while not self.arm.trajectory_done():
            self._check_stop()
            if self.clock.now() > t_end:
                self.arm.halt()
                raise StepTimeout(f"arm did not finish '{phase}' within {t_end - t0:.1f} s")
            self.feedback(phase, min(1.0, (self.clock.now() - t0) / max(traj.duration_s, 1e-6)))
            self.clock.sleep(self.params.control_period_s)

    def _gripper_to(self, opening_m: float) -> float:
        self.gripper.command_opening(opening_m)
        t_end = self.clock.now() + 3.0
        self.clock.sleep(self.params.control_period_s)
        while self.gripper.is_moving():
            self._check_stop()
            if self.clock.now() > t_end:
                raise StepTimeout("gripper did not settle within 3 s")
            self.clock.sleep(self.params.control_period_s)
        return self.gripper.opening_m()

    def _stow_arm(self) -> None:
        q = self.arm.joint_positions()
        stow = np.array(self.robot.spec.stow_q)
        if np.abs(q - stow).max() < 1e-3:
            return
        self._sync_gripper_model()
        self.planner.set_scene(self._scene())
        try:
            traj = self.planner.plan_joints(q, stow)
        except PathInCollision:
            # stopped close to the rack (a cancelled descent, an e-stop): back straight up first
            up = self.robot.fk(q)
            up[2, 3] += self.params.pre_grasp_height_m
            self._execute(self.planner.plan_linear(q, up, self._rack_contacts()), "retreating")
            traj = self.planner.plan_joints(self.arm.joint_positions(), stow)
        self._execute(traj, "stowing arm")

    def _point_camera(self) -> None:
        """Move the arm to ``look_q`` (planned in the current scene) so the wrist camera sees the tag."""
        if self.look_q is None:
            return
        q = self.arm.joint_positions()
        if np.abs(q - self.look_q).max() < 1e-3:
            return
        self._sync_gripper_model()
        self.planner.set_scene(self._scene())
        self._execute(self.planner.plan_joints(q, self.look_q), "pointing the wrist camera")

    def _rack_contacts(self) -> list[tuple[str, str]]:
        """Contacts allowed while backing straight up from where the arm stopped: the fingers and the
        held vial on racks, benches and the vials standing next to it."""
        racks = [f"{s.name}_rack" for s in self.layout.stations if s.rack is not None]
        benches = [b.name for b in getattr(self.layout, "benches", [])]
        vials = [f"vial:{v}" for v in self.inventory.slots.values()]
        links = ("finger_left_link", "finger_right_link", ATTACHED_NAME)
        return [(link, other) for other in racks + benches + vials for link in links]

    def _retreat_up(self) -> None:
        """Straight up from where an interrupted motion left the hand (it may touch the rack)."""
        self._sync_gripper_model()
        self.planner.set_scene(self._scene())
        q = self.arm.joint_positions()
        try:  # free already (it stopped away from the rack): nothing to back away from
            self.planner.plan_joints(q, np.array(self.robot.spec.stow_q))
            return
        except PathInCollision:
            pass
        except AIChemistError:  # no stow path from here for another reason: the next motion says why
            return
        up = self.robot.fk(q)
        up[2, 3] += self.params.pre_grasp_height_m
        self._execute(self.planner.plan_linear(q, up, self._rack_contacts()), "retreating")

    def _sync_gripper_model(self) -> None:
        self.robot.finger_opening_m = self.gripper.opening_m()

    def _scene(self, exclude: tuple[str, ...] = ()) -> list:
        return build_scene(self.layout, self.base.odometry(), self.inventory.slots, exclude_vials=exclude)

    def _slot_pose(self, station: Station, slot: str, lift_m: float) -> np.ndarray:
        assert self.fix is not None
        bottom = station.rack.slot_xyz(slot)
        return self.fix.base_to_station @ se3_matrix(bottom + np.array([0.0, 0.0, lift_m]), DOWN)

    # --- pick / place ------------------------------------------------------------------------------
    def pick(self, station_name: str, slot: str) -> str:
        key = self.check_pick(station_name, slot)
        station = self.station(station_name)
        vial_id = self.inventory.slots[key]
        vial = self.layout.vial
        last_error: AIChemistError | None = None
        for attempt in range(self.params.max_grasp_attempts):
            if attempt == 0:
                if self.docked_at != station.name:
                    self.dock(station.name)
            else:
                self.stats["regrasps"] += 1
                self.feedback("re-localising for a new grasp", 0.0)
                self._relocalise_only(station)
            p = self.params
            self._gripper_to(p.approach_opening_m)
            self._sync_gripper_model()
            self.robot.detach()
            self.planner.set_scene(self._scene())
            grasp = self._slot_pose(station, slot, p.grasp_height_m)
            pre = grasp.copy()
            pre[2, 3] += p.pre_grasp_height_m
            q = self.arm.joint_positions()
            self._execute(self.planner.plan_pose(q, pre), "approaching")
            self._execute(self.planner.plan_linear(self.arm.joint_positions(), grasp), "descending")
            width = self._gripper_to(0.0)
            if abs(width - vial.diameter_m) > p.grasp_width_tolerance_m:
                # closed on nothing (or on the vial's edge): open, back off, re-localise and retry
                last_error = GraspFailed(f"grasp at {key} closed to {width * 1000:.1f} mm, expected "
                                         f"{vial.diameter_m * 1000:.1f} mm", slot=key, width_m=width)
                self._gripper_to(p.approach_opening_m)
                self._sync_gripper_model()
                self._execute(self.planner.plan_linear(self.arm.joint_positions(), pre), "retreating")
                continue
            self._sync_gripper_model()
            self.robot.attach("cylinder", (vial.diameter_m / 2, vial.height_m),
                              se3_matrix((0.0, 0.0, p.grasp_height_m - vial.height_m / 2)))
            with self._inventory_lock:
                self.inventory.slots.pop(key)
                self.inventory.held, self.inventory.held_from = vial_id, key
            self.planner.set_scene(self._scene())
            # the held vial starts on the rack plate: that contact is expected while lifting
            lift_allowed = [(ATTACHED_NAME, f"{station.name}_rack")]
            self._execute(self.planner.plan_linear(self.arm.joint_positions(), pre, lift_allowed), "lifting")
            if not self.verify_grasp():
                self._lost()
                raise GraspFailed(f"vial '{vial_id}' slipped out of the gripper while lifting from {key}",
                                  vial=vial_id, slot=key)
            self._stow_arm()
            self.on_inventory_change()
            self.feedback("picked", 1.0)
            return vial_id
        assert last_error is not None
        self._stow_arm()
        raise last_error

    def _relocalise_coarse(self, station: Station) -> None:
        """The pre-dock fix, before the slow last leg. A tag seen but not trusted from there (from
        0.78 m the twin's 5 cm tags are 17.5-18 px wide, at the 18 px trust limit) gets a closer
        look: the base creeps ``coarse_creep_m`` towards the dock on odometry and asks again, up
        to ``max_coarse_creeps`` times. The last leg is never driven without a trusted fix: still
        untrusted, or the tag not seen at all (MarkerNotFound: the wrong bench?), stops the robot."""
        for creep in range(self.params.max_coarse_creeps + 1):
            try:
                self._relocalise_only(station)
                return
            except UntrustworthyEstimate:
                if creep == self.params.max_coarse_creeps:
                    raise
            self.stats["coarse_creeps"] += 1
            self.feedback("localising: closer look", float(creep + 1))
            pose, dock = self.base.odometry(), station.dock_pose()
            gap = math.hypot(dock.x - pose.x, dock.y - pose.y)
            step = min(self.params.coarse_creep_m, max(0.0, gap - 0.1))
            if step <= 0.0:
                raise LocalisationFailed(f"no trusted fix of '{station.name}' before the last leg")
            self._drive_to(Pose2D(x=pose.x + step * (dock.x - pose.x) / gap, y=pose.y + step * (dock.y - pose.y) / gap,
                                  yaw=dock.yaw), self.params.dock_speed_m_s)

    def _relocalise_only(self, station: Station) -> None:
        self.fix = self._localise(station)
        measured = matrix_to_pose2d(station.matrix() @ np.linalg.inv(self.fix.base_to_station))
        self.base.reset_odometry(measured)
        self.stats["relocalisations"] += 1

    def verify_grasp(self) -> bool:
        """A vial is held when the fingers stopped at its diameter (not closed past it)."""
        width = self.gripper.opening_m()
        return abs(width - self.layout.vial.diameter_m) <= self.params.grasp_width_tolerance_m

    def place(self, station_name: str, slot: str) -> str:
        key = self.check_place(station_name, slot)
        station = self.station(station_name)
        vial_id = self.inventory.held
        assert vial_id is not None
        p = self.params
        if self.docked_at != station.name:
            self.dock(station.name)
        self._sync_gripper_model()
        self.planner.set_scene(self._scene())
        release = self._slot_pose(station, slot, p.grasp_height_m + p.release_clearance_m)
        pre = release.copy()
        pre[2, 3] += p.pre_grasp_height_m
        self._execute(self.planner.plan_pose(self.arm.joint_positions(), pre), "approaching")
        if not self.verify_grasp():
            self._lost()
            raise GraspFailed(f"vial '{vial_id}' was lost on the way to {key}", vial=vial_id)
        # the held vial comes to rest just above the plate: contact with the rack is expected
        lower_allowed = [(ATTACHED_NAME, f"{station.name}_rack")]
        self._execute(self.planner.plan_linear(self.arm.joint_positions(), release, lower_allowed), "lowering")
        self._gripper_to(p.approach_opening_m)
        self.robot.detach()
        with self._inventory_lock:
            self.inventory.held = self.inventory.held_from = None
            self.inventory.slots[key] = vial_id
        self._sync_gripper_model()
        self.planner.set_scene(self._scene())
        self._execute(self.planner.plan_linear(self.arm.joint_positions(), pre), "retreating")
        self._stow_arm()
        self.on_inventory_change()
        self.feedback("placed", 1.0)
        return vial_id

    def _lost(self) -> None:
        """The held vial is gone (slipped, dropped): the hand is empty, the vial is nowhere we know."""
        with self._inventory_lock:
            self.inventory.held = self.inventory.held_from = None
        self.robot.detach()
        self.on_inventory_change()


def stop_check_from(flags: Mapping[str, Callable[[], bool]]) -> StopCheck:
    """Build a ``should_stop`` from named boolean probes, e.g. {'estop': ..., 'cancel': ...}."""
    from aichemist.errors import Cancelled, EmergencyStop

    def check() -> AIChemistError | None:
        if "estop" in flags and flags["estop"]():
            return EmergencyStop("emergency stop: all motion halted")
        if "cancel" in flags and flags["cancel"]():
            return Cancelled("cancelled: arm and base halted")
        return None

    return check


__all__ = ["Skills", "SkillParams", "Inventory", "stop_check_from"]
