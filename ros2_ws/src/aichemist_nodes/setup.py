"""ament_python package: builds with colcon on a full ROS 2 install, and with pip (editable) in
the project's venv. Executables live in lib/aichemist_nodes for `ros2 run`/launch_ros."""

import pathlib

from setuptools import setup

package_name = "aichemist_nodes"

# One executable per node module (<name>_node.py, and the lifecycle manager); each has main().
# The embedded launcher and the ROS launch files both resolve nodes by these names.
_here = pathlib.Path(__file__).resolve().parent / package_name
NODES = sorted(p.stem for p in _here.glob("*.py") if p.stem.endswith("_node") or p.stem == "lifecycle_manager")

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="aichemist developers",
    maintainer_email="dev@aichemist.local",
    description="Thin rclpy nodes of the AI-Chemist control stack",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {package_name}.{n}:main" for n in NODES],
    },
)
