"""Parameters declared once: a pydantic model per node or device, typed and validated.

The same model gives the ROS parameter declarations (flattened dotted names, types, defaults,
descriptions, ranges) in the node adapter and the validation in the pure core. Every failure
becomes a ``ConfigurationError`` (or a ``ValidationError`` for task input) whose message names
the field, the value and the limit.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from aichemist.errors import ConfigurationError, ValidationError

M = TypeVar("M", bound=BaseModel)


class Params(BaseModel):
    """Base for node and device parameter models: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def launch_substituted(value: str) -> str:
    """Validator for a path a launch manifest fills in (``${run_dir}/...``): refuse a placeholder
    left as it is, which would otherwise become a folder named after it."""
    if "${" in value:
        raise ValueError(f"'{value}' holds an unsubstituted launch argument (start it through a manifest "
                         "that defines it, or give a path)")
    return value


def _limit_of(err: dict[str, Any]) -> Any:
    ctx = err.get("ctx") or {}
    for key in ("le", "ge", "lt", "gt", "max_length", "min_length", "expected", "pattern"):
        if key in ctx:
            return {"le": "<=", "ge": ">=", "lt": "<", "gt": ">"}.get(key, key + " ") + str(ctx[key])
    return None


def describe_pydantic_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    """Turn pydantic's errors into problems that name field, value and limit."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        value = err.get("input")
        if isinstance(value, (dict, list)) and err["type"] != "extra_forbidden":
            value = "<" + type(value).__name__ + ">"
        problems.append({"field": field, "value": value, "limit": _limit_of(err), "message": err["msg"]})
    return problems


def format_problems(problems: list[dict[str, Any]]) -> str:
    parts = []
    for p in problems:
        s = f"{p['field']}: {p['message']}"
        if p.get("value") is not None:
            s += f" (got {p['value']!r}"
            s += f", limit {p['limit']})" if p.get("limit") else ")"
        parts.append(s)
    return "; ".join(parts)


def validate(model: type[M], data: Any, *, what: str = "", error: type[ValidationError] = ValidationError) -> M:
    """Validate ``data`` against ``model``; raise ``error`` listing every problem."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = describe_pydantic_errors(exc)
        prefix = f"invalid {what}: " if what else "invalid input: "
        raise error(prefix + format_problems(problems), problems=problems) from None


def validate_config(model: type[M], data: Any, *, what: str) -> M:
    return validate(model, unflatten(data) if isinstance(data, dict) else data, what=what, error=ConfigurationError)


def flatten(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, annotation, FieldInfo) for every leaf field, recursing into sub-models."""
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        full = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(flatten(ann, full + "."))
        else:
            out.append((full, ann, info))
    return out


def leaf_defaults(model: type[BaseModel], prefix: str = "", instance: Any = None) -> dict[str, Any]:
    """Dotted name -> default of every leaf field. A sub-model field whose default is an
    instance (or a factory) gives its leaves that instance's values, so declaring the leaves one
    by one (ROS parameters) keeps the model's defaults."""
    from pydantic_core import PydanticUndefined

    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        full = f"{prefix}{name}"
        if instance is not None:
            default = getattr(instance, name)
        elif info.default is not PydanticUndefined:
            default = info.default
        elif info.default_factory is not None:
            default = info.default_factory()
        else:
            default = PydanticUndefined
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(leaf_defaults(ann, full + ".", default if isinstance(default, BaseModel) else None))
        else:
            out[full] = default
    return out


def unflatten(values: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}; keys without dots pass through."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def numeric_bounds(info: Any) -> tuple[float | None, float | None]:
    """(low, high) from a field's ge/le (or gt/lt) constraints, for ROS range descriptors."""
    low = high = None
    for meta in info.metadata:
        for attr in ("ge", "gt"):
            if getattr(meta, attr, None) is not None:
                low = getattr(meta, attr)
        for attr in ("le", "lt"):
            if getattr(meta, attr, None) is not None:
                high = getattr(meta, attr)
    return low, high
