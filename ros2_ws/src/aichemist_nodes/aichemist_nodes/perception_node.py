"""Perception node: services /perception/locate_station and /perception/inspect_rack.

Thin adapter over perception/: it subscribes to each configured camera's sensor_msgs Image and
CameraInfo (so the same node runs on a real camera driver's topics or on the twin's
sim_camera_node), and to the camera's pose in the robot frame (geometry_msgs/PoseStamped on
``pose_topic``, published by whoever knows the kinematics) or takes a static pose from its
parameters. Each request waits for an image newer than the request (the robot may just have
moved; a camera with a ``trigger_service`` is asked for that image, as a software-triggered camera
is), pairs it with the camera pose of the same stamp, runs the pure core and answers a typed
result: code 0 with the pose, or code 31 (PERCEPTION_FAILED) with MarkerNotFound / UntrustworthyEstimate / ImageQualityError /
CameraUnavailable and a message saying why. Every located image's tags are published on
/perception/detections (FiducialDetections) and every inspection on /perception/rack_inspection.
"""

from __future__ import annotations

import pathlib
import threading
import time
from typing import Any, Optional

import numpy as np
from pydantic import Field, field_validator

from aichemist.errors import ConfigurationError, ValidationError
from aichemist.params import Params, launch_substituted
from perception.fiducials import FiducialParams
from perception.inspection import InspectionParams
from perception.inspection import TopViewParams
from perception.rack import GridRackGeometry, RackGeometry

from aichemist_nodes.camera_publishing import triggered_stamp_ns
from aichemist_nodes.node_base import call_service, declare_params, load_params, set_error, spin_node

POSES_KEPT = 32  # camera poses kept by stamp, to pair with frames that arrive later


class CameraSource(Params):
    image_topic: str
    camera_info_topic: str
    pose_topic: str = Field("", description="PoseStamped of the optical frame in the robot frame; empty = static")
    trigger_service: str = Field("", description="std_srvs/Trigger that makes the camera take one frame; "
                                                 "empty = a free-running camera (wait for its next frame)")
    reliable: bool = Field(False, description="subscribe to the images reliably (a triggered frame must not be "
                                              "dropped; needs a reliable publisher); false = sensor-data QoS")
    pose_xyz: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    pose_rpy: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])


class StationFiducial(Params):
    marker_id: int = Field(ge=0, le=586)
    marker_in_station_xyz: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    marker_in_station_rpy: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])


def _default_cameras() -> dict[str, dict]:
    return {name: {"image_topic": f"/{name}/image_raw", "camera_info_topic": f"/{name}/camera_info",
                   "pose_topic": f"/{name}/pose"} for name in ("wrist", "rack_station_camera", "tray_camera")}


class PerceptionNodeParams(Params):
    default_camera: str = "wrist"
    image_timeout_s: float = Field(3.0, gt=0.0, le=60.0, description="default wait for a fresh image")
    failed_frames_dir: str = Field("", description="save each frame a request failed on (PNG + reason) here, "
                                                   "for diagnosis; empty = keep none")
    failed_frames_keep: int = Field(50, ge=1, le=10000, description="newest failed frames kept in failed_frames_dir")
    # defaults as plain data: they become JSON ROS parameters, validated into the models on load
    cameras: dict[str, CameraSource] = Field(default_factory=_default_cameras, validate_default=True)
    stations: dict[str, StationFiducial] = Field(default_factory=lambda: {"demo": {"marker_id": 3}},
                                                 validate_default=True)
    racks: dict[str, RackGeometry] = Field(default_factory=lambda: {"rack": RackGeometry().model_dump()},
                                           validate_default=True)
    grid_racks: dict[str, GridRackGeometry] = Field(default_factory=dict,
                                                     description="trays inspected from above, by station name")
    lab_layout: str = Field("", description="lab description (sim/world/lab.yaml schema) to take stations, tags "
                                            "and trays from; 'default' = the packaged one; empty = none")
    top_view: TopViewParams = TopViewParams()
    fiducials: FiducialParams = FiducialParams()
    inspection: InspectionParams = InspectionParams()

    @field_validator("failed_frames_dir")
    @classmethod
    def _substituted(cls, value: str) -> str:
        return launch_substituted(value)


