"""Rack and vial inspection from a colour image: slot occupancy, cap present, liquid level.

The rack is located by its AprilTag (``FiducialDetector``), so every slot's vial can be projected
into the image. For each slot the inspector samples colour profiles along the vial's height and
divides them by the backdrop's colour measured just above the same slot, which cancels the light
level and colour (the camera's randomised lighting and gain in the twin, the room's in the lab).
A row's *score* is the distance of that ratio from 1 (backdrop = 0):
  - occupied: the glass (or its content) over the upper body differs from the backdrop;
  - cap: the cap band, between the body's top and the cap's top, differs strongly;
  - liquid level: rows are sampled on the *back* wall of the vial when the camera looks from above
    (a ray through the back wall below the surface runs through liquid, one above it passes over
    the surface), so the liquid's top row in the image gives its height without the parallax of
    the visible liquid surface; the level is the count of liquid rows from the bottom up, as a
    fraction of the vial body's height.
Assumptions (true of the twin and of a standard backlit station): a uniform, light backdrop;
caps and liquids that contrast with it (a clear solvent or a white cap would need another cue).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from pydantic import Field

from aichemist.params import Params
from perception.camera import CameraIntrinsics
from perception.errors import ImageQualityError, UntrustworthyEstimate
from perception.fiducials import FiducialDetection, FiducialDetector, FiducialParams, to_rgb_float
from perception.geometry import invert
from perception.rack import GridRackGeometry, RackGeometry


class InspectionParams(Params):
    rows_per_vial: int = Field(48, ge=8, le=400, description="samples along the vial height")
    occupied_score: float = Field(0.07, gt=0.0, le=2.0, description="mean score above which glass is seen")
    cap_score: float = Field(0.35, gt=0.0, le=2.0, description="mean score of the cap band above which a cap is seen")
    liquid_score: float = Field(0.45, gt=0.0, le=2.0, description="row score above which a row is liquid")
    min_backdrop_level: float = Field(0.12, gt=0.0, le=1.0, description="backdrop mean brightness (0..1) needed")
    min_slot_px: float = Field(6.0, gt=0.0, le=1000.0, description="vial diameter in the image needed")


@dataclass
class SlotResult:
    index: int
    name: str
    occupied: bool
    cap_present: bool
    liquid_level_fraction: float
    occupied_score: float
    cap_score: float
    confidence: float


@dataclass
class RackInspection:
    rack: str
    rack_in_camera: np.ndarray
    slots: list[SlotResult] = field(default_factory=list)
    marker: Optional[FiducialDetection] = None


def _sample(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear colour at Nx2 pixel coordinates (NaN outside the image)."""
    h, w = image.shape[:2]
    mx = pixels[:, 0].astype(np.float32).reshape(1, -1)
    my = pixels[:, 1].astype(np.float32).reshape(1, -1)
    out = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(np.nan,) * 3)
    out = out.reshape(-1, image.shape[2])
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] <= w - 1) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= h - 1)
    out[~inside] = np.nan
    return out


def _project_points(intrinsics: CameraIntrinsics, rack_in_camera: np.ndarray, pts_rack: np.ndarray) -> np.ndarray:
    """Pixels of Nx3 rack-frame points (with the camera's distortion)."""
    pc = (rack_in_camera[:3, :3] @ pts_rack.T).T + rack_in_camera[:3, 3]
    if np.any(pc[:, 2] <= 0.01):
        raise UntrustworthyEstimate("rack slots are behind the camera")
    rvec, _ = cv2.Rodrigues(np.eye(3))
    px, _ = cv2.projectPoints(pc, rvec, np.zeros(3), intrinsics.camera_matrix, intrinsics.dist_coeffs)
    return px.reshape(-1, 2)


