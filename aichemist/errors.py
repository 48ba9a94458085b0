"""One typed error hierarchy for the whole stack.

Every error knows how it crosses each boundary: the integer result code carried by ROS action
results (``ResultCode``), the HTTP status the bridge answers with, and whether a retry may help.
Errors are rebuilt on the far side of a ROS boundary from (code, error_type, message), so a
typed interlock trip in the flow reactor node arrives in the planner, and in the task's result,
as the same type.
"""

from __future__ import annotations

import enum
from typing import Any


class ResultCode(enum.IntEnum):
    """Result codes used by every aichemist action result (field ``code``)."""

    SUCCESS = 0
    INVALID_GOAL = 1
    LIMIT_EXCEEDED = 2
    NOT_FOUND = 3
    CONFLICT = 4
    DEVICE_ERROR = 10
    COMMUNICATION_ERROR = 11
    INTERLOCK = 20
    EMERGENCY_STOP = 21
    PLANNING_FAILED = 30
    PERCEPTION_FAILED = 31
    CANCELLED = 40
    TIMEOUT = 41
    INTERNAL = 99


class AIChemistError(Exception):
    """Base of every error the stack raises on purpose."""

    code: ResultCode = ResultCode.INTERNAL
    http_status: int = 500
    retryable: bool = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def error_type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {
            "error_type": self.error_type,
            "code": int(self.code),
            "message": self.message,
            "retryable": self.retryable,
            **({"details": self.details} if self.details else {}),
        }

    def __str__(self) -> str:
        return self.message


# --- input -------------------------------------------------------------------------------
class ValidationError(AIChemistError):
    """Input that is malformed or out of range. Carries every problem found."""

    code = ResultCode.INVALID_GOAL
    http_status = 422

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None, **details: Any):
        super().__init__(message, **details)
        self.problems = problems or []

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.problems:
            out["problems"] = self.problems
        return out


class LimitError(ValidationError):
    """A setpoint outside a device's or the process's limits. Rejected, never clamped."""

    code = ResultCode.LIMIT_EXCEEDED

    def __init__(self, field: str, value: Any, limit: Any, *, bound: str = "", unit: str = "",
                 device: str = ""):
        where = f"{device}: " if device else ""
        relation = {"max": "above the maximum", "min": "below the minimum"}.get(bound, "outside the limit")
        u = f" {unit}" if unit else ""
        msg = f"{where}{field}={value!r}{u} is {relation} {limit!r}{u}"
        problem = {"field": field, "value": value, "limit": limit, "bound": bound, "unit": unit}
        super().__init__(msg, problems=[problem])
        self.field, self.value, self.limit, self.bound = field, value, limit, bound


class ConfigurationError(ValidationError):
    """Invalid node parameters or device configuration (a node's configure step fails)."""


class NotFoundError(AIChemistError):
    code = ResultCode.NOT_FOUND
    http_status = 404


class ConflictError(AIChemistError):
    """The request contradicts state (reused idempotency key, task already run, slot full)."""

    code = ResultCode.CONFLICT
    http_status = 409


class DeviceNotReady(ConflictError):
    """The device's node is there but not active yet (coming back after a restart, being
    configured): worth trying again shortly, unlike the other conflicts."""

    retryable = True
    http_status = 503


class AuthenticationError(AIChemistError):
    code = ResultCode.INVALID_GOAL
    http_status = 401


class PermissionDeniedError(AIChemistError):
    code = ResultCode.INVALID_GOAL
    http_status = 403


# --- devices -----------------------------------------------------------------------------
class DeviceError(AIChemistError):
    """A device misbehaved or reported a fault."""

    code = ResultCode.DEVICE_ERROR
    http_status = 503


class DeviceNotFoundError(DeviceError):
    """The configured port or address does not exist."""


class DeviceIdentityError(DeviceError):
    """Something answered, but not the device that was configured."""


class ProtocolError(DeviceError):
    """A reply that does not parse as the device's protocol."""

    code = ResultCode.COMMUNICATION_ERROR
    retryable = True


class CommunicationTimeout(DeviceError):
    """No reply within the timeout."""

    code = ResultCode.COMMUNICATION_ERROR
    retryable = True


# --- safety ------------------------------------------------------------------------------
class SafetyError(AIChemistError):
    """Something tripped a safety function; hardware has been driven to its safe state."""

    code = ResultCode.INTERLOCK
    http_status = 503


class InterlockTripped(SafetyError):
    def __init__(self, interlock: str, message: str, **details: Any):
        super().__init__(f"interlock '{interlock}' tripped: {message}", interlock=interlock, **details)
        self.interlock = interlock


class EmergencyStop(SafetyError):
    code = ResultCode.EMERGENCY_STOP


# --- planning, perception, execution -----------------------------------------------------
class PlanningError(AIChemistError):
    code = ResultCode.PLANNING_FAILED
    http_status = 422


class PerceptionError(AIChemistError):
    code = ResultCode.PERCEPTION_FAILED
    http_status = 503
    retryable = True


class Cancelled(AIChemistError):
    code = ResultCode.CANCELLED
    http_status = 409


class StepTimeout(AIChemistError):
    code = ResultCode.TIMEOUT
    http_status = 504
    retryable = True


_BASE_BY_CODE: dict[int, type] = {}  # filled below: result code -> the most general class with that code


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_result(code: int, error_type: str, message: str) -> AIChemistError:
    """Rebuild a typed error on the receiving side of a ROS action result."""
    by_name = {c.__name__: c for c in _all_subclasses(AIChemistError)}
    cls = by_name.get(error_type)
    if cls is None:
        # a type this process has not imported (a perception or manipulation error): the base class
        # of its result code keeps what matters, e.g. that a perception failure is worth a retry
        cls = _BASE_BY_CODE.get(code)
    err: AIChemistError
    if cls is None:
        err = AIChemistError(message)
    else:
        err = cls.__new__(cls)
        AIChemistError.__init__(err, message)
        if isinstance(err, ValidationError):
            err.problems = []
        if isinstance(err, InterlockTripped):
            err.interlock = message.split("'")[1] if "'" in message else ""
    try:
        err.code = ResultCode(code)
    except ValueError:
        err.code = ResultCode.INTERNAL
    return err


for _cls in _all_subclasses(AIChemistError):  # parents come before their subclasses
    _BASE_BY_CODE.setdefault(int(_cls.code), _cls)
