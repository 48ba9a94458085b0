"""ros2 launch for labs with Gazebo (full ROS 2 installs with ros_gz):

    ros2 launch launch/gazebo.launch.py                                   # world + bridge + hardware graph
    ros2 launch launch/gazebo.launch.py manifest:=launch/twin.yaml gz_args:="-s -r"   # headless, twin devices

Starts, in this order:
1. Gazebo (``gz sim``) with the SDF world generated at launch time from the one lab description
   (sim/world/sdf.py via aichemist.gazebo.write_world) into ``<run_dir>/gazebo/lab.sdf``;
2. the robot, spawned from ``robot_description_file`` (a Gazebo-ready SDF or URDF of the lab's
   robot) as model ``aichemist_mobile_manipulator`` by ros_gz_sim's ``create`` (skipped when empty);
3. ros_gz_bridge's ``parameter_bridge`` with launch/gazebo/bridge.yaml, rendered into the run
   folder (/clock dropped when the manifest's graph publishes its own clock, i.e. has twin_node);
4. the project's nodes from the node manifest ``manifest`` (default launch/hardware.yaml), exactly
   as ``ros2 launch launch/hardware.launch.py`` would start them (aichemist.ros_launch).

Everything is imported inside generate_launch_description, so this file parses without ROS.
"""
import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from aichemist.gazebo import (BRIDGE_CONFIG, ROBOT_MODEL_NAME, WORLD_NAME, graph_has_clock,
                                  load_bridge_config, render_bridge_config, write_world)
    from aichemist.launcher import load_manifest
    from aichemist.ros_launch import manifest_launch_description

    def _setup(context, *_):
        arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
        run_dir = pathlib.Path(arg("run_dir"))
        manifest_path = pathlib.Path(arg("manifest"))
        if not manifest_path.is_absolute():
            manifest_path = (pathlib.Path.cwd() / manifest_path).resolve()
        manifest, _params_dir = load_manifest(manifest_path)
        world = write_world(run_dir, arg("layout_path") or None)
        drop = ["/clock"] if graph_has_clock([n.executable or "" for n in manifest.nodes]) else []
        bridge_file = render_bridge_config(load_bridge_config(arg("bridge_config")),
                                           run_dir / "gazebo" / "bridge.yaml", drop_topics=drop)
        actions = [
            ExecuteProcess(cmd=[*arg("gz_command").split(), *arg("gz_args").split(), str(world)],
                           name="gazebo", output="screen"),
            Node(package="ros_gz_bridge", executable="parameter_bridge", name="gz_bridge",
                 parameters=[{"config_file": str(bridge_file)}], output="screen"),
        ]
        robot = arg("robot_description_file")
        if robot:
            actions.append(Node(package="ros_gz_sim", executable="create", name="spawn_robot", output="screen",
                                arguments=["-world", WORLD_NAME, "-file", robot, "-name", ROBOT_MODEL_NAME,
                                           "-x", arg("robot_x"), "-y", arg("robot_y"), "-z", "0.0"]))
        actions += list(manifest_launch_description(manifest_path).entities)
        return actions

    uid = os.getuid()
    return LaunchDescription([
        DeclareLaunchArgument("manifest", default_value=str(HERE / "hardware.yaml"),
                              description="node manifest of the project's nodes (launch/*.yaml)"),
        DeclareLaunchArgument("run_dir", default_value=f"/tmp/aichemist-{uid}/gazebo",
                              description="where the generated world and the rendered bridge file go"),
        DeclareLaunchArgument("layout_path", default_value="",
                              description="lab description YAML; empty = sim/world/lab.yaml"),
        DeclareLaunchArgument("bridge_config", default_value=str(BRIDGE_CONFIG)),
        DeclareLaunchArgument("gz_command", default_value="gz sim", description="'ign gazebo' on Fortress"),
        DeclareLaunchArgument("gz_args", default_value="-r", description="e.g. '-s -r' for a headless server"),
        DeclareLaunchArgument("robot_description_file", default_value="",
                              description="Gazebo-ready SDF/URDF of the robot; empty = do not spawn one"),
        DeclareLaunchArgument("robot_x", default_value="0.7"),
        DeclareLaunchArgument("robot_y", default_value="3.0"),
        OpaqueFunction(function=_setup),
    ])