class RackInspector:
    def __init__(self, geometry: RackGeometry, params: Optional[InspectionParams] = None,
                 detector: Optional[FiducialDetector] = None) -> None:
        self.geometry = geometry
        self.params = params or InspectionParams()
        # the rack's pose only places the sampling windows (mm matter little): accept more blur
        self.detector = detector or FiducialDetector(FiducialParams(marker_side_m=geometry.marker_side_m,
                                                                    max_blur_sigma_px=2.0,
                                                                    max_blur_cell_fraction=0.5))

    def inspect(self, image: np.ndarray, intrinsics: CameraIntrinsics) -> RackInspection:
        """Locate the rack by its tag, then inspect every slot. Raises PerceptionError subtypes."""
        det = self.detector.locate_marker(image, intrinsics, self.geometry.marker_id)
        rack_in_camera = det.marker_in_camera @ invert(self.geometry.marker_in_rack())
        result = self.inspect_at(image, intrinsics, rack_in_camera)
        result.marker = det
        return result

    def _project(self, intrinsics: CameraIntrinsics, rack_in_camera: np.ndarray, pts_rack: np.ndarray) -> np.ndarray:
        return _project_points(intrinsics, rack_in_camera, pts_rack)

    @staticmethod
    def _ray_exit_heights(cam: np.ndarray, front: np.ndarray, z: np.ndarray, radius: float, axis: np.ndarray
                          ) -> np.ndarray:
        """Height at which the camera's ray through each front-wall row leaves the liquid cylinder.

        The ray falls (camera above) while it crosses the vial, so it runs through liquid of level L
        exactly when it leaves the cylinder below L: the liquid seen at a row is that row's exit
        height, not its own, which removes the parallax of the visible liquid surface.
        """
        pts = front[None, :] + z[:, None] * np.array([0.0, 0.0, 1.0])
        d = pts - cam[None, :]
        # horizontal intersection with the cylinder |(x, y) - axis| = radius: the far root
        ox, oy = cam[0] - axis[0], cam[1] - axis[1]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = 2 * (ox * d[:, 0] + oy * d[:, 1])
        c = ox * ox + oy * oy - radius * radius
        disc = np.maximum(b * b - 4 * a * c, 0.0)
        t_far = (-b + np.sqrt(disc)) / (2 * a)
        return cam[2] + t_far * d[:, 2]

    @staticmethod
    def _fit_level(liquid_rows: np.ndarray, z_exit: np.ndarray) -> float:
        """The level L that best explains which rows look liquid (row liquid <=> its exit height < L).

        Rows whose ray leaves through the vial's bottom (exit height <= 0) see liquid for any L > 0
        but the rack through empty glass otherwise, so they only vote between L = 0 and L > 0.
        """
        informative = z_exit > 0
        zi, li = z_exit[informative], liquid_rows[informative]
        bottom_votes = liquid_rows[~informative]
        candidates = np.concatenate([[0.0], np.sort(zi) + 1e-6])
        best, best_cost = 0.0, np.inf
        for level in candidates:
            cost = np.count_nonzero((zi < level) != li)
            if level == 0.0:
                cost += 0.5 * np.count_nonzero(bottom_votes)  # weak: the rack through glass may look liquid
            if cost < best_cost:
                best, best_cost = level, cost
        if best > 0 and best < zi.max():
            # interpolate between the last liquid row and the first dry one
            lower = zi[zi < best].max() if np.any(zi < best) else 0.0
            upper = zi[zi >= best].min()
            best = 0.5 * (lower + upper)
        return float(best)

    def inspect_at(self, image: np.ndarray, intrinsics: CameraIntrinsics, rack_in_camera: np.ndarray) -> RackInspection:
        """Inspect every slot given the rack's pose in the camera (from its tag or from elsewhere)."""
        g, p = self.geometry, self.params
        rgb = to_rgb_float(image)
        if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
            raise ImageQualityError(f"image {rgb.shape[1]}x{rgb.shape[0]} does not match the camera info "
                                    f"{intrinsics.width}x{intrinsics.height}")
        cam_in_rack = invert(rack_in_camera)[:3, 3]
        top_z = g.vial_height_m + g.cap_height_m
        n = p.rows_per_vial
        z = (np.arange(n) + 0.5) / n * top_z
        out = RackInspection(g.name, rack_in_camera)
        for i in range(g.slots):
            axis = g.slot_center_rack(i)
            towards = cam_in_rack[:2] - axis[:2]
            u = np.array([*towards / max(np.linalg.norm(towards), 1e-9), 0.0])   # horizontal, towards the camera
            v = np.cross([0.0, 0.0, 1.0], u)                                      # horizontal, across the vial
            # diameter in pixels: the slot must be resolvable
            ends = self._project(intrinsics, rack_in_camera, np.array([axis + g.vial_radius_m * v + [0, 0, g.vial_height_m / 2],
                                                                       axis - g.vial_radius_m * v + [0, 0, g.vial_height_m / 2]]))
            diameter_px = float(np.linalg.norm(ends[0] - ends[1]))
            if diameter_px < p.min_slot_px:
                raise UntrustworthyEstimate(f"rack {g.name}: vials only {diameter_px:.1f} px wide in the image "
                                            f"(< {p.min_slot_px} px): move the camera closer")
            # rows sampled on the front wall, facing the camera
            across = np.array([-0.45, -0.15, 0.15, 0.45]) * g.vial_radius_m
            front = axis + 0.85 * g.vial_radius_m * u
            pts = (front[None, None, :] + across[None, :, None] * v[None, None, :]
                   + z[:, None, None] * np.array([0.0, 0.0, 1.0]))
            cols = _sample(rgb, self._project(intrinsics, rack_in_camera, pts.reshape(-1, 3))).reshape(n, len(across), 3)
            with warnings.catch_warnings():  # all-NaN rows (outside the image) are refused just below
                warnings.simplefilter("ignore", RuntimeWarning)
                profile = np.nanmedian(cols, axis=1)
            # backdrop just above the slot (never hidden by a vial seen from the front)
            bz = top_z + np.linspace(0.004, 0.012, 5)
            bpts = np.array([[axis[0] + dx, g.backdrop_y_m - 1e-4, zz] for zz in bz
                             for dx in np.linspace(-0.6, 0.6, 5) * g.vial_radius_m])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                backdrop = np.nanmedian(_sample(rgb, self._project(intrinsics, rack_in_camera, bpts)), axis=0)
            if not np.all(np.isfinite(profile)) or not np.all(np.isfinite(backdrop)):
                raise UntrustworthyEstimate(f"rack {g.name}: slot {i + 1} is not fully inside the image")
            if backdrop.mean() < p.min_backdrop_level:
                raise ImageQualityError(f"rack {g.name}: backdrop too dark to inspect "
                                        f"(mean {backdrop.mean():.2f} < {p.min_backdrop_level})")
            ratio = profile / np.maximum(backdrop, 1e-3)
            # glass, liquid and caps absorb: a row brighter than the backdrop (the rack's top in more
            # light, a reflection) is not evidence of anything
            score = np.linalg.norm(np.minimum(ratio, 1.0) - 1.0, axis=1)
            body = z < g.vial_height_m
            upper = (z > 0.5 * g.vial_height_m) & (z < 0.95 * g.vial_height_m)
            # the top of the cap band: rays lower down pass over an open vial's rim into the vial
            cap_band = (z > g.vial_height_m + 0.75 * g.cap_height_m) & (z < g.vial_height_m + 0.97 * g.cap_height_m)
            occ_score = float(np.mean(score[upper]))
            cap_score = float(np.mean(score[cap_band]))
            occupied = occ_score > p.occupied_score or cap_score > p.cap_score
            cap = occupied and cap_score > p.cap_score
            level = 0.0
            if occupied:
                z_exit = self._ray_exit_heights(cam_in_rack, front, z[body], 0.93 * g.vial_radius_m, axis)
                level = self._fit_level(score[body] > p.liquid_score, z_exit) / g.vial_height_m
            # confidence: how far the deciding scores are from their thresholds (0 = on the fence)
            margins = [abs(occ_score - p.occupied_score) / p.occupied_score,
                       abs(cap_score - p.cap_score) / p.cap_score]
            confidence = float(np.clip(min(margins), 0.0, 1.0))
            out.slots.append(SlotResult(i, g.slot_name(i), bool(occupied), bool(cap), level, occ_score, cap_score,
                                        confidence))
        return out


