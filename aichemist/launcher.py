"""The node manifest and the embedded launcher.

A manifest (launch/*.yaml) is the one description of a node graph: which nodes, their params
files, remaps, respawn, and launch arguments substituted into the params files. Two readers:
``aichemist up`` (this module: every node its own process with ``--ros-args --params-file``,
output prefixed with the node's name, respawn where asked, clean shutdown on Ctrl-C/SIGTERM) and
the ROS 2 launch files in launch/ (for full ROS installs), which call ``load_manifest`` and
``render_params`` from here so both start the same graph.
"""

from __future__ import annotations

import collections
import os
import pathlib
import re
import signal
import string
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional, TextIO

import yaml
from pydantic import Field

from aichemist.errors import ConfigurationError
from aichemist.params import Params, validate

_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"


#: Fast DDS defaults for every node the launcher starts (a dead node leaves the graph in 8 s, not
#: 20 s); a FASTDDS_DEFAULT_PROFILES_FILE in the environment wins
LAB_DDS_PROFILE = pathlib.Path(__file__).resolve().parents[1] / "config" / "dds" / "fastdds_lab.xml"

class NodeSpec(Params):
    """One process of the graph: a ROS node (``executable`` of ``package``), or, with
    ``ros: false``, a plain Python process (``module`` run with ``args``), such as the bridge's
    HTTP API. ``args`` may use ${launch arguments}."""

    name: str = Field(pattern=_NAME, description="ROS node name / process name (unique in the manifest)")
    package: str = Field(default="aichemist_nodes")
    executable: Optional[str] = Field(default=None, pattern=_NAME,
                                      description="console script of the package (module of the same name)")
    ros: bool = Field(default=True, description="a ROS node (gets --ros-args)")
    module: Optional[str] = Field(default=None, description="python -m MODULE (plain processes)")
    args: list[str] = Field(default_factory=list, description="command-line arguments (plain processes)")
    params: Optional[str] = Field(default=None, description="params file, relative to params_dir")
    remaps: dict[str, str] = Field(default_factory=dict)
    respawn: bool = False
    respawn_delay_s: float = Field(default=1.0, ge=0, le=60)
    max_respawns: int = Field(default=5, ge=0, le=1000)
    lifecycle: bool = Field(default=False, description="a lifecycle node (brought up by lifecycle_manager)")
    use_sim_time: bool = False
    env: dict[str, str] = Field(default_factory=dict)


class Manifest(Params):
    name: str = Field(pattern=_NAME)
    description: str = ""
    params_dir: str = Field(default=".", description="folder of the params files, relative to the manifest")
    args: dict[str, str] = Field(default_factory=dict, description="launch arguments and defaults")
    env: dict[str, str] = Field(default_factory=dict)
    nodes: list[NodeSpec]


