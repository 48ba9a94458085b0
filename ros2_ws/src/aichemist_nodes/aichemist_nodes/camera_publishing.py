"""Publish MuJoCo cameras as a camera driver would: the ROS half of sim.cameras.

``CameraStreams(node, model, data, cameras, ...)`` creates, per camera ``<name>``, the publishers
``/<name>/image_raw`` (sensor_msgs/Image rgb8), ``/<name>/camera_info``, ``/<name>/pose``
(geometry_msgs/PoseStamped of the optical frame in ``robot_frame``: the kinematics' answer),
and optionally ``/<name>/depth`` (32FC1, metres) and ``/<name>/points`` (sensor_msgs/PointCloud2,
xyz float32 in the optical frame). ``start(rate_hz)`` renders and publishes from one thread of its
own (a GL context belongs to the thread that made it); ``lock`` is held while rendering, so a
process that steps the same MjData in another thread (a robot twin) can share it.
Any node hosting a MuJoCo model (sim_camera_node, a robot twin) can publish its cameras with it.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Any, Optional

import numpy as np

from aichemist.errors import ConfigurationError
from perception.geometry import matrix_to_quat


def image_msg(array: np.ndarray, encoding: str, header: Any) -> Any:
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.step = int(array.strides[0])
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def points_msg(points: np.ndarray, header: Any) -> Any:
    """Nx3 float points -> sensor_msgs/PointCloud2 (x, y, z float32, unorganised)."""
    from sensor_msgs.msg import PointCloud2, PointField

    pts = np.ascontiguousarray(points, dtype=np.float32)
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, int(len(pts))
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate("xyz")]
    msg.is_bigendian, msg.point_step, msg.row_step, msg.is_dense = False, 12, 12 * int(len(pts)), True
    msg.data = pts.tobytes()
    return msg


def points_from_msg(msg: Any) -> np.ndarray:
    """sensor_msgs/PointCloud2 with float32 x, y, z at offsets 0, 4, 8 -> Nx3 float32."""
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(-1, msg.point_step)
    return raw[:, :12].copy().view(np.float32).reshape(-1, 3)


class CameraStreams:
    def __init__(self, node: Any, model: Any, data: Any, cameras: list[str], *, width: int = 640,
                 height: int = 480, effects: Any = None, seed: int = 0, robot_body: str = "",
                 robot_frame: str = "base_link", publish_depth: bool = False, publish_points: bool = False,
                 points_stride: int = 4, lock: Optional[threading.Lock] = None) -> None:
        import mujoco
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        for name in cameras:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name) < 0:
                raise ConfigurationError(f"camera '{name}' is not in the MuJoCo model")
        if robot_body and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, robot_body) < 0:
            raise ConfigurationError(f"robot_body '{robot_body}' is not in the MuJoCo model")
        self.node, self.model, self.data, self.cameras = node, model, data, list(cameras)
        self.width, self.height, self.effects, self.seed = width, height, effects, seed
        self.robot_body, self.robot_frame = robot_body, robot_frame
        self.publish_depth, self.publish_points, self.points_stride = publish_depth, publish_points, points_stride
        self.lock = lock
        self.pubs: dict[str, dict[str, Any]] = {}
        for name in cameras:
            pubs = {"image": node.create_publisher(Image, f"/{name}/image_raw", 2),
                    "info": node.create_publisher(CameraInfo, f"/{name}/camera_info", 2),
                    "pose": node.create_publisher(PoseStamped, f"/{name}/pose", 2)}
            if publish_depth:
                pubs["depth"] = node.create_publisher(Image, f"/{name}/depth", 2)
            if publish_points:
                pubs["points"] = node.create_publisher(PointCloud2, f"/{name}/points", 2)
            self.pubs[name] = pubs
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.frames_published = 0

    def start(self, rate_hz: float) -> "CameraStreams":
        self._thread = threading.Thread(target=self._loop, args=(rate_hz,), name="camera_streams", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _loop(self, rate_hz: float) -> None:
        from sim.cameras import MujocoCamera

        cams = [MujocoCamera(self.model, self.data, name, width=self.width, height=self.height,
                             effects=self.effects, seed=self.seed + i) for i, name in enumerate(self.cameras)]
        try:
            period = 1.0 / rate_hz
            next_t = time.monotonic()
            while not self._stop.is_set():
                try:
                    self.publish_once(cams)
                except Exception as exc:  # a failed frame is logged; the stream goes on
                    self.node.get_logger().error(f"camera frame failed: {exc!r}")
                next_t += period
                self._stop.wait(max(0.0, next_t - time.monotonic()))
        finally:
            for cam in cams:
                cam.close()

    def publish_once(self, cams: list) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo

        from perception.pointcloud import PointCloudParams, depth_to_points

        stamp = self.node.get_clock().now().to_msg()
        for cam in cams:
            pubs = self.pubs[cam.name]
            with self.lock or nullcontext():
                rgb = cam.render_rgb()
                depth = cam.render_depth() if (self.publish_depth or self.publish_points) else None
                pose = cam.pose_in_body(self.robot_body) if self.robot_body else cam.pose_world()
            k = cam.intrinsics
            info = CameraInfo()
            info.header.stamp, info.header.frame_id = stamp, k.frame_id
            f = k.to_camera_info_fields()
            info.width, info.height, info.distortion_model = f["width"], f["height"], f["distortion_model"]
            info.d, info.k, info.r, info.p = f["d"], f["k"], f["r"], f["p"]
            ps = PoseStamped()
            ps.header.stamp, ps.header.frame_id = stamp, self.robot_frame
            ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in pose[:3, 3])
            q = matrix_to_quat(pose[:3, :3])
            ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z, ps.pose.orientation.w = (
                float(v) for v in q)
            pubs["pose"].publish(ps)
            pubs["info"].publish(info)
            pubs["image"].publish(image_msg(rgb, "rgb8", info.header))
            if self.publish_depth:
                pubs["depth"].publish(image_msg(depth.astype(np.float32), "32FC1", info.header))
            if self.publish_points:
                pts = depth_to_points(depth, k, PointCloudParams(stride=self.points_stride))
                pubs["points"].publish(points_msg(pts, info.header))
        self.frames_published += 1