def config_from_layout(path: str) -> tuple[dict[str, StationFiducial], dict[str, GridRackGeometry]]:
    """Stations (tag id and pose in the station frame) and trays from the lab description."""
    from manipulation.layout import load_layout

    layout = load_layout(None if path == "default" else path)
    stations, trays = {}, {}
    for st in layout.stations:
        f = st.fiducial
        stations[st.name] = StationFiducial(marker_id=f.id, marker_in_station_xyz=list(f.xyz_in_station_m),
                                            marker_in_station_rpy=list(f.rpy_in_station_rad))
        if st.rack is not None:
            r = st.rack
            trays[st.name] = GridRackGeometry(
                name=st.name, marker_id=f.id, marker_side_m=f.size_m, marker_xyz_m=f.xyz_in_station_m,
                marker_rpy_rad=f.rpy_in_station_rad, rows=r.rows, cols=r.cols, pitch_m=r.pitch_m,
                first_slot_xyz_m=r.first_slot_xyz_m, vial_radius_m=layout.vial.diameter_m / 2,
                vial_height_m=layout.vial.height_m)
    return stations, trays


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact, for matching stamps)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def image_to_array(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 RGB uint8 (or HxW mono8)."""
    from perception.errors import ImageQualityError

    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise ImageQualityError(f"unsupported image encoding '{msg.encoding}'")
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if msg.height * msg.step > buf.size or msg.width * channels > msg.step:
        raise ImageQualityError(f"image data of {buf.size} bytes does not fit {msg.width}x{msg.height} {msg.encoding}")
    rows = buf[: msg.height * msg.step].reshape(msg.height, msg.step)[:, : msg.width * channels]
    img = rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows.reshape(msg.height, msg.width)
    if msg.encoding in ("bgr8", "bgra8"):
        img = img[:, :, [2, 1, 0]]
    elif msg.encoding == "rgba8":
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def _pose_msg(transform: np.ndarray, frame_id: str, stamp: Any) -> Any:
    from geometry_msgs.msg import PoseStamped

    from perception.geometry import matrix_to_quat

    ps = PoseStamped()
    ps.header.frame_id, ps.header.stamp = frame_id, stamp
    ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in transform[:3, 3])
    q = matrix_to_quat(transform[:3, :3])
    ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z, ps.pose.orientation.w = (float(v) for v in q)
    return ps


def _make_node():
    from geometry_msgs.msg import PoseStamped
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from aichemist_interfaces.msg import FiducialDetection, FiducialDetections, RackInspection, VialSlotState
    from aichemist_interfaces.srv import InspectRack, LocateStation
    from perception.camera import CameraIntrinsics
    from perception.errors import CameraUnavailable
    from perception.fiducials import FiducialDetector
    from perception.geometry import invert, make_transform, quat_to_matrix, rpy_to_matrix
    from perception.inspection import RackInspector, TopViewRackInspector

    class CameraState:
        def __init__(self, name: str, source: CameraSource) -> None:
            self.name, self.source = name, source
            self.cond = threading.Condition()
            self.image: Optional[Any] = None
            self.image_rx = 0.0
            self.info: Optional[Any] = None
            # recent poses by stamp (ns): the pose of the optical frame when each frame was taken
            self.poses: dict[int, np.ndarray] = {}
            self.static_pose: Optional[np.ndarray] = None
            self.pose_frame = ""
            self.trigger: Optional[Any] = None
            if not source.pose_topic:
                self.static_pose = make_transform(rpy_to_matrix(*source.pose_rpy), source.pose_xyz)

        def pose_at(self, taken_ns: int) -> Optional[np.ndarray]:
            """The pose stamped with the frame (as the twin's camera publishes them), else the one
            stamped nearest to it once one at or after it has arrived (a pose source of its own)."""
            if self.static_pose is not None:
                return self.static_pose
            if taken_ns in self.poses:
                return self.poses[taken_ns]
            if not self.poses or max(self.poses) < taken_ns:
                return None
            return self.poses[min(self.poses, key=lambda t: abs(t - taken_ns))]

    class PerceptionNode(Node):
        def __init__(self) -> None:
            super().__init__("perception_node")
            declare_params(self, PerceptionNodeParams)
            self.p = p = load_params(self, PerceptionNodeParams)
            if p.default_camera not in p.cameras:
                raise ConfigurationError(f"default_camera '{p.default_camera}' is not in cameras {sorted(p.cameras)}")
            self.cams: dict[str, CameraState] = {}
            sensors = ReentrantCallbackGroup()
            for name, source in p.cameras.items():
                cam = self.cams[name] = CameraState(name, source)
                # a best-effort frame of ~1 MB arrives in hundreds of fragments: one lost, the frame is lost
                image_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE) if source.reliable \
                    else qos_profile_sensor_data
                self.create_subscription(Image, source.image_topic, lambda m, c=cam: self._on_image(c, m),
                                         image_qos, callback_group=sensors)
                self.create_subscription(CameraInfo, source.camera_info_topic, lambda m, c=cam: self._on_info(c, m),
                                         image_qos, callback_group=sensors)
                if source.pose_topic:
                    self.create_subscription(PoseStamped, source.pose_topic, lambda m, c=cam: self._on_pose(c, m),
                                             10, callback_group=sensors)
                if source.trigger_service:
                    cam.trigger = self.create_client(Trigger, source.trigger_service, callback_group=sensors)
            # the detectors keep state: one service at a time
            services = MutuallyExclusiveCallbackGroup()
            self.detector = FiducialDetector(p.fiducials)
            self.stations = dict(p.stations)
            grid_racks = dict(p.grid_racks)
            if p.lab_layout:
                lab_stations, lab_trays = config_from_layout(p.lab_layout)
                self.stations.update(lab_stations)
                grid_racks.update(lab_trays)
            self.inspectors: dict[str, Any] = {name: RackInspector(g, p.inspection) for name, g in p.racks.items()}
            self.inspectors.update({name: TopViewRackInspector(g, p.top_view) for name, g in grid_racks.items()})
            self.det_pub = self.create_publisher(FiducialDetections, "/perception/detections", 10)
            self.rack_pub = self.create_publisher(RackInspection, "/perception/rack_inspection", 10)
            self.create_service(LocateStation, "/perception/locate_station", self._locate, callback_group=services)
            self.create_service(InspectRack, "/perception/inspect_rack", self._inspect, callback_group=services)
            self.get_logger().info(f"cameras {sorted(p.cameras)}, stations {sorted(self.stations)}, "
                                   f"racks {sorted(self.inspectors)}")

        # --- sensor callbacks --------------------------------------------------------------
        def _on_image(self, cam: CameraState, msg: Any) -> None:
            with cam.cond:
                cam.image, cam.image_rx = msg, time.monotonic()
                cam.cond.notify_all()

        def _on_info(self, cam: CameraState, msg: Any) -> None:
            with cam.cond:
                cam.info = msg
                cam.cond.notify_all()

        def _on_pose(self, cam: CameraState, msg: Any) -> None:
            o, q = msg.pose.position, msg.pose.orientation
            stamp = stamp_ns(msg.header.stamp)
            with cam.cond:
                if cam.poses and stamp < max(cam.poses):  # the clock went back (a twin restarted)
                    cam.poses.clear()
                cam.poses[stamp] = make_transform(quat_to_matrix([q.x, q.y, q.z, q.w]), [o.x, o.y, o.z])
                while len(cam.poses) > POSES_KEPT:
                    del cam.poses[min(cam.poses)]
                cam.pose_frame = msg.header.frame_id
                cam.cond.notify_all()

        # --- helpers -----------------------------------------------------------------------
        def _fresh_frame(self, camera: str, timeout_s: float, *, with_pose: bool = True
                         ) -> tuple[CameraState, Any, np.ndarray, CameraIntrinsics, Optional[np.ndarray]]:
            """(camera, image message, image, intrinsics, camera pose at the image's stamp or None)."""
            name = camera or self.p.default_camera
            cam = self.cams.get(name)
            if cam is None:
                raise CameraUnavailable(f"camera '{name}' is not configured (cameras: {sorted(self.cams)})", camera=name)
            timeout = timeout_s if timeout_s > 0 else self.p.image_timeout_s
            deadline = time.monotonic() + timeout
            asked = time.monotonic()
            # taken after the request on the lab's clock, not only received after it: a frame
            # rendered just before (the arm still on its way to the look pose) arrives late at 60x
            asked_ns = self.get_clock().now().nanoseconds
            triggered_ns = self._trigger(cam, deadline) if cam.trigger is not None else None

            def fresh() -> bool:
                if cam.image is None or cam.image_rx <= asked:
                    return False
                taken = stamp_ns(cam.image.header.stamp)
                if triggered_ns is not None:  # the very frame the trigger took (the camera's clock)
                    return taken == triggered_ns
                return taken >= asked_ns

            with cam.cond:
                if not cam.cond.wait_for(fresh, timeout=max(0.0, deadline - time.monotonic())):
                    raise CameraUnavailable(f"no image from camera '{name}' on {cam.source.image_topic} "
                                            f"within {timeout:.1f} s", camera=name)
                msg = cam.image
                taken = stamp_ns(msg.header.stamp)
                # the pose and the camera info come on topics of their own: wait for the pose taken
                # with this frame, and for an info (the first frame of a triggered camera brings it)
                cam.cond.wait_for(lambda: cam.info is not None
                                  and (not with_pose or cam.pose_at(taken) is not None),
                                  timeout=max(0.0, deadline - time.monotonic()))
                pose = cam.pose_at(taken) if with_pose else None
            if cam.info is None:
                raise CameraUnavailable(f"no camera info from '{name}' on {cam.source.camera_info_topic}", camera=name)
            i = cam.info
            k = CameraIntrinsics.from_camera_info_fields(width=i.width, height=i.height, k=list(i.k), d=list(i.d),
                                                         frame_id=i.header.frame_id or msg.header.frame_id,
                                                         distortion_model=i.distortion_model)
            return cam, msg, image_to_array(msg), k, pose

        def _trigger(self, cam: CameraState, deadline: float) -> Optional[int]:
            """Ask the camera for one frame; its stamp (ns) when the answer names it ("frame
            stamped <sec>.<nanosec>", as the twin's camera answers), else None."""
            left = deadline - time.monotonic()
            if not cam.trigger.wait_for_service(timeout_sec=max(0.0, left)):
                raise CameraUnavailable(f"camera '{cam.name}': trigger service {cam.source.trigger_service} "
                                        f"is not available", camera=cam.name)
            res = call_service(cam.trigger, Trigger.Request(), max(0.0, deadline - time.monotonic()))
            if res is None:
                raise CameraUnavailable(f"camera '{cam.name}' did not answer its trigger "
                                        f"{cam.source.trigger_service} in time", camera=cam.name)
            if not res.success:
                raise CameraUnavailable(f"camera '{cam.name}' refused the trigger: {res.message}", camera=cam.name)
            return triggered_stamp_ns(res.message)

        def _save_failed_frame(self, what: str, image: Optional[np.ndarray], error: str) -> None:
            """Keep the frame a request failed on, with why, for whoever diagnoses the lab."""
            if not self.p.failed_frames_dir or image is None:
                return
            try:
                import cv2

                folder = pathlib.Path(self.p.failed_frames_dir)
                folder.mkdir(parents=True, exist_ok=True)
                stem = folder / f"{time.strftime('%Y%m%dT%H%M%S')}_{time.monotonic_ns() % 1_000_000:06d}_{what}"
                bgr = image[:, :, ::-1] if image.ndim == 3 else image
                cv2.imwrite(str(stem.with_suffix(".png")), bgr)
                stem.with_suffix(".txt").write_text(error + "\n")
                frames = sorted(folder.glob("*.png"))
                for old in frames[: max(0, len(frames) - self.p.failed_frames_keep)]:
                    old.unlink(missing_ok=True)
                    old.with_suffix(".txt").unlink(missing_ok=True)
            except Exception as exc:  # diagnosis must never break the answer
                self.get_logger().warning(f"could not save the failed frame: {exc!r}")

        def _publish_detections(self, cam: CameraState, msg: Any, dets: list) -> None:
            out = FiducialDetections()
            out.header, out.camera = msg.header, cam.name
            for d in dets:
                fd = FiducialDetection()
                fd.marker_id = d.marker_id
                if d.marker_in_camera is not None:
                    fd.pose = _pose_msg(d.marker_in_camera, msg.header.frame_id, msg.header.stamp)
                fd.reprojection_error_px = float(d.reprojection_error_px)
                fd.distance_m = float(d.distance_m)
                fd.view_angle_deg = float(d.view_angle_deg)
                fd.trusted, fd.problems = bool(d.trusted), "; ".join(d.problems)
                out.detections.append(fd)
            self.det_pub.publish(out)

        # --- services ----------------------------------------------------------------------
        def _locate(self, req: Any, res: Any) -> Any:
            image = None
            try:
                station = self.stations.get(req.station)
                if station is None:
                    raise ValidationError(f"unknown station '{req.station}' (known: {sorted(self.stations)})")
                cam, msg, image, k, pose = self._fresh_frame(req.camera, req.timeout_s)
                if pose is None:
                    raise CameraUnavailable(f"no pose for camera '{cam.name}' on {cam.source.pose_topic} "
                                            f"taken with its frame", camera=cam.name)
                camera_in_robot = pose.copy()
                dets = self.detector.detect(image, k)
                if not any(d.marker_id == station.marker_id for d in dets):
                    dets = self.detector.detect(image, k, full_resolution=True)  # small or oblique tags
                self._publish_detections(cam, msg, dets)
                det = self.detector.select(dets, station.marker_id, image)
                marker_in_station = make_transform(rpy_to_matrix(*station.marker_in_station_rpy),
                                                   station.marker_in_station_xyz)
                station_in_robot = camera_in_robot @ det.marker_in_camera @ invert(marker_in_station)
                res.station_pose = _pose_msg(station_in_robot, cam.pose_frame or "base_link", msg.header.stamp)
                res.marker_pose = _pose_msg(det.marker_in_camera, msg.header.frame_id, msg.header.stamp)
                res.marker_id = det.marker_id
                res.reprojection_error_px = float(det.reprojection_error_px)
                res.distance_m = float(det.distance_m)
                res.code, res.error_type = 0, ""
                res.message = (f"station {req.station} at {det.distance_m:.3f} m, reprojection "
                               f"{det.reprojection_error_px:.2f} px")
            except Exception as exc:  # every failure becomes a typed result, never a pose
                set_error(res, exc)
                self.get_logger().warning(f"locate_station {req.station}: {res.error_type}: {res.message}")
                self._save_failed_frame(f"locate_{req.station}", image, f"{res.error_type}: {res.message}")
            return res

        def _inspect(self, req: Any, res: Any) -> Any:
            image = None
            try:
                inspector = self.inspectors.get(req.rack)
                if inspector is None:
                    raise ValidationError(f"unknown rack '{req.rack}' (known: {sorted(self.inspectors)})")
                cam, msg, image, k, _pose = self._fresh_frame(req.camera, req.timeout_s, with_pose=False)
                result = inspector.inspect(image, k)
                out = RackInspection()
                out.header, out.rack, out.camera = msg.header, req.rack, cam.name
                out.rack_pose = _pose_msg(result.rack_in_camera, msg.header.frame_id, msg.header.stamp)
                for s in result.slots:
                    out.slots.append(VialSlotState(name=s.name, index=s.index, occupied=s.occupied,
                                                   cap_present=s.cap_present,
                                                   # -1: not measurable from this view (from above)
                                                   liquid_level_fraction=(float(s.liquid_level_fraction)
                                                                          if np.isfinite(s.liquid_level_fraction)
                                                                          else -1.0),
                                                   confidence=float(s.confidence)))
                self.rack_pub.publish(out)
                res.inspection = out
                res.code, res.error_type = 0, ""
                res.message = f"rack {req.rack}: {sum(s.occupied for s in result.slots)} of {len(result.slots)} slots occupied"
            except Exception as exc:
                set_error(res, exc)
                self.get_logger().warning(f"inspect_rack {req.rack}: {res.error_type}: {res.message}")
                self._save_failed_frame(f"inspect_{req.rack}", image, f"{res.error_type}: {res.message}")
            return res

    return PerceptionNode()


def main(args=None) -> int:
    return spin_node(_make_node, args, threads=4)


if __name__ == "__main__":
    raise SystemExit(main())
