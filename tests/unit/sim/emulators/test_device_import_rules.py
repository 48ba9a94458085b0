"""Emulators are written from the manuals, independently of the drivers: sim/ never imports the
flow reactor's drivers, and the drivers never import sim/ (checked on the source, statically)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[4]


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_emulators_and_pty_host_do_not_import_flow_reactor():
    files = sorted((ROOT / "sim" / "emulators").glob("*.py")) + [ROOT / "sim" / "pty_host.py"]
    assert len(files) > 5
    offenders = {f.name: sorted(i for i in _imports(f) if i.split(".")[0] == "flow_reactor") for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_drivers_and_transport_do_not_import_sim():
    fr = ROOT / "flow_reactor"
    files = sorted((fr / "drivers").glob("*.py")) + [fr / "transport.py", fr / "roles.py", fr / "plugins.py"]
    offenders = {f.name: sorted(i for i in _imports(f) if i.split(".")[0] == "sim") for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}
