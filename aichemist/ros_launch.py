"""ROS 2 launch descriptions built from a node manifest (for full ROS 2 installs with
launch/launch_ros). The launch files in launch/ call ``manifest_launch_description``, so that
`ros2 launch` and `aichemist up` start the same graph from the same manifest."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from aichemist.launcher import load_manifest, node_command, render_params, resolve_args


def manifest_launch_description(manifest_path: str | os.PathLike[str]) -> Any:
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    manifest, params_dir = load_manifest(manifest_path)

    def _nodes(context: Any, *_: Any) -> list[Any]:
        values = {k: LaunchConfiguration(k).perform(context) for k in manifest.args}
        args = resolve_args(manifest, values)
        run_dir = pathlib.Path(args.get("run_dir") or f"/tmp/aichemist-{os.getuid()}/{manifest.name}")
        rendered = render_params(manifest, params_dir, args, run_dir / "params")
        nodes: list[Any] = []
        for spec in manifest.nodes:
            if not spec.ros:
                from launch.actions import ExecuteProcess

                nodes.append(ExecuteProcess(cmd=node_command(spec, None, args=args), name=spec.name,
                                            additional_env={**manifest.env, **spec.env}, output="screen",
                                            respawn=spec.respawn, respawn_delay=spec.respawn_delay_s))
                continue
            parameters: list[Any] = [str(rendered[spec.name])] if spec.name in rendered else []
            if spec.use_sim_time:
                parameters.append({"use_sim_time": True})
            nodes.append(Node(package=spec.package, executable=spec.executable, name=spec.name,
                              parameters=parameters, remappings=list(spec.remaps.items()),
                              respawn=spec.respawn, respawn_delay=spec.respawn_delay_s,
                              additional_env={**manifest.env, **spec.env, "AICHEMIST_RUN_DIR": str(run_dir)},
                              output="screen", emulate_tty=True))
        return nodes

    declared = [DeclareLaunchArgument(k, default_value=v) for k, v in manifest.args.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
