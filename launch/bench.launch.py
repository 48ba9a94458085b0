"""ros2 launch for the bench manifest (full ROS 2 installs): `ros2 launch launch/bench.launch.py`."""
import pathlib

from aichemist.ros_launch import manifest_launch_description


def generate_launch_description():
    return manifest_launch_description(pathlib.Path(__file__).with_name("bench.yaml"))
