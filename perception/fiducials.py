"""AprilTag 36h11 detection with subpixel corners and a pose that is either trustworthy or refused.

Two detectors give the corners: pupil-apriltags (default: edge-refined quads, ~0.1 px corners) or
OpenCV 5's ``cv2.aruco.ArucoDetector`` with subpixel corner refinement. The pose always comes from
``cv2.solvePnPGeneric(..., SOLVEPNP_IPPE_SQUARE)`` (both planar solutions, with their reprojection
errors) refined by Levenberg-Marquardt, in OpenCV's marker frame: origin at the tag centre, x to
the right and y up on the print, z out of the print (pupil-apriltags' own pose flips x and z, so it
is not used).

A pose is returned only when every trust check passes, else a typed ``PerceptionError`` says why:
  - image quality: too dark / low contrast, or blurred (edge width estimated at the tag),
  - not found: no tag decoded, or only other ids (listed in the message),
  - untrustworthy: reprojection error, tag too small in pixels, viewed too obliquely, corners
    too close to the image border, or the two IPPE solutions about equally good but far apart
    (the planar-pose ambiguity that flips a tag's tilt).
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass, field
from typing import Literal, Optional

import cv2
import numpy as np
from pydantic import Field

from aichemist.params import Params
from perception.camera import CameraIntrinsics
from perception.errors import ImageQualityError, MarkerNotFound, UntrustworthyEstimate
from perception.geometry import invert, make_transform, rotation_angle_deg


class FiducialParams(Params):
    backend: Literal["apriltag", "opencv"] = "apriltag"
    marker_side_m: float = Field(0.05, gt=0.0, le=1.0, description="black square side of the printed tag")
    quad_decimate: float = Field(2.0, ge=1.0, le=4.0, description="apriltag: detect quads at 1/decimate scale")
    quad_sigma: float = Field(0.8, ge=0.0, le=5.0,
                              description="apriltag: Gaussian blur before quad search (noise makes it 5x slower)")
    max_reprojection_error_px: float = Field(1.0, gt=0.0, le=20.0)
    min_marker_side_px: float = Field(18.0, ge=4.0, le=2000.0, description="shortest tag side in the image")
    max_view_angle_deg: float = Field(70.0, gt=0.0, le=89.0, description="tag normal vs line of sight")
    min_ambiguity_ratio: float = Field(2.0, ge=1.0, le=100.0,
                                       description="2nd / best IPPE reprojection error needed when the two differ")
    ambiguity_angle_deg: float = Field(5.0, gt=0.0, le=180.0,
                                       description="two IPPE solutions closer than this are not ambiguous")
    border_margin_px: float = Field(3.0, ge=0.0, le=100.0)
    min_image_p99: float = Field(40.0, ge=0.0, le=255.0, description="99.8th percentile grey level below this = dark image")
    min_marker_contrast: float = Field(40.0, ge=0.0, le=255.0, description="white - black grey levels at the tag")
    max_blur_sigma_px: float = Field(1.5, gt=0.0, le=50.0, description="estimated edge blur at the tag")
    min_decision_margin: float = Field(25.0, ge=0.0, le=255.0, description="apriltag decoding margin")
    max_blur_cell_fraction: float = Field(0.25, gt=0.0, le=2.0,
                                          description="blur limit as a fraction of one tag cell in pixels")
    refine_ecc: bool = Field(True, description="refine corners by aligning the ideal tag image (ECC)")
    min_match_score: float = Field(0.8, ge=-1.0, le=1.0, description="NCC of the tag against its ideal image")


@dataclass
class FiducialDetection:
    marker_id: int
    corners_px: np.ndarray                       # 4x2: tag corners top-left, top-right, bottom-right, bottom-left
    marker_in_camera: Optional[np.ndarray] = None  # 4x4, OpenCV marker frame in the optical frame
    reprojection_error_px: float = float("nan")
    ambiguity_ratio: float = float("inf")
    side_px: float = 0.0
    view_angle_deg: float = float("nan")
    contrast: float = float("nan")
    blur_sigma_px: float = float("nan")
    decision_margin: float = float("nan")
    match_score: float = float("nan")
    problems: list[str] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return self.marker_in_camera is not None and not self.problems

    @property
    def distance_m(self) -> float:
        return float(np.linalg.norm(self.marker_in_camera[:3, 3])) if self.marker_in_camera is not None else float("nan")


def to_gray(image: np.ndarray) -> np.ndarray:
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageQualityError("no image data")
    if image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    elif image.ndim == 2:
        gray = image
    else:
        raise ImageQualityError(f"unsupported image shape {image.shape}")
    if gray.dtype != np.uint8:
        if np.issubdtype(gray.dtype, np.floating):
            gray = np.clip(gray * (255.0 if gray.max() <= 1.0 else 1.0), 0, 255)
        elif gray.dtype == np.uint16:
            gray = gray / 257.0
        gray = gray.astype(np.uint8)
    return np.ascontiguousarray(gray)


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """RGB float32 in 0..1 from uint8/uint16/float RGB, RGBA or grey images."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageQualityError("no image data")
    img = image
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ImageQualityError(f"unsupported image shape {image.shape}")
    img = img[:, :, :3]
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def marker_object_points(side_m: float) -> np.ndarray:
    h = side_m / 2.0
    return np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]], dtype=np.float64)