def load_manifest(path: str | os.PathLike[str]) -> tuple[Manifest, pathlib.Path]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigurationError(f"manifest {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"manifest {path} is not valid YAML: {exc}") from None
    manifest = validate(Manifest, data, what=f"manifest {path}", error=ConfigurationError)
    for node in manifest.nodes:
        if node.ros and not node.executable:
            raise ConfigurationError(f"manifest {path}: node '{node.name}' needs an executable")
        if not node.ros and not node.module:
            raise ConfigurationError(f"manifest {path}: process '{node.name}' (ros: false) needs a module")
    names = [n.name for n in manifest.nodes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigurationError(f"manifest {path}: node names must be unique, repeated: {', '.join(dupes)}")
    params_dir = (path.parent / manifest.params_dir).resolve()
    for node in manifest.nodes:
        if node.params and not (params_dir / node.params).is_file():
            raise ConfigurationError(f"manifest {path}: node '{node.name}': params file "
                                     f"{params_dir / node.params} does not exist")
    return manifest, params_dir


def resolve_args(manifest: Manifest, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Launch arguments: the manifest's defaults (which may use ${ENV} and ${other_arg}), then
    overrides."""
    unknown = set(overrides or {}) - set(manifest.args)
    if unknown:
        raise ConfigurationError(f"unknown launch argument(s) {sorted(unknown)}; "
                                 f"manifest '{manifest.name}' takes {sorted(manifest.args)}")
    values: dict[str, str] = {}
    env = {**os.environ, "UID": str(os.getuid())}
    for key, default in manifest.args.items():
        raw = (overrides or {}).get(key, default)
        values[key] = string.Template(raw).safe_substitute({**env, **values})
    return values


def render_params(manifest: Manifest, params_dir: pathlib.Path, args: dict[str, str],
                  out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Substitute ${arg} in each node's params file; write the results under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = {}
    for node in manifest.nodes:
        if not node.params:
            continue
        text = (params_dir / node.params).read_text()
        try:
            text = string.Template(text).substitute(args)
        except KeyError as exc:
            raise ConfigurationError(f"params file {params_dir / node.params} uses ${{{exc.args[0]}}}, "
                                     f"which is not an argument of manifest '{manifest.name}'") from None
        target = out_dir / f"{node.name}.yaml"
        target.write_text(text)
        rendered[node.name] = target
    return rendered


def node_command(node: NodeSpec, params_file: Optional[pathlib.Path], python: str = sys.executable,
                 args: dict[str, str] | None = None) -> list[str]:
    if not node.ros:
        try:
            extra = [string.Template(a).substitute(args or {}) for a in node.args]
        except KeyError as exc:
            raise ConfigurationError(f"process '{node.name}': argument uses ${{{exc.args[0]}}}, "
                                     "which is not a launch argument") from None
        return [python, "-m", str(node.module), *extra]
    cmd = [python, "-m", node.module or f"{node.package}.{node.executable}", "--ros-args", "-r", f"__node:={node.name}"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    for src, dst in node.remaps.items():
        cmd += ["-r", f"{src}:={dst}"]
    if node.use_sim_time:
        cmd += ["-p", "use_sim_time:=true"]
    return cmd


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launcher dies, even by SIGKILL, so no node
    outlives it (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


_COLOURS = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96]


class _Child:
    def __init__(self, spec: NodeSpec, cmd: list[str], env: dict[str, str]) -> None:
        self.spec, self.cmd, self.env = spec, cmd, env
        self.proc: Optional[subprocess.Popen[str]] = None
        self.respawns = 0
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self.reader: Optional[threading.Thread] = None


def clean_dds_shared_memory() -> None:
    """Remove the shared-memory segments of DDS participants that are gone (a node killed with
    kill -9 leaves its segment in /dev/shm: 4 MB with the lab's profile). Fast DDS's own
    ``fastdds shm clean``, which keeps every segment a live process holds; best effort."""
    tool = pathlib.Path(sys.prefix) / "tools" / "fastdds" / "fastdds.py"
    if not tool.is_file():
        return
    try:
        subprocess.run([sys.executable, str(tool), "shm", "clean"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass


class Launcher:
    """Start a manifest's nodes as processes; keep them (respawn); stop them all.

    Usable as a context manager (tests) or through ``run_forever`` (``aichemist up``).
    """

    def __init__(self, manifest_path: str | os.PathLike[str], args: dict[str, str] | None = None,
                 *, run_dir: str | os.PathLike[str] | None = None, out: TextIO | None = sys.stdout,
                 colour: bool | None = None, extra_env: dict[str, str] | None = None,
                 only: list[str] | None = None) -> None:
        self.manifest, self.params_dir = load_manifest(manifest_path)
        self.args = resolve_args(self.manifest, args)
        base = run_dir or self.args.get("run_dir") or f"/tmp/aichemist-{os.getuid()}/{self.manifest.name}"
        self.run_dir = pathlib.Path(base)
        self.out = out
        self.colour = (out is not None and hasattr(out, "isatty") and out.isatty()) if colour is None else colour
        self.extra_env = extra_env or {}
        if only is not None:
            missing = set(only) - {n.name for n in self.manifest.nodes}
            if missing:
                raise ConfigurationError(f"manifest '{self.manifest.name}' has no node(s) {sorted(missing)}")
        self.only = only
        self._children: dict[str, _Child] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._line_cond = threading.Condition()
        self._watcher: Optional[threading.Thread] = None

    # --- start / stop ------------------------------------------------------------------------
    def start(self) -> "Launcher":
        params = render_params(self.manifest, self.params_dir, self.args, self.run_dir / "params")
        clean_dds_shared_memory()
        env = {**os.environ, **self.manifest.env, **self.extra_env, "AICHEMIST_RUN_DIR": str(self.run_dir)}
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(LAB_DDS_PROFILE))
        for node in self.manifest.nodes:
            if self.only is not None and node.name not in self.only:
                continue
            child = _Child(node, node_command(node, params.get(node.name), args=self.args), {**env, **node.env})
            self._children[node.name] = child
            self._spawn(child)
        self._watcher = threading.Thread(target=self._watch, name="launcher-watch", daemon=True)
        self._watcher.start()
        return self

    def _spawn(self, child: _Child) -> None:
        child.proc = subprocess.Popen(child.cmd, env=child.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
                                      preexec_fn=_die_with_parent)
        child.reader = threading.Thread(target=self._pump, args=(child, child.proc), daemon=True)
        child.reader.start()
        self._emit(child, f"started (pid {child.proc.pid})", meta=True)

    def _pump(self, child: _Child, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._emit(child, line.rstrip("\n"))

    def _emit(self, child: _Child, line: str, meta: bool = False) -> None:
        text = f"[launcher] {line}" if meta else line
        with self._line_cond:
            child.lines.append(text)
            self._line_cond.notify_all()
        if self.out is None:
            return
        name = child.spec.name
        if self.colour:
            c = _COLOURS[sum(map(ord, name)) % len(_COLOURS)]
            prefix = f"\x1b[{c}m[{name}]\x1b[0m "
        else:
            prefix = f"[{name}] "
        with self._lock:
            self.out.write(prefix + text + "\n")
            self.out.flush()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            for child in list(self._children.values()):
                proc = child.proc
                if proc is None or proc.poll() is None:
                    continue
                if child.reader:
                    child.reader.join(timeout=1.0)
                code = proc.returncode
                self._emit(child, f"exited with code {code}", meta=True)
                if self._stopping.is_set():
                    break
                if child.spec.respawn and child.respawns < child.spec.max_respawns:
                    child.respawns += 1
                    if self._stopping.wait(child.spec.respawn_delay_s):
                        break
                    self._emit(child, f"respawning ({child.respawns}/{child.spec.max_respawns})", meta=True)
                    self._spawn(child)
                else:
                    child.proc = None
            self._stopping.wait(0.1)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGINT every node (their clean shutdown: safe state), then SIGTERM, then SIGKILL the
        process groups that are left, so no process stays behind."""
        self._stopping.set()
        procs = [c.proc for c in self._children.values() if c.proc is not None and c.proc.poll() is None]
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            alive = [p for p in procs if p.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            for p in alive:
                try:
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for p in procs:  # children of nodes in the same group
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for child in self._children.values():
            if child.proc is not None and child.proc in procs:
                if child.reader:
                    child.reader.join(timeout=1.0)
                self._emit(child, f"stopped (exit code {child.proc.returncode})", meta=True)
        if self._watcher is not None:
            self._watcher.join(timeout=2.0)

    def __enter__(self) -> "Launcher":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- inspection (tests, CLI) -----------------------------------------------------------
    def pid(self, node: str) -> Optional[int]:
        proc = self._children[node].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def output(self, node: str) -> list[str]:
        with self._line_cond:
            return list(self._children[node].lines)

    def wait_for_line(self, node: str, pattern: str, timeout_s: float) -> str:
        """Block until ``node`` printed a line matching ``pattern``; TimeoutError otherwise."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._line_cond:
            seen = 0
            while True:
                lines = list(self._children[node].lines)
                for line in lines[seen:]:
                    if rx.search(line):
                        return line
                seen = len(lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = "\n".join(lines[-20:])
                    raise TimeoutError(f"{node} printed no line matching {pattern!r} in {timeout_s:g} s; "
                                       f"last lines:\n{tail}")
                self._line_cond.wait(remaining)

    def run_forever(self, on_signal: Callable[[], None] | None = None) -> int:
        """Start, then block until Ctrl-C/SIGTERM or every node has exited for good."""
        stop = threading.Event()

        def _handler(signum: int, _frame: Any) -> None:
            stop.set()

        old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not stop.wait(0.2):
                if all(c.proc is None for c in self._children.values()):
                    break
            if on_signal:
                on_signal()
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)
        failed = [c.spec.name for c in self._children.values()
                  if c.proc is not None and c.proc.returncode not in (0, -signal.SIGINT, None)]
        return 1 if failed and not stop.is_set() else 0
