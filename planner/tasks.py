"""The task language, version 1: flow_experiment, campaign, procedure.

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


FLOW_CONDITION_NAMES = tuple(FlowConditions.model_fields)


class LinearConstraint(_Strict):
    """``sum(coefficients[name] * value) <= bound`` over campaign variables (e.g. a total-flow cap)."""

    coefficients: dict[str, float] = Field(min_length=1)
    bound: float


class CampaignTask(_Strict):
    """A closed-loop optimisation: the optimizer proposes conditions until the budget is spent.

    Variables and objectives use ``planner.optimizer``'s format. Every flow condition is either a
    variable or in ``fixed``. Objectives name experiment outcomes (``OUTCOME_NAMES``).
    """

    kind: Literal["campaign"] = "campaign"
    version: Literal["1"] = TASK_LANGUAGE_VERSION
    name: str = Field(default="", max_length=200)
    variables: list[Variable] = Field(min_length=1, max_length=20)
    objectives: list[Objective] = Field(min_length=1, max_length=4)
    constraints: list[LinearConstraint] = Field(default_factory=list, max_length=20)
    fixed: dict[str, float] = Field(default_factory=dict, description="flow conditions held constant")
    budget: int = Field(ge=1, le=1000, description="number of experiments to run")
    batch_size: int = Field(default=1, ge=1, le=16, description="experiments proposed per optimizer round")
    seed: int = Field(default=0, ge=0)
    proposed_by: str = Field(default="", max_length=200)


#: Outcomes an experiment reports (objectives of a campaign name these).
OUTCOME_NAMES = ("yield_fraction", "sty_kg_m3_h", "e_factor", "conc_product_m")


class _Step(_Strict):
    id: str = Field(default="", max_length=100, description="unique within the procedure (default: s<index>)")
    after: list[str] = Field(default_factory=list, description="ids of steps that must finish first")


class MoveVialStep(_Step):
    op: Literal["move_vial"] = "move_vial"
    vial_id: str = Field(min_length=1, max_length=100)
    from_station: str
    to_station: str


class RunFlowExperimentStep(_Step):
    op: Literal["run_flow_experiment"] = "run_flow_experiment"
    conditions: FlowConditions
    collect_vial: str = Field(default="", max_length=100, description="vial receiving the steady-state product")


class MeasureStep(_Step):
    op: Literal["measure"] = "measure"
    vial_id: str = Field(min_length=1, max_length=100)
    instrument: Literal["hplc"] = "hplc"


class WaitStep(_Step):
    op: Literal["wait"] = "wait"
    duration_s: float = Field(gt=0, le=86400)


class DispenseStep(_Step):
    op: Literal["dispense"] = "dispense"
    reagent: str = Field(min_length=1, description="inventory name")
    volume_ml: float = Field(gt=0)
    vial_id: str = Field(min_length=1, max_length=100)
    smiles: str = Field(default="", description="optional: the structure the task expects (checked)")


ProcedureStep = Annotated[Union[MoveVialStep, RunFlowExperimentStep, MeasureStep, WaitStep, DispenseStep],
                          Field(discriminator="op")]


class ProcedureTask(_Strict):
    """Unit operations in order (each waits for the previous one unless ``after`` says otherwise)."""

    kind: Literal["procedure"] = "procedure"
    version: Literal["1"] = TASK_LANGUAGE_VERSION
    name: str = Field(default="", max_length=200)
    steps: list[ProcedureStep] = Field(min_length=1, max_length=500)
    proposed_by: str = Field(default="", max_length=200)


AnyTask = Union[FlowExperimentTask, CampaignTask, ProcedureTask]
Task = Annotated[AnyTask, Field(discriminator="kind")]
_task_adapter: TypeAdapter[Any] = TypeAdapter(Task)


class _TaskDocument(_Strict):
    """Wrapper so that errors are reported as task.<kind>.<field> (built once: a class per call
    cost 0.5 ms of CPU, measured by the bridge's load benchmark)."""

    task: Task


def parse_task(data: Any) -> AnyTask:
    """Validate a task document; raises ValidationError listing every problem."""
    if not isinstance(data, dict):
        raise ValidationError(f"task must be a JSON object, got {type(data).__name__}",
                              problems=[{"field": "<root>", "value": type(data).__name__,
                                         "limit": "object", "message": "not an object"}])

    return validate(_TaskDocument, {"task": data}, what="task").task


def task_json_schema() -> dict[str, Any]:
    schema = _task_adapter.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://aichemist.dev/schemas/task/v{TASK_LANGUAGE_VERSION}.json"
    schema["title"] = f"aichemist task, version {TASK_LANGUAGE_VERSION}"
    return schema


#: The published schema file (kept in step with the models by ``write_task_json_schema`` and a test).
SCHEMA_PATH = __import__("pathlib").Path(__file__).resolve().parent / "schema" / f"task.v{TASK_LANGUAGE_VERSION}.json"


def write_task_json_schema(path: Any = None) -> Any:
    """Write the JSON schema of the task language (default: ``planner/schema/task.v1.json``)."""
    import json
    import pathlib

    target = pathlib.Path(path) if path is not None else SCHEMA_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(task_json_schema(), indent=2, sort_keys=True) + "\n")
    return target


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


def limit_problems(conditions: FlowConditions, limits: LabLimits, prefix: str = "conditions"
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """(problems, messages) for every condition outside the lab's limits."""
    problems: list[dict[str, Any]] = []
    messages: list[str] = []
    for name, rng in limits:
        value = getattr(conditions, name)
        if value < rng.low or value > rng.high:
            bound, limit = ("min", rng.low) if value < rng.low else ("max", rng.high)
            err = LimitError(f"{prefix}.{name}", value, limit, bound=bound, unit=rng.unit)
            problems.extend({**p, "message": err.message} for p in err.problems)
            messages.append(err.message)
    return problems, messages


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