_DICTIONARY = None


def tag_template(marker_id: int, px_per_cell: int, margin_cells: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Ideal grey image of a tag (black border + bits, white margin) and its 4 corner pixel coords."""
    global _DICTIONARY
    if _DICTIONARY is None:
        _DICTIONARY = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_APRILTAG_36h11)
    tag = cv2.aruco.generateImageMarker(_DICTIONARY, marker_id, 8 * px_per_cell, borderBits=1)
    pad = int(round(margin_cells * px_per_cell))
    img = cv2.copyMakeBorder(tag, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    a, b = pad - 0.5, pad + 8 * px_per_cell - 0.5
    return img, np.array([[a, a], [b, a], [b, b], [a, b]], dtype=np.float64)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


_BLUR_CANDIDATES_PX = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 6.0)


def refine_corners_ecc(gray: np.ndarray, marker_id: int, corners: np.ndarray, *, iterations: int = 40
                       ) -> Optional[tuple[np.ndarray, float, float]]:
    """Refine the 4 corners by aligning the ideal tag to the image (ECC, full homography).

    Uses every pixel of the tag instead of its 4 corners, so the corners come out several times
    more precise than edge fitting. The image's blur at the tag is measured on the way (the
    Gaussian sigma, in image pixels, whose blurred template matches best) and the alignment is
    redone against the blurred template, since a sharp template against a blurred image biases
    the scale (the distance). Returns (corners, blur_sigma_px, match NCC) or None when the
    alignment does not converge or moves a corner by more than 2 px.
    """
    side = float(np.linalg.norm(corners - np.roll(corners, 1, axis=0), axis=1).mean())
    ppc = int(np.clip(round(side / 8), 3, 12))
    template, tc = tag_template(marker_id, ppc)
    template = template.astype(np.float32)
    image = gray.astype(np.float32)
    px_per_template_px = side / (8 * ppc)
    warp = cv2.getPerspectiveTransform(tc.astype(np.float32), corners.astype(np.float32)).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4)

    def align(tmpl: np.ndarray, w: np.ndarray) -> Optional[np.ndarray]:
        w = w.copy()
        try:
            cv2.findTransformECC(tmpl, image, w, cv2.MOTION_HOMOGRAPHY, criteria, None, 3)
        except cv2.error:
            return None
        return w

    warp = align(template, warp)
    if warp is None:
        return None
    patch = cv2.warpPerspective(image, warp, (template.shape[1], template.shape[0]),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    best_sigma, best_score, best_tmpl = 0.0, -2.0, template
    for sigma_px in _BLUR_CANDIDATES_PX:
        sigma_t = sigma_px / px_per_template_px
        tmpl = cv2.GaussianBlur(template, (0, 0), sigma_t) if sigma_t > 0.1 else template
        score = _ncc(tmpl, patch)
        if score > best_score:
            best_sigma, best_score, best_tmpl = sigma_px, score, tmpl
    if best_sigma > 0.6:
        rewarp = align(best_tmpl, warp)
        if rewarp is None:
            return None
        warp = rewarp
    refined = cv2.perspectiveTransform(tc.reshape(-1, 1, 2).astype(np.float32), warp.astype(np.float64)).reshape(4, 2)
    if not np.all(np.isfinite(refined)) or np.abs(refined - corners).max() > 2.0:
        return None
    return refined.astype(np.float64), best_sigma, best_score


def _edge_quality(gray: np.ndarray, corners: np.ndarray, *, with_blur: bool = True) -> tuple[float, float]:
    """(contrast in grey levels, estimated Gaussian blur sigma in px) of the tag's outer edge.

    A step of height C blurred by a Gaussian of sigma s has a peak gradient C / (sqrt(2 pi) s), so
    s is estimated from the strongest gradients across the border against the tag's contrast.
    """
    h, w = gray.shape
    centre = corners.mean(axis=0)
    x0, y0 = np.floor(corners.min(axis=0) - 4).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0) + 4).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    patch = gray[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    if patch.size < 16:
        return 0.0, float("inf")
    # the band around the outer edge: between the corners shrunk and grown by ~3 px
    mask = np.zeros(patch.shape, np.uint8)
    offs = np.array([x0, y0], np.float32)
    side = np.linalg.norm(corners - np.roll(corners, 1, axis=0), axis=1).mean()
    grow = (corners - centre) * (1 + 3.0 / max(side / 2, 1)) + centre - offs
    shrink = (corners - centre) * (1 - 3.0 / max(side / 2, 1)) + centre - offs
    cv2.fillConvexPoly(mask, np.round(grow).astype(np.int32), 1)
    cv2.fillConvexPoly(mask, np.round(shrink).astype(np.int32), 0)
    band = patch[mask > 0]
    if band.size < 8:
        return 0.0, float("inf")
    lo, hi = np.percentile(band, [5, 95])
    contrast = float(hi - lo)
    if not with_blur:  # the ECC refinement measures the blur better
        return contrast, 0.0
    gx = cv2.Sobel(patch, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(patch, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    grad = np.sqrt(gx * gx + gy * gy)[mask > 0]
    peak = float(np.percentile(grad, 97))
    if peak <= 1e-6:
        return contrast, float("inf")
    # Sobel/8 on a sampled step already spreads the edge over ~1 px: remove that in quadrature
    sigma_total = contrast / (np.sqrt(2 * np.pi) * peak)
    return contrast, float(np.sqrt(max(sigma_total ** 2 - 0.85 ** 2, 0.0)))


_APRILTAG_DETECTORS: dict[tuple[float, float], tuple[object, threading.Lock]] = {}
_APRILTAG_GUARD = threading.Lock()


def _shared_apriltag_detector(quad_decimate: float, quad_sigma: float):
    """One native pupil-apriltags detector per setting for the life of the process.

    pupil-apriltags 1.0.4's Detector.__del__ frees its tag family through a pointer that ctypes
    returned as a (truncated) C int, which segfaults when the heap lies above 4 GiB; so detectors
    are created once, never collected, and disarmed at exit (the OS reclaims the memory). A lock
    serialises calls, as the native detector is not thread-safe.
    """
    import pupil_apriltags

    with _APRILTAG_GUARD:
        key = (quad_decimate, quad_sigma)
        if key not in _APRILTAG_DETECTORS:
            det = pupil_apriltags.Detector(families="tag36h11", nthreads=1, quad_decimate=quad_decimate,
                                           quad_sigma=quad_sigma, refine_edges=1, decode_sharpening=0.25)
            _APRILTAG_DETECTORS[key] = (det, threading.Lock())
            if len(_APRILTAG_DETECTORS) == 1:
                atexit.register(_disarm_apriltag_detectors)
        return _APRILTAG_DETECTORS[key]


def _disarm_apriltag_detectors() -> None:
    for det, _lock in _APRILTAG_DETECTORS.values():
        det.tag_detector_ptr = None  # Detector.__del__ then skips the crashing destroy calls


class FiducialDetector:
    """Detect tags and estimate trusted poses. Not thread-safe (one per thread)."""

    def __init__(self, params: Optional[FiducialParams] = None) -> None:
        self.params = params or FiducialParams()
        if self.params.backend == "apriltag":
            self._apriltag, self._apriltag_lock = _shared_apriltag_detector(self.params.quad_decimate,
                                                                            self.params.quad_sigma)
        else:
            p = cv2.aruco.DetectorParameters()
            p.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
            p.cornerRefinementWinSize = 5
            p.cornerRefinementMinAccuracy = 0.01
            p.cornerRefinementMaxIterations = 50
            self._aruco = cv2.aruco.ArucoDetector(
                cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_APRILTAG_36h11), p)

    # --- detection ---------------------------------------------------------------------------
    def _detect_corners(self, gray: np.ndarray, *, full_resolution: bool = False
                        ) -> list[tuple[int, np.ndarray, float]]:
        out = []
        if self.params.backend == "apriltag":
            native, lock = ((self._apriltag, self._apriltag_lock) if not full_resolution
                            else _shared_apriltag_detector(1.0, self.params.quad_sigma))
            with lock:
                found = native.detect(gray)
            for d in found:
                if d.hamming > 0:
                    continue
                # pupil-apriltags: pixel centres at +0.5 and corner order TR, TL, BL, BR (seen from the front)
                c = np.asarray(d.corners, dtype=np.float64)[[1, 0, 3, 2]] - 0.5
                out.append((int(d.tag_id), c, float(d.decision_margin)))
        else:
            corners, ids, _ = self._aruco.detectMarkers(gray)
            if ids is not None:
                for c, i in zip(corners, ids.ravel()):
                    out.append((int(i), np.asarray(c, dtype=np.float64).reshape(4, 2), float("nan")))
        return out

    def check_image(self, gray: np.ndarray) -> None:
        # the brightest 0.2 %: a small white tag border on a dark scene still counts as lit
        p99 = float(np.percentile(gray[::2, ::2], 99.8))
        if p99 < self.params.min_image_p99:
            raise ImageQualityError(f"image too dark: 99.8th percentile grey level {p99:.0f} < "
                                    f"{self.params.min_image_p99:.0f}", p99=p99)

    def detect(self, image: np.ndarray, intrinsics: CameraIntrinsics, *, full_resolution: bool = False
               ) -> list[FiducialDetection]:
        """Every decoded tag with its pose (if one could be computed) and its trust problems.

        ``full_resolution`` searches quads without decimation (slower; finds small, oblique tags)."""
        gray = to_gray(image)
        if gray.shape != (intrinsics.height, intrinsics.width):
            raise ImageQualityError(f"image {gray.shape[1]}x{gray.shape[0]} does not match the camera info "
                                    f"{intrinsics.width}x{intrinsics.height}")
        self.check_image(gray)
        return [self._estimate(gray, intrinsics, mid, c, margin)
                for mid, c, margin in self._detect_corners(gray, full_resolution=full_resolution)]

    def _estimate(self, gray: np.ndarray, k: CameraIntrinsics, marker_id: int, corners: np.ndarray,
                  margin: float) -> FiducialDetection:
        p = self.params
        det = FiducialDetection(marker_id, corners, decision_margin=margin)
        sides = np.linalg.norm(corners - np.roll(corners, 1, axis=0), axis=1)
        det.side_px = float(sides.min())
        det.contrast, det.blur_sigma_px = _edge_quality(gray, corners, with_blur=not p.refine_ecc)
        h, w = gray.shape
        if det.side_px < p.min_marker_side_px:
            det.problems.append(f"tag too small: {det.side_px:.1f} px < {p.min_marker_side_px:.0f} px")
        if (corners.min() < p.border_margin_px or corners[:, 0].max() > w - 1 - p.border_margin_px
                or corners[:, 1].max() > h - 1 - p.border_margin_px):
            det.problems.append("tag touches the image border")
        if det.contrast < p.min_marker_contrast:
            det.problems.append(f"too dark / low contrast at the tag: {det.contrast:.0f} < {p.min_marker_contrast:.0f} grey levels")
        if det.blur_sigma_px > p.max_blur_sigma_px:
            det.problems.append(f"image blurred at the tag: edge sigma {det.blur_sigma_px:.1f} px > {p.max_blur_sigma_px} px")
        if np.isfinite(margin) and margin < p.min_decision_margin:
            det.problems.append(f"weak decoding: decision margin {margin:.0f} < {p.min_decision_margin:.0f}")

        if p.refine_ecc and not det.problems:
            refined = refine_corners_ecc(gray, marker_id, corners)
            if refined is None:
                det.problems.append("tag does not match its ideal image (ECC alignment failed)")
            else:
                corners, det.blur_sigma_px, det.match_score = refined
                det.corners_px = corners
                # small tags suffer more from a given blur: limit it in pixels and in cells
                limit = min(p.max_blur_sigma_px, p.max_blur_cell_fraction * det.side_px / 8)
                if det.blur_sigma_px > limit:
                    det.problems.append(f"image blurred at the tag: edge sigma {det.blur_sigma_px:.1f} px "
                                        f"> {limit:.2f} px")
                if det.match_score < p.min_match_score:
                    det.problems.append(f"tag matches its ideal image poorly: NCC {det.match_score:.2f} "
                                        f"< {p.min_match_score}")
        obj = marker_object_points(p.marker_side_m)
        img_pts = corners.reshape(-1, 1, 2)
        kmat, dist = k.camera_matrix, k.dist_coeffs
        try:
            n, rvecs, tvecs, errs = cv2.solvePnPGeneric(obj, img_pts, kmat, dist, flags=cv2.SOLVEPNP_IPPE_SQUARE)
        except cv2.error as exc:
            det.problems.append(f"pose estimation failed: {exc}")
            return det
        if n < 1:
            det.problems.append("pose estimation gave no solution")
            return det
        errs = np.asarray(errs, dtype=float).ravel()
        order = np.argsort(errs)
        rvec, tvec = cv2.solvePnPRefineLM(obj, img_pts, kmat, dist, rvecs[order[0]].copy(), tvecs[order[0]].copy())
        proj, _ = cv2.projectPoints(obj, rvec, tvec, kmat, dist)
        err = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - corners) ** 2, axis=1))))
        r, _ = cv2.Rodrigues(rvec)
        pose = make_transform(r, tvec.ravel())
        det.reprojection_error_px = err
        if n > 1:
            r2, _ = cv2.Rodrigues(rvecs[order[1]])
            det.ambiguity_ratio = float(errs[order[1]] / max(errs[order[0]], 1e-9))
            apart = rotation_angle_deg(r, r2)
            if det.ambiguity_ratio < p.min_ambiguity_ratio and apart > p.ambiguity_angle_deg:
                det.problems.append(f"ambiguous pose: two solutions {apart:.0f} deg apart with reprojection "
                                    f"errors in ratio {det.ambiguity_ratio:.2f} < {p.min_ambiguity_ratio}")
        if pose[2, 3] <= 0:
            det.problems.append("pose behind the camera")
        los = pose[:3, 3] / np.linalg.norm(pose[:3, 3])
        det.view_angle_deg = float(np.degrees(np.arccos(np.clip(-los @ pose[:3, 2], -1.0, 1.0))))
        if det.view_angle_deg > p.max_view_angle_deg:
            det.problems.append(f"viewed too obliquely: {det.view_angle_deg:.0f} deg > {p.max_view_angle_deg:.0f} deg")
        if err > p.max_reprojection_error_px:
            det.problems.append(f"reprojection error {err:.2f} px > {p.max_reprojection_error_px} px")
        det.marker_in_camera = pose
        return det

    # --- the one call most users need ----------------------------------------------------------
    def locate_marker(self, image: np.ndarray, intrinsics: CameraIntrinsics, marker_id: int) -> FiducialDetection:
        """The trusted pose of one tag id, or MarkerNotFound / UntrustworthyEstimate / ImageQualityError.

        A tag missed by the decimated quad search is looked for once more at full resolution."""
        dets = self.detect(image, intrinsics)
        if (not any(d.marker_id == marker_id for d in dets) and self.params.backend == "apriltag"
                and self.params.quad_decimate > 1.0):
            dets = self.detect(image, intrinsics, full_resolution=True)
        return self.select(dets, marker_id, image)

    @staticmethod
    def select(detections: list[FiducialDetection], marker_id: int, image: Optional[np.ndarray] = None
               ) -> FiducialDetection:
        """The one trusted detection of ``marker_id`` among ``detections`` (from ``detect``), else raise."""
        mine = [d for d in detections if d.marker_id == marker_id]
        if not mine:
            seen = sorted({d.marker_id for d in detections})
            blur = _global_blur_hint(to_gray(image)) if image is not None and not seen else ""
            why = f" (saw ids {seen})" if seen else (f" (image looks blurred: {blur})" if blur else "")
            raise MarkerNotFound(f"marker {marker_id} not found in the image{why}", marker_id=marker_id, seen=seen)
        if len(mine) > 1:
            raise UntrustworthyEstimate(f"marker {marker_id} seen {len(mine)} times: cannot tell which is the station",
                                        marker_id=marker_id)
        det = mine[0]
        if not det.trusted:
            raise UntrustworthyEstimate(f"marker {marker_id} pose untrustworthy: " + "; ".join(det.problems),
                                        marker_id=marker_id, problems=det.problems)
        return det


def _global_blur_hint(gray: np.ndarray) -> str:
    """A short note when the whole image has almost no sharp detail (variance of the Laplacian)."""
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    v = float(lap.var())
    return f"Laplacian variance {v:.1f}" if v < 20.0 else ""


@dataclass
class StationLocation:
    station: str
    marker_id: int
    station_in_robot: np.ndarray
    marker_in_camera: np.ndarray
    reprojection_error_px: float
    distance_m: float
    view_angle_deg: float
    detection: FiducialDetection


def locate_station(detector: FiducialDetector, image: np.ndarray, intrinsics: CameraIntrinsics, *,
                   station: str, marker_id: int, camera_in_robot: np.ndarray,
                   marker_in_station: Optional[np.ndarray] = None) -> StationLocation:
    """The station frame in the robot frame: robot<-camera (kinematics) x camera<-marker x marker<-station."""
    det = detector.locate_marker(image, intrinsics, marker_id)
    m_in_s = np.eye(4) if marker_in_station is None else marker_in_station
    station_in_robot = camera_in_robot @ det.marker_in_camera @ invert(m_in_s)
    return StationLocation(station, marker_id, station_in_robot, det.marker_in_camera, det.reprojection_error_px,
                           det.distance_m, det.view_angle_deg, det)
