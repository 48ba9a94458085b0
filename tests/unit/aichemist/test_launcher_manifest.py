"""Manifest validation, argument substitution and the node command line (no processes)."""

from __future__ import annotations

import pathlib
import sys
import types

import pytest

from aichemist.errors import ConfigurationError
from aichemist.launcher import load_manifest, node_command, render_params, resolve_args

REPO = pathlib.Path(__file__).resolve().parents[3]


def _write(tmp_path: pathlib.Path, manifest: str, params: dict[str, str] | None = None) -> pathlib.Path:
    (tmp_path / "params").mkdir()
    for name, text in (params or {}).items():
        (tmp_path / "params" / name).write_text(text)
    path = tmp_path / "m.yaml"
    path.write_text(manifest)
    return path


def test_every_manifest_in_launch_is_valid():
    manifests = sorted((REPO / "launch").glob("*.yaml"))
    assert manifests, "launch/ has no node manifests"
    for path in manifests:
        manifest, _ = load_manifest(path)
        assert manifest.nodes


def test_params_are_rendered_with_launch_arguments(tmp_path):
    path = _write(tmp_path, """
name: demo
params_dir: params
args: {run_dir: /tmp/x, port: /dev/ttyUSB0, link: "${port}-link"}
nodes:
  - {name: pump, executable: flow_reactor_node, params: pump.yaml, remaps: {/a: /b}, use_sim_time: true}
""", {"pump.yaml": "pump:\n  ros__parameters:\n    port: ${port}\n    link: ${link}\n"})
    manifest, params_dir = load_manifest(path)
    args = resolve_args(manifest, {"port": "/tmp/pty0"})
    assert args["link"] == "/tmp/pty0-link"
    rendered = render_params(manifest, params_dir, args, tmp_path / "out")
    text = rendered["pump"].read_text()
    assert "port: /tmp/pty0" in text and "link: /tmp/pty0-link" in text
    cmd = node_command(manifest.nodes[0], rendered["pump"], python="py")
    assert cmd[:3] == ["py", "-m", "aichemist_nodes.flow_reactor_node"]
    assert cmd[cmd.index("--params-file") + 1] == str(rendered["pump"])
    assert "/a:=/b" in cmd and "use_sim_time:=true" in cmd and "__node:=pump" in cmd


@pytest.mark.parametrize("manifest, match", [
    ("name: d\nnodes:\n  - {name: a, executable: x}\n  - {name: a, executable: y}\n", "repeated: a"),
    ("name: d\nnodes:\n  - {name: a, executable: x, params: missing.yaml}\n", "missing.yaml does not exist"),
    ("name: d\nnodes:\n  - {name: a, executable: x, colour: red}\n", "colour"),
    ("name: d\nnodes:\n  - {name: 9a, executable: x}\n", "nodes.0.name"),
])
def test_bad_manifests_are_refused_with_the_reason(tmp_path, manifest, match):
    with pytest.raises(ConfigurationError, match=match):
        load_manifest(_write(tmp_path, manifest))


def test_unknown_argument_and_unknown_substitution_are_refused(tmp_path):
    path = _write(tmp_path, "name: d\nparams_dir: params\nargs: {a: '1'}\nnodes:\n  - {name: n, executable: x, params: p.yaml}\n",
                  {"p.yaml": "n:\n  ros__parameters:\n    v: ${nope}\n"})
    manifest, params_dir = load_manifest(path)
    with pytest.raises(ConfigurationError, match="unknown launch argument"):
        resolve_args(manifest, {"b": "2"})
    with pytest.raises(ConfigurationError, match=r"\$\{nope\}"):
        render_params(manifest, params_dir, resolve_args(manifest), tmp_path / "out")


def test_ros_launch_file_builds_one_node_per_manifest_entry(monkeypatch, tmp_path):
    """launch/*.launch.py turn the same manifest into launch_ros Nodes. launch/launch_ros are not
    installable from PyPI, so record what the launch file asks of them."""
    created: list[dict] = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class Node(Recorder):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            created.append(kwargs)

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda entities: entities
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = Recorder
    actions.OpaqueFunction = Recorder
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = Node
    for name, mod in {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
                      "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, mod)

    import runpy
    ns = runpy.run_path(str(REPO / "launch" / "bench.launch.py"))
    entities = ns["generate_launch_description"]()
    declared = [e for e in entities if e.args and e.args[0] == "run_dir"]
    assert declared, "run_dir is declared as a launch argument"
    opaque = entities[-1]
    nodes = opaque.kwargs["function"]({"run_dir": str(tmp_path)})
    manifest, _ = load_manifest(REPO / "launch" / "bench.yaml")
    assert [n.kwargs["name"] for n in nodes] == [n.name for n in manifest.nodes]
    assert created[0]["executable"] == "noop_device_node" and created[0]["package"] == "aichemist_nodes"


def test_plain_process_gets_substituted_args_and_no_ros_args(tmp_path):
    path = _write(tmp_path, """
name: demo
args: {port: "8080", db: "sqlite:///x.db"}
nodes:
  - {name: api, ros: false, module: cloud_bridge, args: [serve, --port, "${port}", --database-url, "${db}"]}
""")
    manifest, _ = load_manifest(path)
    cmd = node_command(manifest.nodes[0], None, python="py", args=resolve_args(manifest, {"port": "9001"}))
    assert cmd == ["py", "-m", "cloud_bridge", "serve", "--port", "9001", "--database-url", "sqlite:///x.db"]


def test_process_without_module_and_node_without_executable_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="needs a module"):
        load_manifest(_write(tmp_path, "name: d\nnodes:\n  - {name: api, ros: false}\n"))
