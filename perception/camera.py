"""Camera model shared by every perception function: the equivalent of sensor_msgs/CameraInfo.

Images follow the OpenCV convention: pixel (u, v) = (column, row), the centre of the top-left
pixel is (0, 0), and the optical frame has x right, y down, z forward (REP 103 ``*_optical_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aichemist.errors import ValidationError


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics with optional distortion (plumb_bob: k1, k2, p1, p2, k3)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    frame_id: str = "camera_optical_frame"
    distortion_model: str = "plumb_bob"
    _k: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValidationError(f"camera {self.frame_id}: image size {self.width}x{self.height} must be positive")
        if not (self.fx > 0 and self.fy > 0):
            raise ValidationError(f"camera {self.frame_id}: focal lengths fx={self.fx}, fy={self.fy} must be > 0")
        k = np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
        object.__setattr__(self, "_k", k)

    @property
    def camera_matrix(self) -> np.ndarray:
        return self._k.copy()

    @property
    def dist_coeffs(self) -> np.ndarray:
        return np.asarray(self.distortion, dtype=float)

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float, *, frame_id: str = "camera_optical_frame"
                  ) -> "CameraIntrinsics":
        """Square pixels and a centred principal point from a vertical field of view (MuJoCo's model)."""
        fy = (height / 2.0) / np.tan(np.deg2rad(fovy_deg) / 2.0)
        return cls(width, height, fy, fy, (width - 1) / 2.0, (height - 1) / 2.0, frame_id=frame_id)

    # --- CameraInfo ------------------------------------------------------------------------
    def to_camera_info_fields(self) -> dict:
        """The fields of sensor_msgs/CameraInfo (k, d, p, r row-major) without importing ROS."""
        k = self._k.reshape(-1).tolist()
        p = [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return {"width": self.width, "height": self.height, "distortion_model": self.distortion_model,
                "d": list(self.distortion), "k": k, "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "p": p,
                "frame_id": self.frame_id}

    @classmethod
    def from_camera_info_fields(cls, *, width: int, height: int, k, d=(), frame_id: str = "",
                                distortion_model: str = "plumb_bob") -> "CameraIntrinsics":
        k = np.asarray(k, dtype=float).reshape(3, 3)
        dist = tuple(float(x) for x in d) if len(d) else (0.0,) * 5
        return cls(int(width), int(height), float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                   distortion=dist, frame_id=frame_id or "camera_optical_frame",
                   distortion_model=distortion_model or "plumb_bob")

    def project(self, points_camera: np.ndarray) -> np.ndarray:
        """Project Nx3 points in the optical frame to Nx2 pixels (no distortion)."""
        p = np.asarray(points_camera, dtype=float).reshape(-1, 3)
        z = p[:, 2:3]
        return np.hstack([self.fx * p[:, 0:1] / z + self.cx, self.fy * p[:, 1:2] / z + self.cy])
