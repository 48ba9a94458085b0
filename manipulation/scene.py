"""Planning scene for the arm, from the lab layout and where the base stands.

The base is still while the arm moves, so every object is expressed in the robot's base frame
from the base pose the robot believes (odometry, corrected by re-localisation). Only objects the
arm can reach are included (the collision check costs per pair).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from manipulation import robot_spec
from manipulation.layout import LabLayout, Pose2D, se3_matrix
from manipulation.robot_model import SceneObject

ARM_REACH_M = 1.5


def rack_plate_in_station(station) -> tuple[np.ndarray, np.ndarray]:
    rack = station.rack
    x0, y0, _ = rack.first_slot_xyz_m
    centre = np.array([x0 + (rack.rows - 1) * rack.pitch_m / 2, y0 - (rack.cols - 1) * rack.pitch_m / 2,
                       rack.plate_thickness_m / 2])
    size = np.array([rack.rows * rack.pitch_m, rack.cols * rack.pitch_m, rack.plate_thickness_m])
    return centre, size


def vial_object_name(vial_id: str) -> str:
    return f"vial:{vial_id}"


def build_scene(layout: LabLayout, base_pose: Pose2D, occupancy: Mapping[str, str],
                *, exclude_vials: Iterable[str] = (), reach_m: float = ARM_REACH_M) -> list[SceneObject]:
    """Scene objects (base frame) near the arm. ``occupancy``: '<station>/<slot>' -> vial id."""
    world_to_base = np.linalg.inv(base_pose.matrix())
    arm_xy = (base_pose.matrix() @ np.array([*robot_spec.DEFAULT_SPEC.arm_mount_xyz_m[:2], 0.0, 1.0]))[:2]
    objects: list[SceneObject] = []

    def near(center_xy: np.ndarray, half_diag: float) -> bool:
        return float(np.linalg.norm(center_xy - arm_xy)) - half_diag < reach_m

    for box in layout.all_boxes():
        c = np.array(box.center_m)
        if near(c[:2], float(np.hypot(box.size_m[0], box.size_m[1])) / 2):
            objects.append(SceneObject(box.name, "box", tuple(box.size_m),
                                       world_to_base @ se3_matrix(c, (0.0, 0.0, box.yaw_rad))))
    excluded = set(exclude_vials)
    for st in layout.stations:
        t = st.matrix()
        if st.rack is None or not near(t[:2, 3], 0.3):
            continue
        centre, size = rack_plate_in_station(st)
        objects.append(SceneObject(f"{st.name}_rack", "box", tuple(size), world_to_base @ t @ se3_matrix(centre)))
        for slot in st.rack.slot_names():
            vial_id = occupancy.get(f"{st.name}/{slot}")
            if vial_id is None or vial_id in excluded:
                continue
            bottom = st.rack.slot_xyz(slot)
            pose = t @ se3_matrix(bottom + np.array([0.0, 0.0, layout.vial.height_m / 2]))
            objects.append(SceneObject(vial_object_name(vial_id), "cylinder",
                                       (layout.vial.diameter_m / 2, layout.vial.height_m), world_to_base @ pose))
    return objects
