"""Command line: dry-run a task against a lab profile, or write the task JSON schema.

    .venv/bin/python -m planner dry-run task.json [--lab default]   # exit 0 ok, 2 rejected
    .venv/bin/python -m planner schema [path]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from aichemist.errors import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m planner")
    sub = parser.add_subparsers(dest="command", required=True)
    dry = sub.add_parser("dry-run", help="compile a task, print the plan, its schedule and every check")
    dry.add_argument("task", help="task JSON file ('-' for stdin)")
    dry.add_argument("--lab", default="default", help="lab profile name (config/lab/) or YAML path")
    schema = sub.add_parser("schema", help="write the task language's JSON schema")
    schema.add_argument("path", nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.command == "schema":
        from planner.tasks import write_task_json_schema

        print(write_task_json_schema(args.path))
        return 0
    from planner.compiler import compile_task, dry_run
    from planner.lab import load_lab
    from planner.scheduler import schedule

    text = sys.stdin.read() if args.task == "-" else pathlib.Path(args.task).read_text()
    lab = load_lab(args.lab)
    try:
        plan = compile_task(json.loads(text), lab)
    except ValidationError as exc:
        print(f"REJECTED: {exc.message}", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p.get('field')}: {p.get('message', '')} (value {p.get('value')!r}, limit {p.get('limit')!r})",
                  file=sys.stderr)
        return 2
    caps = {r.name: r.capacity for r in lab.resources}
    print(dry_run(plan, schedule(plan.steps, caps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
