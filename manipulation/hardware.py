"""Hardware roles the skills drive: Arm, Gripper, Base, and the station Localiser.

On the lab robot these are the arm controller (e.g. UR's ros2_control driver), the gripper
driver, the base controller and the perception node's /perception/locate_station service; in the
twin they are ``sim.robot_twin``'s drivers. The skills only see these protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from manipulation.layout import Pose2D
from manipulation.planning import JointTrajectory


class Arm(Protocol):
    def joint_positions(self) -> np.ndarray: ...

    def start_trajectory(self, trajectory: JointTrajectory) -> None:
        """Begin following ``trajectory`` (its first point must be the current position)."""

    def trajectory_done(self) -> bool: ...

    def halt(self) -> None:
        """Stop the arm where it is, now."""


class Gripper(Protocol):
    def command_opening(self, opening_m: float) -> None: ...

    def opening_m(self) -> float: ...

    def is_moving(self) -> bool: ...


class Base(Protocol):
    def odometry(self) -> Pose2D:
        """The base pose the wheel odometry believes (drifts)."""

    def reset_odometry(self, pose: Pose2D) -> None:
        """Correct the odometry after a re-localisation."""

    def command_velocity(self, vx_m_s: float, vy_m_s: float, wz_rad_s: float) -> None:
        """Body-frame velocity command (omnidirectional base)."""

    def halt(self) -> None: ...


@dataclass(frozen=True)
class StationFix:
    """A re-localisation: the station frame measured in the robot's base frame."""

    station: str
    base_to_station: np.ndarray
    distance_m: float = 0.0
    reprojection_error_px: float = 0.0


class Localiser(Protocol):
    def locate_station(self, station: str) -> StationFix:
        """Measure the station's pose from its fiducial, or raise a PerceptionError."""
