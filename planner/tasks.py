"""The task language, version 1.

A task is JSON. ``kind`` selects the variant. The JSON schema is published by
``task_json_schema()`` (and ``aichemist schema``). Values carry their units in their names.

Limits of the lab (the reactor's temperature range, residence time range...) are not part of the
schema: they come from the lab profile (``planner.lab.LabLimits``) and are checked by
``check_limits``, so that one schema serves every lab.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from aichemist.errors import LimitError, ValidationError
from aichemist.params import validate

TASK_LANGUAGE_VERSION = "1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlowConditions(_Strict):
    """One set of flow conditions for the SnAr reactor (DFNB + pyrrolidine)."""

    residence_time_min: float = Field(gt=0, description="Residence time in the reactor, minutes")
    temp_c: float = Field(ge=-273.15, description="Reactor temperature, degrees Celsius")
    equivalents: float = Field(gt=0, description="Pyrrolidine equivalents relative to DFNB")
    conc_dfnb_m: float = Field(gt=0, description="DFNB concentration at the reactor inlet, mol/L")


class ContinuousVariable(_Strict):
    """A continuous search variable: ``{"name": "temp_c", "type": "continuous", "low": 30, "high": 120}``."""

    name: str = Field(min_length=1, max_length=100)
    type: Literal["continuous"] = "continuous"
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> "ContinuousVariable":
        if not self.high > self.low:
            raise ValueError(f"variable {self.name!r}: high ({self.high}) must exceed low ({self.low})")
        return self


class CategoricalVariable(_Strict):
    """A categorical search variable: ``{"name": "catalyst", "type": "categorical", "choices": ["P1", "P2"]}``."""

    name: str = Field(min_length=1, max_length=100)
    type: Literal["categorical"] = "categorical"
    choices: list[str] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique(self) -> "CategoricalVariable":
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"variable {self.name!r}: choices must be unique")
        return self


Variable = Annotated[Union[ContinuousVariable, CategoricalVariable], Field(discriminator="type")]


class Objective(_Strict):
    """An objective: ``{"name": "sty_kg_m3_h", "direction": "max"}``.

    ``reference`` (optional) is the worst value still worth having (the hypervolume reference
    point for several objectives); without it the optimizer derives one from the data.
    ``transform: "log"`` models log(value) (positive outcomes spanning decades, e.g. E-factor).
    """

    name: str = Field(min_length=1, max_length=100)
    direction: Literal["max", "min"]
    reference: float | None = None
    transform: Literal["none", "log"] = "none"


class FlowExperimentTask(_Strict):
    kind: Literal["flow_experiment"] = "flow_experiment"
    version: Literal["1"] = TASK_LANGUAGE_VERSION
    name: str = Field(default="", max_length=200)
    conditions: FlowConditions
    proposed_by: str = Field(default="", max_length=200, description="Who or which model proposed it")


Task = Annotated[Union[FlowExperimentTask], Field(discriminator="kind")]
_task_adapter: TypeAdapter[Any] = TypeAdapter(Task)


def parse_task(data: Any) -> FlowExperimentTask:
    """Validate a task document; raises ValidationError listing every problem."""
    if not isinstance(data, dict):
        raise ValidationError(f"task must be a JSON object, got {type(data).__name__}",
                              problems=[{"field": "<root>", "value": type(data).__name__,
                                         "limit": "object", "message": "not an object"}])

    class _Wrapper(_Strict):
        task: Task

    return validate(_Wrapper, {"task": data}, what="task").task


def task_json_schema() -> dict[str, Any]:
    schema = _task_adapter.json_schema()
    schema["$id"] = f"https://aichemist.dev/schemas/task/v{TASK_LANGUAGE_VERSION}.json"
    schema["title"] = f"aichemist task, version {TASK_LANGUAGE_VERSION}"
    return schema


class Range(_Strict):
    low: float
    high: float
    unit: str = ""


class LabLimits(_Strict):
    """The process window of the lab's reactor (from the lab profile)."""

    residence_time_min: Range = Range(low=0.5, high=2.0, unit="min")
    temp_c: Range = Range(low=30.0, high=120.0, unit="C")
    equivalents: Range = Range(low=1.0, high=5.0, unit="equiv")
    conc_dfnb_m: Range = Range(low=0.1, high=0.5, unit="M")


def check_limits(task: FlowExperimentTask, limits: LabLimits) -> None:
    """Raise one ValidationError listing every condition outside the lab's limits."""
    problems: list[dict[str, Any]] = []
    messages: list[str] = []
    for name, rng in limits:
        value = getattr(task.conditions, name)
        if value < rng.low or value > rng.high:
            bound, limit = ("min", rng.low) if value < rng.low else ("max", rng.high)
            err = LimitError(f"conditions.{name}", value, limit, bound=bound, unit=rng.unit)
            problems.extend(err.problems)
            messages.append(err.message)
    if problems:
        raise ValidationError("task outside the lab's limits: " + "; ".join(messages), problems=problems)
