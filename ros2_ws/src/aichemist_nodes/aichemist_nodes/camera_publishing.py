"""Publish MuJoCo cameras as a camera driver would: the ROS half of sim.cameras.

``CameraStreams(node, model, data, cameras, ...)`` creates, per camera ``<name>``, the publishers
``/<name>/image_raw`` (sensor_msgs/Image rgb8), ``/<name>/camera_info``, ``/<name>/pose``
(geometry_msgs/PoseStamped of the optical frame in ``robot_frame``: the kinematics' answer),
and optionally ``/<name>/depth`` (32FC1, metres) and ``/<name>/points`` (sensor_msgs/PointCloud2,
xyz float32 in the optical frame). ``start(rate_hz)`` renders and publishes from one thread of its
own (a GL context belongs to the thread that made it); ``lock`` is held while rendering, so a
process that steps the same MjData in another thread (a robot twin) can share it.

With ``software_trigger=True`` each camera also serves ``/<name>/trigger`` (std_srvs/Trigger), as a
software-triggered industrial camera does: one frame of every camera is rendered and published
per request, and the answer comes after the frame is published. ``start(0)`` then renders only on
request, so a robot twin spends no CPU on frames nobody looks at and the frame shows the robot as
it is when the request arrives (not up to one period earlier).
Any node hosting a MuJoCo model (sim_camera_node, a robot twin) can publish its cameras with it.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import nullcontext
from typing import Any, Optional

import numpy as np

from aichemist.errors import ConfigurationError
from perception.geometry import matrix_to_quat


FRAME_STAMPED = "frame stamped"  # a trigger's answer: "frame stamped <sec>.<nanosec>"
_FRAME_STAMPED_RE = re.compile(FRAME_STAMPED + r" (\d+)\.(\d{9})")


def triggered_stamp_ns(answer: str) -> Optional[int]:
    """The stamp (ns) of the frame a trigger's answer names; None when it names none (a camera
    driver of another make)."""
    named = _FRAME_STAMPED_RE.search(answer)
    return int(named.group(1)) * 1_000_000_000 + int(named.group(2)) if named else None


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
                 points_stride: int = 4, lock: Optional[threading.Lock] = None,
                 software_trigger: bool = False, trigger_timeout_s: float = 5.0) -> None:
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
        self._wake = threading.Event()
        self._requests_lock = threading.Lock()
        self._requests: list[_FrameRequest] = []
        self.trigger_timeout_s = trigger_timeout_s
        self.trigger_services: list[Any] = []
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        if software_trigger:
            from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
            from std_srvs.srv import Trigger

            # its own group: a request waits for the camera thread, never for the node's other work,
            # and a stuck camera holds at most one of the node's executor threads (not its e-stop)
            group = MutuallyExclusiveCallbackGroup()
            for name in cameras:
                self.trigger_services.append(node.create_service(Trigger, f"/{name}/trigger", self._on_trigger,
                                                                 callback_group=group))

    def start(self, rate_hz: float, ready_timeout_s: float = 30.0) -> "CameraStreams":
        """Render and publish at ``rate_hz`` (0 = only on a software trigger). Returns once the
        cameras can render; ConfigurationError when they cannot (no GL context, say)."""
        self._thread = threading.Thread(target=self._loop, args=(rate_hz,), name="camera_streams", daemon=True)
        self._thread.start()
        if not self._ready.wait(ready_timeout_s) or self._start_error is not None:
            self.stop()
            raise ConfigurationError(f"cameras {self.cameras} cannot render: "
                                     f"{self._start_error!r}" if self._start_error is not None
                                     else f"cameras {self.cameras} not ready within {ready_timeout_s:g} s")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._fail_pending("camera stopped")  # answered before their service goes away
        for srv in self.trigger_services:
            self.node.destroy_service(srv)
        self.trigger_services = []

    def _fail_pending(self, why: str) -> None:
        with self._requests_lock:
            pending, self._requests = self._requests, []
        for request in pending:
            request.finish(False, why)

    def trigger(self, timeout_s: Optional[float] = None) -> tuple[bool, str]:
        """Render and publish one frame of every camera now; (published, message naming the
        frames' stamp, see ``triggered_stamp_ns``)."""
        if self._thread is None or not self._thread.is_alive():
            return False, "camera is not running"
        timeout = self.trigger_timeout_s if timeout_s is None else timeout_s
        request = _FrameRequest()
        with self._requests_lock:
            self._requests.append(request)
        self._wake.set()
        if not request.done.wait(timeout):
            with self._requests_lock:
                if request in self._requests:
                    self._requests.remove(request)
            return False, f"no frame rendered within {timeout:g} s"
        return request.ok, request.message

    def _on_trigger(self, _req: Any, res: Any) -> Any:
        res.success, res.message = self.trigger()
        return res

    def _loop(self, rate_hz: float) -> None:
        from sim.cameras import MujocoCamera

        cams: list = []
        try:
            # the GL contexts belong to this thread: made here, used here, closed here
            for i, name in enumerate(self.cameras):
                cams.append(MujocoCamera(self.model, self.data, name, width=self.width, height=self.height,
                                         effects=self.effects, seed=self.seed + i))
        except Exception as exc:  # noqa: BLE001 - start() reports it
            self._start_error = exc
            self._ready.set()
            for cam in cams:
                cam.close()
            return
        self._ready.set()
        try:
            period = 1.0 / rate_hz if rate_hz > 0 else None
            next_t = time.monotonic()
            while not self._stop.is_set():
                with self._requests_lock:
                    requests, self._requests = self._requests, []
                    self._wake.clear()
                if self._stop.is_set():  # stop() may have set the wake-up just before the clear
                    for request in requests:
                        request.finish(False, "camera stopped")
                    break
                due = period is not None and time.monotonic() >= next_t
                if requests or due:
                    try:
                        stamp = self.publish_once(cams)
                        ok, message = True, f"{FRAME_STAMPED} {stamp.sec}.{stamp.nanosec:09d}"
                    except Exception as exc:  # a failed frame is logged; the stream goes on
                        self.node.get_logger().error(f"camera frame failed: {exc!r}")
                        ok, message = False, f"rendering failed: {exc!r}"
                    for request in requests:
                        request.finish(ok, message)
                if due:
                    next_t += period
                    next_t = max(next_t, time.monotonic() - period)  # no burst after a stall
                self._wake.wait(None if period is None else max(0.0, next_t - time.monotonic()))
        except BaseException as exc:
            self.node.get_logger().error(f"camera thread ended: {exc!r}")
            raise
        finally:
            self._fail_pending("camera stopped")
            for cam in cams:
                cam.close()

    def publish_once(self, cams: list) -> Any:
        """Render every camera and publish; returns the frames' stamp."""
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
        return stamp


class _FrameRequest:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok, self.message = False, ""

    def finish(self, ok: bool, message: str) -> None:
        self.ok, self.message = ok, message
        self.done.set()
