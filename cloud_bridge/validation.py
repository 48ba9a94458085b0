"""Validation of submitted tasks: the planner's task language (``planner.tasks.parse_task``), then
the lab's process window (``LabLimits``) applied to every set of flow conditions anywhere in the
task (a flow experiment's conditions, each step of a procedure, and any future kind that carries
``FlowConditions``) and to a campaign's search box and fixed values. Every problem names field,
value and limit; nothing is stored when there is one."""

from __future__ import annotations

from typing import Any, Iterator

from pydantic import BaseModel

from aichemist.errors import LimitError, ValidationError
from planner.tasks import CampaignTask, ContinuousVariable, FlowConditions, LabLimits, limit_problems, parse_task


def _flow_conditions(node: Any, path: str) -> Iterator[tuple[str, FlowConditions]]:
    if isinstance(node, FlowConditions):
        yield path, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _flow_conditions(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from _flow_conditions(item, f"{path}.{i}")


def _campaign_problems(task: CampaignTask, limits: LabLimits) -> tuple[list[dict[str, Any]], list[str]]:
    problems: list[dict[str, Any]] = []
    messages: list[str] = []
    window = dict(limits)

    def out(field: str, value: float, limit: float, bound: str, unit: str) -> None:
        err = LimitError(field, value, limit, bound=bound, unit=unit)
        problems.extend({**p, "message": err.message} for p in err.problems)
        messages.append(err.message)

    for i, var in enumerate(task.variables):
        rng = window.get(var.name)
        if isinstance(var, ContinuousVariable) and rng is not None:
            if var.low < rng.low:
                out(f"variables.{i}.low", var.low, rng.low, "min", rng.unit)
            if var.high > rng.high:
                out(f"variables.{i}.high", var.high, rng.high, "max", rng.unit)
    for name, value in task.fixed.items():
        rng = window.get(name)
        if rng is not None and not rng.low <= value <= rng.high:
            bound, limit = ("min", rng.low) if value < rng.low else ("max", rng.high)
            out(f"fixed.{name}", value, limit, bound, rng.unit)
    return problems, messages


def validate_task(document: Any, limits: LabLimits) -> Any:
    """The parsed task, or ValidationError (422) listing every problem."""
    task = parse_task(document)
    problems: list[dict[str, Any]] = []
    messages: list[str] = []
    for path, conditions in _flow_conditions(task, ""):
        p, m = limit_problems(conditions, limits, prefix=path)
        problems += p
        messages += m
    if isinstance(task, CampaignTask):
        p, m = _campaign_problems(task, limits)
        problems += p
        messages += m
    if problems:
        raise ValidationError("task outside the lab's limits: " + "; ".join(messages), problems=problems)
    return task