class TopViewParams(Params):
    occupied_score: float = Field(0.035, gt=0.0, le=2.0,
                                  description="slot floor vs rack plate (seen: empty <= 0.02)")
    cap_score: float = Field(0.18, gt=0.0, le=2.0,
                             description="cap top vs plate, absorption only (bare glass <= 0.152; caps >= 0.206)")
    shade_score: float = Field(0.03, gt=0.0, le=1.0,
                               description="darkest tenth of the vial silhouette vs plate (empty <= 0.011)")
    min_plate_level: float = Field(0.12, gt=0.0, le=1.0)
    min_slot_px: float = Field(6.0, gt=0.0, le=1000.0)


class TopViewRackInspector:
    """Occupancy and caps of a grid rack from a camera above it (station cameras, wrist looking down).

    Each slot's vial top (a disk at the vial's height) is projected into the image and its colour
    divided by the rack plate's colour sampled on a ring around the slot; a vial top differs from the plate
    (score as in ``RackInspector``), a cap strongly. The liquid level is not visible from above:
    ``liquid_level_fraction`` is NaN. A bare glass top can match the plate: the vial's side wall,
    shaded as a crescent from above, is the second cue (the darkest tenth of samples on its
    silhouette against the plate). ``last_scores`` keeps (floor, shade, cap) per slot of the last
    inspection for diagnosis.
    """

    def __init__(self, geometry: GridRackGeometry, params: Optional[TopViewParams] = None,
                 detector: Optional[FiducialDetector] = None) -> None:
        self.geometry = geometry
        self.params = params or TopViewParams()
        self.detector = detector or FiducialDetector(FiducialParams(marker_side_m=geometry.marker_side_m,
                                                                    max_blur_sigma_px=2.0,
                                                                    max_blur_cell_fraction=0.5))

    def inspect(self, image: np.ndarray, intrinsics: CameraIntrinsics) -> RackInspection:
        det = self.detector.locate_marker(image, intrinsics, self.geometry.marker_id)
        rack_in_camera = det.marker_in_camera @ invert(self.geometry.marker_in_rack())
        result = self.inspect_at(image, intrinsics, rack_in_camera)
        result.marker = det
        return result

    def inspect_at(self, image: np.ndarray, intrinsics: CameraIntrinsics, rack_in_camera: np.ndarray) -> RackInspection:
        g, p = self.geometry, self.params
        rgb = to_rgb_float(image)
        if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
            raise ImageQualityError(f"image {rgb.shape[1]}x{rgb.shape[0]} does not match the camera info "
                                    f"{intrinsics.width}x{intrinsics.height}")
        def project(_self, k, t, pts):
            return _project_points(k, t, pts)
        out = RackInspection(g.name, rack_in_camera)
        self.last_scores: list[tuple[float, float, float]] = []
        ring = [(r * np.cos(t), r * np.sin(t)) for r in (0.0, 0.3, 0.55) for t in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
        for i, name in enumerate(g.slot_names()):
            bottom = g.slot_bottom(i)
            top = bottom + [0.0, 0.0, g.vial_height_m]

            def disk(centre, scale=1.0):
                return np.array([centre + [scale * g.vial_radius_m * dx, scale * g.vial_radius_m * dy, 0.0]
                                 for dx, dy in ring])

            ends = project(self, intrinsics, rack_in_camera, np.array([top + [g.vial_radius_m, 0, 0],
                                                                        top - [g.vial_radius_m, 0, 0]]))
            if np.linalg.norm(ends[0] - ends[1]) < p.min_slot_px:
                raise UntrustworthyEstimate(f"rack {g.name}: vials under {p.min_slot_px} px wide in the image")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                # where the slot's floor projects: the plate itself when empty, the vial when not
                floor_rgb = np.nanmedian(_sample(rgb, project(self, intrinsics, rack_in_camera,
                                                              disk(bottom + [0, 0, 0.001], 0.6))), axis=0)
                top_rgb = np.nanmedian(_sample(rgb, project(self, intrinsics, rack_in_camera, disk(top, 0.7))), axis=0)
                # the vial's body from above: its side wall shows as a shaded crescent where a bare
                # glass top may match the plate; an empty slot shows the plate (or its own shadow-free floor)
                shell = np.array([bottom + [rr * g.vial_radius_m * np.cos(t), rr * g.vial_radius_m * np.sin(t), zz]
                                  for zz in np.linspace(0.15, 0.95, 5) * g.vial_height_m for rr in (0.8, 1.0)
                                  for t in np.linspace(0, 2 * np.pi, 16, endpoint=False)])
                shell_grey = _sample(rgb, project(self, intrinsics, rack_in_camera, shell)).mean(axis=1)
                # the plate around this slot (light falls off across a tray under a spot light): a ring
                # inside the slot's cell; the median ignores the side the vial leans over in perspective
                ring_pts = np.array([bottom + [0.42 * g.pitch_m * np.cos(t), 0.42 * g.pitch_m * np.sin(t), 0.0]
                                     for t in np.linspace(0, 2 * np.pi, 12, endpoint=False)])
                plate_rgb = np.nanmedian(_sample(rgb, project(self, intrinsics, rack_in_camera, ring_pts)), axis=0)
            if not (np.all(np.isfinite(floor_rgb)) and np.all(np.isfinite(top_rgb)) and np.all(np.isfinite(plate_rgb))):
                raise UntrustworthyEstimate(f"rack {g.name}: slot {name} is not fully inside the image")
            if plate_rgb.mean() < p.min_plate_level:
                raise ImageQualityError(f"rack {g.name}: rack plate too dark to inspect "
                                        f"(mean {plate_rgb.mean():.2f} < {p.min_plate_level})")
            ref = np.maximum(plate_rgb, 1e-3)
            shade_score = float(1.0 - np.nanpercentile(shell_grey, 10) / max(float(plate_rgb.mean()), 1e-3))
            # unclipped: a glass vial seen from above may be brighter than the plate (its top faces the lights)
            occ_score = float(np.linalg.norm(floor_rgb / ref - 1.0))
            # a cap absorbs (dark or coloured): only absorption counts
            cap_score = float(np.linalg.norm(np.minimum(top_rgb / ref, 1.0) - 1.0))
            occupied = occ_score > p.occupied_score or shade_score > p.shade_score
            cap = occupied and cap_score > p.cap_score
            margin = min(abs(occ_score - p.occupied_score) / p.occupied_score,
                         abs(cap_score - p.cap_score) / p.cap_score)
            out.slots.append(SlotResult(i, f"{g.name}/{name}", bool(occupied), bool(cap), float("nan"),
                                        max(occ_score, shade_score), cap_score, float(np.clip(margin, 0.0, 1.0))))
            self.last_scores.append((occ_score, shade_score, cap_score))
        return out
