"""ament_python package: builds with colcon on a full ROS 2 install, and with pip (editable) in
the project's venv. Executables live in lib/aichemist_nodes for `ros2 run`/launch_ros."""

from setuptools import setup

package_name = "aichemist_nodes"

# One executable per node; each module has main(). The embedded launcher and the ROS launch
# files both resolve nodes by these names.
NODES = [
    "twin_node",
    "flow_reactor_node",
    "hplc_node",
    "planner_node",
    "bridge_node",
    "manipulator_node",
    "perception_node",
    "lifecycle_manager",
    "recorder_node",
    "noop_device_node",
]

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
