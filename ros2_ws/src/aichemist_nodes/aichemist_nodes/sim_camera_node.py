"""Twin camera publisher: renders MuJoCo cameras and publishes them as a real camera driver would.

Per camera ``<name>``: ``/<name>/image_raw`` (sensor_msgs/Image rgb8), ``/<name>/camera_info``,
``/<name>/depth`` (32FC1, metres, when ``publish_depth``), ``/<name>/points`` (PointCloud2, when
``publish_points``) and ``/<name>/pose``
(geometry_msgs/PoseStamped of the optical frame in ``robot_frame``: what the robot's kinematics
would give for a wrist camera), at ``rate_hz``, with randomised lighting, noise and blur
(``effects``). The scene is the built-in perception demo scene (sim.perception_scenes.demo_scene),
the lab of sim/world (``scene: lab``: the robot's ``wrist_camera`` and a ``<station>_camera`` per
station; set ``robot_body: base_footprint``) or an MJCF file (``mjcf_path``); ``robot_body``
names the body whose frame is the robot frame (empty = the world frame).
"""

from __future__ import annotations

import os

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
    publish_points: bool = Field(False, description="also /<camera>/points (PointCloud2 from the depth image)")
    seed: int = 0
    effects: CameraEffects = CameraEffects()


def _node():
    import mujoco
    from rclpy.node import Node

    from aichemist_nodes.camera_publishing import CameraStreams

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
            self.streams = CameraStreams(self, model, data, p.cameras, width=p.width, height=p.height,
                                         effects=p.effects, seed=p.seed, robot_body=p.robot_body,
                                         robot_frame=p.robot_frame, publish_depth=p.publish_depth,
                                         publish_points=p.publish_points).start(p.rate_hz)
            self.get_logger().info(f"publishing {p.cameras} at {p.rate_hz} Hz")

        def destroy_node(self) -> None:
            self.streams.stop()
            super().destroy_node()

    return SimCameraNode()


def main(args=None) -> int:
    return spin_node(_node, args, threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
