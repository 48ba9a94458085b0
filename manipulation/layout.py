"""The lab layout as the robot knows it: stations, fiducials, rack slots, benches, obstacles.

One description of the lab (data file ``sim/world/lab.yaml`` for the twin; a real lab supplies
its own file with the same schema). The twin's world generators (``sim/world``: MJCF for MuJoCo,
SDF for Gazebo) read the same file, so the robot's model of the lab and the simulated lab cannot
drift apart.

Frames: ``world`` is the lab floor (z up). A station frame sits on its bench top at the front
centre of its rack, x pointing into the bench (away from the robot), z up. The robot docks
facing the station's +x at ``dock_standoff_m`` from the station origin. Slots are named like an
autosampler tray: row letter from the front ("A") then column number from the robot's left
("1"), e.g. "B3".
"""

from __future__ import annotations

import math
import pathlib
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aichemist.errors import ConfigurationError, NotFoundError
from aichemist.params import validate

DEFAULT_LAYOUT_PATH = pathlib.Path(__file__).resolve().parents[1] / "sim" / "world" / "lab.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pose2D(_Model):
    x: float
    y: float
    yaw: float = 0.0

    def matrix(self) -> np.ndarray:
        return se2_matrix(self.x, self.y, self.yaw)


class Box(_Model):
    name: str
    center_m: tuple[float, float, float]
    size_m: tuple[float, float, float] = Field(description="full extents x, y, z")
    yaw_rad: float = 0.0
    kind: Literal["bench", "obstacle", "wall", "dock"] = "obstacle"
    rgba: tuple[float, float, float, float] = (0.7, 0.7, 0.7, 1.0)


class Fiducial(_Model):
    family: Literal["tag36h11"] = "tag36h11"
    id: int = Field(ge=0, le=586)
    size_m: float = Field(0.05, gt=0, description="side of the printed black square")
    xyz_in_station_m: tuple[float, float, float]
    rpy_in_station_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)


class Rack(_Model):
    rows: int = Field(ge=1, le=26)
    cols: int = Field(ge=1, le=20)
    pitch_m: float = Field(gt=0)
    first_slot_xyz_m: tuple[float, float, float] = Field(
        description="slot A1 (front row, robot's left) in the station frame, at the vial's bottom")
    plate_thickness_m: float = 0.015

    def slot_names(self) -> list[str]:
        return [f"{chr(ord('A') + r)}{c + 1}" for r in range(self.rows) for c in range(self.cols)]

    def slot_xyz(self, slot: str) -> np.ndarray:
        if slot not in self.slot_names():
            raise NotFoundError(f"slot '{slot}' does not exist (rack has rows A-{chr(ord('A') + self.rows - 1)},"
                                f" columns 1-{self.cols})", slot=slot)
        row, col = ord(slot[0]) - ord("A"), int(slot[1:]) - 1
        x0, y0, z0 = self.first_slot_xyz_m
        # columns run from the robot's left (+y) to its right (-y)
        return np.array([x0 + row * self.pitch_m, y0 - col * self.pitch_m, z0])


class Station(_Model):
    name: str
    kind: Literal["reagent_storage", "reactor_collection", "hplc_autosampler", "charging_dock", "holder"]
    pose_m: tuple[float, float, float, float] = Field(description="x, y, z (bench top), yaw of the station frame")
    fiducial: Fiducial
    rack: Rack | None = None
    dock_standoff_m: float = Field(0.48, gt=0)
    camera_height_m: float = Field(0.55, gt=0, description="fixed <station>_camera above the station")

    def matrix(self) -> np.ndarray:
        x, y, z, yaw = self.pose_m
        return se3_matrix((x, y, z), (0.0, 0.0, yaw))

    def dock_pose(self) -> Pose2D:
        x, y, _, yaw = self.pose_m
        return Pose2D(x=x - self.dock_standoff_m * math.cos(yaw), y=y - self.dock_standoff_m * math.sin(yaw), yaw=yaw)

    def fiducial_matrix_in_station(self) -> np.ndarray:
        return se3_matrix(self.fiducial.xyz_in_station_m, self.fiducial.rpy_in_station_rad)

    def slot_world_xyz(self, slot: str) -> np.ndarray:
        if self.rack is None:
            raise NotFoundError(f"station '{self.name}' has no rack slots", station=self.name, slot=slot)
        p = self.rack.slot_xyz(slot)
        return (self.matrix() @ np.append(p, 1.0))[:3]


class VialSpec(_Model):
    diameter_m: float = 0.012     # 2 mL screw-top HPLC vial, 12 x 32 mm
    height_m: float = 0.032
    mass_kg: float = 0.006


class LabLayout(_Model):
    name: str
    room_size_m: tuple[float, float, float]
    benches: list[Box]
    obstacles: list[Box] = []
    stations: list[Station]
    vial: VialSpec = VialSpec()
    initial_vials: dict[str, str] = Field(default_factory=dict, description="'<station>/<slot>' -> vial id")

    @model_validator(mode="after")
    def _check(self) -> "LabLayout":
        names = [s.name for s in self.stations]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate station names in {names}")
        ids = [s.fiducial.id for s in self.stations]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate fiducial ids in {ids}")
        for key in self.initial_vials:
            station, _, slot = key.partition("/")
            st = next((s for s in self.stations if s.name == station), None)
            if st is None or st.rack is None or slot not in st.rack.slot_names():
                raise ValueError(f"initial vial position '{key}' is not a station slot")
        return self

    def station(self, name: str) -> Station:
        for s in self.stations:
            if s.name == name:
                return s
        raise NotFoundError(f"station '{name}' does not exist; known stations: {', '.join(self.station_names())}",
                            station=name)

    def station_names(self) -> list[str]:
        return [s.name for s in self.stations]

    def all_boxes(self) -> list[Box]:
        return list(self.benches) + list(self.obstacles)


def load_layout(path: str | pathlib.Path | None = None) -> LabLayout:
    path = pathlib.Path(path) if path else DEFAULT_LAYOUT_PATH
    if not path.is_file():
        raise ConfigurationError(f"lab layout file {path} does not exist")
    data = yaml.safe_load(path.read_text())
    return validate(LabLayout, data, what=f"lab layout {path}", error=ConfigurationError)


# --- small SE(2)/SE(3) helpers (numpy, no ROS) ------------------------------------------
def rpy_matrix(rpy) -> np.ndarray:
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def se3_matrix(xyz, rpy=(0.0, 0.0, 0.0)) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rpy_matrix(rpy)
    t[:3, 3] = xyz
    return t


def se2_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    return se3_matrix((x, y, 0.0), (0.0, 0.0, yaw))


def matrix_to_pose2d(t: np.ndarray) -> Pose2D:
    return Pose2D(x=float(t[0, 3]), y=float(t[1, 3]), yaw=math.atan2(t[1, 0], t[0, 0]))


def matrix_to_rpy(r: np.ndarray) -> tuple[float, float, float]:
    pitch = math.atan2(-r[2, 0], math.hypot(r[0, 0], r[1, 0]))
    if abs(math.cos(pitch)) < 1e-9:
        return (math.atan2(-r[1, 2], r[1, 1]), pitch, 0.0)
    return (math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0]))


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi
