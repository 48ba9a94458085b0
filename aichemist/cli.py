"""The `aichemist` command line.

`up` starts a node graph from its manifest; `campaign` runs the main job in the twin; `schema`
prints the task language's JSON schema. The bridge's client commands (`submit`, `status`,
`watch`, `keys`, `serve`, ...) come from cloud_bridge.cli and are mounted at the top level.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from aichemist.errors import AIChemistError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="AI-Chemist control stack: launch the lab, run campaigns, talk to the bridge.")


def _fail(exc: AIChemistError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def up(manifest: str = typer.Argument(..., help="node manifest, e.g. launch/twin.yaml"),
       arg: list[str] = typer.Option([], "--arg", "-a", help="launch argument NAME=VALUE (repeatable)"),
       only: list[str] = typer.Option([], "--only", help="start only these nodes (repeatable)")) -> None:
    """Start every node of MANIFEST as its own process; Ctrl-C stops them all."""
    from aichemist.launcher import Launcher

    overrides = {}
    for item in arg:
        if "=" not in item:
            _fail(AIChemistError(f"--arg expects NAME=VALUE, got {item!r}"))
        key, value = item.split("=", 1)
        overrides[key] = value
    try:
        launcher = Launcher(manifest, overrides, only=only or None)
    except AIChemistError as exc:
        _fail(exc)
    typer.echo(f"starting {len(launcher.manifest.nodes) if not only else len(only)} node(s) of "
               f"'{launcher.manifest.name}' (run dir {launcher.run_dir}); Ctrl-C to stop", err=True)
    raise typer.Exit(launcher.run_forever())


@app.command()
def schema() -> None:
    """Print the task language's JSON schema."""
    from planner.tasks import task_json_schema

    typer.echo(json.dumps(task_json_schema(), indent=2))


def _mount_optional() -> None:
    """Mount the commands of the packages that provide them (bridge client, campaign runner)."""
    import importlib

    for module_name in ("cloud_bridge.cli", "aichemist.campaign"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        sub = getattr(module, "app", None)
        if sub is None:
            continue
        existing = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
        for command in sub.registered_commands:
            name = command.name or (command.callback.__name__.replace("_", "-") if command.callback else "")
            if name not in existing:
                app.registered_commands.append(command)
        for group in sub.registered_groups:
            app.registered_groups.append(group)


def main(argv: Optional[list[str]] = None) -> None:
    _mount_optional()
    try:
        app(args=argv, prog_name="aichemist")
    except AIChemistError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as exc:
        from cloud_bridge.cli import explain_unreachable

        if not explain_unreachable(exc):
            raise
        sys.exit(2)


if __name__ == "__main__":
    main()
