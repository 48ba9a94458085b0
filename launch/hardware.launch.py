"""ros2 launch for the lab on hardware (full ROS 2 installs): `ros2 launch launch/hardware.launch.py`.
Reads launch/hardware.yaml, the same manifest `aichemist up` reads."""
import pathlib

from aichemist.ros_launch import manifest_launch_description


def generate_launch_description():
    return manifest_launch_description(pathlib.Path(__file__).with_name("hardware.yaml"))
