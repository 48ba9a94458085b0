"""Twin camera publisher: renders MuJoCo cameras and publishes them as a real camera driver would.

Per camera ``<name>``: ``/<name>/image_raw`` (sensor_msgs/Image rgb8), ``/<name>/camera_info``,
``/<name>/depth`` (32FC1, metres, when ``publish_depth``) and ``/<name>/pose``
(geometry_msgs/PoseStamped of the optical frame in ``robot_frame``: what the robot's kinematics
would give for a wrist camera), at ``rate_hz``, with randomised lighting, noise and blur
(``effects``). The scene is the built-in perception demo scene (sim.perception_scenes.demo_scene),
the lab of sim/world (``scene: lab``: the robot's ``wrist_camera`` and a ``<station>_camera`` per
station; set ``robot_body: base_footprint``) or an MJCF file (``mjcf_path``); ``robot_body``
names the body whose frame is the robot frame (empty = the world frame).
"""

from __future__ import annotations

import os
import threading
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Literal  # noqa: E402

from pydantic import Field  # noqa: E402

from aichemist.params import Params  # noqa: E402
from sim.cameras import CameraEffects  # noqa: E402

from aichemist_nodes.node_base import declare_params, load_params, spin_node  # noqa: E402


class SimCameraParams(Params):
    cameras: list[str] = Field(default_factory=lambda: ["wrist", "rack_station_camera", "tray_camera"])
    rate_hz: float = Field(5.0, gt=0.0, le=60.0)
    width: int = Field(640, ge=16, le=1920)
    height: int = Field(480, ge=16, le=1080)
    scene: Literal["demo", "lab"] = Field("demo", description="demo = perception demo scene; lab = sim/world's lab "
                                                             "with the robot (cameras <station>_camera, wrist_camera)")
    mjcf_path: str = Field("", description="MJCF file (overrides scene)")
    robot_body: str = Field("", description="body whose frame is the robot frame; empty = world")
    robot_frame: str = "base_link"
    publish_depth: bool = False
    seed: int = 0
    effects: CameraEffects = CameraEffects()


def _node():
    import mujoco
    import numpy as np
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    from perception.geometry import matrix_to_quat
    from sim.cameras import MujocoCamera

    class SimCameraNode(Node):
        def __init__(self) -> None:
            super().__init__("sim_camera_node")
            declare_params(self, SimCameraParams)
            self.p = p = load_params(self, SimCameraParams)
            if p.mjcf_path:
                model = mujoco.MjModel.from_xml_path(p.mjcf_path)
                data = mujoco.MjData(model)
                mujoco.mj_forward(model, data)
            elif p.scene == "lab":
                from sim.world.mjcf import load_model

                model = load_model()
                data = mujoco.MjData(model)
                mujoco.mj_forward(model, data)
            else:
                from sim.perception_scenes import demo_scene

                scene = demo_scene()
                model, data = scene.model, scene.data
            self.model, self.data = model, data
            # validate camera names now (fail fast); the renderers are made on the executor's thread,
            # which must own their GL context
            for name in p.cameras:
                if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name) < 0:
                    from aichemist.errors import ConfigurationError

                    raise ConfigurationError(f"camera '{name}' is not in the scene")
            self.pubs = {}
            for name in p.cameras:
                self.pubs[name] = (self.create_publisher(Image, f"/{name}/image_raw", 2),
                                   self.create_publisher(CameraInfo, f"/{name}/camera_info", 2),
                                   self.create_publisher(Image, f"/{name}/depth", 2) if p.publish_depth else None,
                                   self.create_publisher(PoseStamped, f"/{name}/pose", 2))
            # one render thread owns the GL context (EGL contexts are bound to a thread)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._render_loop, name="sim_camera_render", daemon=True)
            self._thread.start()
            self.get_logger().info(f"publishing {p.cameras} at {p.rate_hz} Hz")

        def _render_loop(self) -> None:
            p = self.p
            cams = [MujocoCamera(self.model, self.data, name, width=p.width, height=p.height, effects=p.effects,
                                 seed=p.seed + i) for i, name in enumerate(p.cameras)]
            try:
                period = 1.0 / p.rate_hz
                next_t = time.monotonic()
                while not self._stop.is_set():
                    self._publish(cams)
                    next_t += period
                    self._stop.wait(max(0.0, next_t - time.monotonic()))
            finally:
                for cam in cams:
                    cam.close()

        def _publish(self, cams: list) -> None:
            stamp = self.get_clock().now().to_msg()
            for cam in cams:
                img_pub, info_pub, depth_pub, pose_pub = self.pubs[cam.name]
                rgb = cam.render_rgb()
                k = cam.intrinsics
                info = CameraInfo()
                info.header.stamp, info.header.frame_id = stamp, k.frame_id
                f = k.to_camera_info_fields()
                info.width, info.height, info.distortion_model = f["width"], f["height"], f["distortion_model"]
                info.d, info.k, info.r, info.p = f["d"], f["k"], f["r"], f["p"]
                msg = Image()
                msg.header = info.header
                msg.height, msg.width, msg.encoding, msg.step = rgb.shape[0], rgb.shape[1], "rgb8", rgb.shape[1] * 3
                msg.data = rgb.tobytes()
                pose = cam.pose_in_body(self.p.robot_body) if self.p.robot_body else cam.pose_world()
                ps = PoseStamped()
                ps.header.stamp, ps.header.frame_id = stamp, self.p.robot_frame
                ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in pose[:3, 3])
                q = matrix_to_quat(pose[:3, :3])
                ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z, ps.pose.orientation.w = (
                    float(v) for v in q)
                pose_pub.publish(ps)
                info_pub.publish(info)
                img_pub.publish(msg)
                if depth_pub is not None:
                    depth = cam.render_depth()
                    dm = Image()
                    dm.header = info.header
                    dm.height, dm.width, dm.encoding, dm.step = depth.shape[0], depth.shape[1], "32FC1", depth.shape[1] * 4
                    dm.data = depth.astype(np.float32).tobytes()
                    depth_pub.publish(dm)

        def destroy_node(self) -> None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            super().destroy_node()

    return SimCameraNode()


def main(args=None) -> int:
    return spin_node(_node, args, threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
