"""Offscreen RGB and depth cameras for the MuJoCo twin, with the intrinsics of a CameraInfo.

A ``MujocoCamera`` renders a named MJCF camera headless (``MUJOCO_GL=egl`` or ``osmesa``) and
reports its intrinsics as a ``perception.camera.CameraIntrinsics`` (the fields of
sensor_msgs/CameraInfo) and its pose as the OpenCV optical frame (x right, y down, z forward),
so the perception core receives exactly what a real camera driver would publish.

``CameraEffects`` randomises what a real camera sees so the pipeline is not tuned to perfect
renders: light intensity, position and ambient level per frame, sensor gain, Gaussian read noise,
defocus blur, and depth noise growing with the square of the distance plus dropped pixels.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from pydantic import Field

from aichemist.errors import ConfigurationError, DeviceNotFoundError
from aichemist.params import Params
from perception.camera import CameraIntrinsics

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (MUJOCO_GL must be set before the import picks a backend)

# MuJoCo cameras look along -z with y up; the optical frame looks along +z with y down.
MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


class CameraEffects(Params):
    """Per-frame randomisation of the rendered image (all off = a perfect render)."""

    light_scale_min: float = Field(0.6, ge=0.0, le=3.0, description="min factor on each light's diffuse colour")
    light_scale_max: float = Field(1.3, ge=0.0, le=3.0, description="max factor on each light's diffuse colour")
    light_jitter_m: float = Field(0.3, ge=0.0, le=5.0, description="uniform jitter of each light's position, m")
    ambient_min: float = Field(0.05, ge=0.0, le=1.0)
    ambient_max: float = Field(0.3, ge=0.0, le=1.0)
    gain_min: float = Field(0.85, ge=0.0, le=4.0, description="sensor gain (exposure) factor range")
    gain_max: float = Field(1.15, ge=0.0, le=4.0)
    noise_sigma: float = Field(2.0, ge=0.0, le=50.0, description="Gaussian read noise, 8-bit levels")
    blur_sigma_max_px: float = Field(0.6, ge=0.0, le=20.0, description="defocus blur sigma drawn in [0, max]")
    depth_noise_coeff: float = Field(0.0015, ge=0.0, le=0.1, description="depth sigma = coeff * z^2, m")
    depth_dropout: float = Field(0.002, ge=0.0, le=0.5, description="fraction of depth pixels reported as 0")
    auto_exposure: bool = Field(True, description="lower the exposure while > 0.5 % of pixels saturate, as a "
                                                  "real camera's auto exposure does (white plates stay below 255)")

    @classmethod
    def none(cls) -> "CameraEffects":
        return cls(light_scale_min=1.0, light_scale_max=1.0, light_jitter_m=0.0, ambient_min=0.1,
                   ambient_max=0.1, gain_min=1.0, gain_max=1.0, noise_sigma=0.0, blur_sigma_max_px=0.0,
                   depth_noise_coeff=0.0, depth_dropout=0.0, auto_exposure=False)


def apply_image_effects(rgb: np.ndarray, rng: np.random.Generator, *, gain: float = 1.0,
                        noise_sigma: float = 0.0, blur_sigma_px: float = 0.0) -> np.ndarray:
    """Gain, defocus blur and read noise on an 8-bit RGB image (returns a new uint8 image)."""
    import cv2

    img = rgb.astype(np.float32) * gain
    if blur_sigma_px > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma_px)
    if noise_sigma > 0:
        img += rng.normal(0.0, noise_sigma, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


class MujocoCamera:
    """Render one named camera of a MuJoCo model (RGB uint8 HxWx3, depth float32 metres)."""

    def __init__(self, model: "mujoco.MjModel", data: "mujoco.MjData", camera: str, *, width: int = 640,
                 height: int = 480, effects: Optional[CameraEffects] = None, seed: Optional[int] = None,
                 frame_id: str = "") -> None:
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise DeviceNotFoundError(f"camera '{camera}' is not in the MuJoCo model (cameras: {names})",
                                      camera=camera)
        if model.cam_sensorsize[cam_id][0] > 0:
            raise ConfigurationError(f"camera '{camera}': sensorsize/focal intrinsics are not supported; use fovy")
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ConfigurationError(
                f"camera '{camera}': {width}x{height} exceeds the model's offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight} (<visual><global offwidth=...>)")
        self.model, self.data, self.name, self.cam_id = model, data, camera, cam_id
        self.width, self.height = width, height
        self.effects = effects or CameraEffects.none()
        self.rng = np.random.default_rng(seed)
        self.intrinsics = CameraIntrinsics.from_fovy(width, height, float(model.cam_fovy[cam_id]),
                                                     frame_id=frame_id or f"{camera}_optical_frame")
        self._renderer = mujoco.Renderer(model, height, width)
        self._depth_renderer: Optional[mujoco.Renderer] = None
        self._nominal_diffuse = model.light_diffuse.copy()
        self._nominal_pos = model.light_pos.copy()
        self._nominal_headlight = (model.vis.headlight.ambient.copy(), model.vis.headlight.diffuse.copy())
        self.last_light_scale = 1.0
        self._ambient = float(model.vis.headlight.ambient[0])
        self.exposure = 1.0  # auto exposure state, kept from frame to frame like a real camera's

    # --- pose ------------------------------------------------------------------------------
    def pose_world(self) -> np.ndarray:
        """4x4 pose of the optical frame in the world (needs mj_forward/mj_step to have run)."""
        t = np.eye(4)
        t[:3, :3] = self.data.cam_xmat[self.cam_id].reshape(3, 3) @ MUJOCO_TO_OPTICAL
        t[:3, 3] = self.data.cam_xpos[self.cam_id]
        return t

    def pose_in_body(self, body: str) -> np.ndarray:
        """4x4 pose of the optical frame in a body's frame (e.g. the robot base)."""
        bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body)
        if bid < 0:
            raise ConfigurationError(f"body '{body}' is not in the MuJoCo model")
        tb = np.eye(4)
        tb[:3, :3] = self.data.xmat[bid].reshape(3, 3)
        tb[:3, 3] = self.data.xpos[bid]
        return np.linalg.inv(tb) @ self.pose_world()

    # --- rendering -------------------------------------------------------------------------
    def _randomise_lighting(self) -> None:
        e, m = self.effects, self.model
        scale = self.rng.uniform(e.light_scale_min, e.light_scale_max)
        self.last_light_scale = float(scale)
        self._ambient = self.rng.uniform(e.ambient_min, e.ambient_max)
        if e.light_jitter_m > 0 and m.nlight:
            m.light_pos[:] = self._nominal_pos + self.rng.uniform(-e.light_jitter_m, e.light_jitter_m,
                                                                  self._nominal_pos.shape)
        self._apply_exposure()

    def _apply_exposure(self) -> None:
        m, x = self.model, self.exposure
        m.light_diffuse[:] = np.clip(self._nominal_diffuse * self.last_light_scale * x, 0.0, 1.0)
        m.vis.headlight.ambient[:] = self._ambient * x
        m.vis.headlight.diffuse[:] = self._nominal_headlight[1] * x

    def render_rgb(self, *, randomise: bool = True) -> np.ndarray:
        if randomise:
            self._randomise_lighting()
        self._renderer.update_scene(self.data, camera=self.cam_id)
        rgb = self._renderer.render()
        if not randomise:
            return rgb.copy()
        e = self.effects
        gain = self.rng.uniform(e.gain_min, e.gain_max)
        if e.auto_exposure:
            # settle within the frame (a real camera takes a few frames; the twin has no need to);
            # the sensor gain counts: a white plate must stay below 255 after it
            for _ in range(6):
                brightest = rgb[::2, ::2].max(axis=2).astype(np.float32) * gain
                if np.count_nonzero(brightest >= 254) / brightest.size <= 0.005:
                    break
                self.exposure *= 0.8
                self._apply_exposure()
                self._renderer.update_scene(self.data, camera=self.cam_id)
                rgb = self._renderer.render()
            if np.percentile(rgb[::4, ::4], 99) * gain < 170 and self.exposure < 1.0:
                self.exposure = min(1.0, self.exposure * 1.1)
        return apply_image_effects(rgb, self.rng, gain=gain, noise_sigma=e.noise_sigma,
                                   blur_sigma_px=self.rng.uniform(0.0, e.blur_sigma_max_px))

    def render_depth(self, *, randomise: bool = True) -> np.ndarray:
        """Depth along the optical axis in metres (0 = no return), float32 HxW."""
        if self._depth_renderer is None:
            self._depth_renderer = mujoco.Renderer(self.model, self.height, self.width)
            self._depth_renderer.enable_depth_rendering()
        self._depth_renderer.update_scene(self.data, camera=self.cam_id)
        depth = self._depth_renderer.render().astype(np.float32)
        far = self.model.vis.map.zfar * self.model.stat.extent
        depth[depth >= 0.999 * far] = 0.0
        if randomise:
            e = self.effects
            if e.depth_noise_coeff > 0:
                depth += (self.rng.normal(0.0, 1.0, depth.shape) * e.depth_noise_coeff * depth ** 2).astype(np.float32)
            if e.depth_dropout > 0:
                depth[self.rng.random(depth.shape) < e.depth_dropout] = 0.0
        return depth

    def close(self) -> None:
        for r in (self._renderer, self._depth_renderer):
            if r is not None:
                r.close()
        self._renderer = None  # type: ignore[assignment]
        self._depth_renderer = None

    def __enter__(self) -> "MujocoCamera":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
