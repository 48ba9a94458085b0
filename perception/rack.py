"""Geometry of a vial rack as perception sees it (one row of slots in front of a backdrop).

Rack frame: origin on the rack's top surface at the centre of slot 0; x along the row (to the
right seen from the front), y away from the viewer towards the backdrop, z up. The rack's
AprilTag sits on the backdrop facing the viewer (-y); in the marker's own OpenCV frame x is right,
y is up on the print and z points out of the print. Station cameras view the rack from the front,
so every vial stands against the backdrop: the usual backlit set-up of vial inspection, which makes
an empty slot, a glass vial, a liquid column and a cap distinguishable by colour against it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from aichemist.params import Params
from perception.geometry import make_transform

# Columns of the marker frame in rack axes: x_m = +x, y_m = +z (up), z_m = -y (towards the viewer).
R_RACK_MARKER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


class RackGeometry(Params):
    name: str = "rack"
    marker_id: int = Field(10, ge=0, le=586, description="AprilTag 36h11 id on the rack backdrop")
    marker_side_m: float = Field(0.05, gt=0.0, le=0.5, description="black square side of the tag")
    slots: int = Field(6, ge=1, le=48)
    pitch_m: float = Field(0.025, gt=0.0, le=0.2, description="distance between slot centres")
    vial_radius_m: float = Field(0.0075, gt=0.0, le=0.05)
    vial_height_m: float = Field(0.040, gt=0.0, le=0.2, description="glass body, bottom to cap seat")
    cap_radius_m: float = Field(0.0080, gt=0.0, le=0.05)
    cap_height_m: float = Field(0.008, gt=0.0, le=0.05)
    backdrop_y_m: float = Field(0.030, gt=0.0, le=0.3, description="backdrop face, behind the vial axes")
    marker_center_rack_m: tuple[float, float, float] = (-0.0525, 0.0295, 0.038)

    @model_validator(mode="after")
    def _check(self) -> "RackGeometry":
        from aichemist.errors import ConfigurationError

        if self.pitch_m <= 2 * max(self.vial_radius_m, self.cap_radius_m):
            raise ConfigurationError(
                f"rack {self.name}: pitch_m={self.pitch_m} must exceed the vial/cap diameter "
                f"{2 * max(self.vial_radius_m, self.cap_radius_m)}")
        return self

    def slot_name(self, index: int) -> str:
        return f"{self.name}/{index + 1}"

    def slot_center_rack(self, index: int) -> np.ndarray:
        return np.array([index * self.pitch_m, 0.0, 0.0])

    def marker_in_rack(self) -> np.ndarray:
        """4x4 pose of the marker frame in the rack frame."""
        return make_transform(R_RACK_MARKER, self.marker_center_rack_m)


class GridRackGeometry(Params):
    """A rows x cols rack seen from above (autosampler trays, reagent racks), in a station frame.

    Mirrors the lab description (sim/world/lab.yaml, manipulation.layout): slot A1 at
    ``first_slot_xyz_m`` (the vial's bottom), rows along +x, columns along -y, the station's tag
    lying at ``marker_xyz_m``/``marker_rpy_rad`` in the same frame. From above, occupancy and caps
    are visible; the liquid level is not (reported as unknown).
    """

    name: str = "rack"
    marker_id: int = Field(10, ge=0, le=586)
    marker_side_m: float = Field(0.05, gt=0.0, le=0.5)
    marker_xyz_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    marker_rpy_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rows: int = Field(2, ge=1, le=26)
    cols: int = Field(4, ge=1, le=20)
    pitch_m: float = Field(0.04, gt=0.0, le=0.2)
    first_slot_xyz_m: tuple[float, float, float] = (0.05, 0.06, 0.015)
    vial_radius_m: float = Field(0.006, gt=0.0, le=0.05)
    vial_height_m: float = Field(0.032, gt=0.0, le=0.2, description="bottom to top, cap included")

    def slot_names(self) -> list[str]:
        return [f"{chr(ord('A') + r)}{c + 1}" for r in range(self.rows) for c in range(self.cols)]

    def slot_bottom(self, index: int) -> np.ndarray:
        row, col = divmod(index, self.cols)
        x0, y0, z0 = self.first_slot_xyz_m
        return np.array([x0 + row * self.pitch_m, y0 - col * self.pitch_m, z0])

    def marker_in_rack(self) -> np.ndarray:
        from perception.geometry import rpy_to_matrix

        return make_transform(rpy_to_matrix(*self.marker_rpy_rad), self.marker_xyz_m)
