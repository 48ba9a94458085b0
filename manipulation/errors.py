"""Manipulation's finer error types (each maps to the stack's ResultCode through its base)."""

from __future__ import annotations

from aichemist.errors import ConflictError, DeviceError, NotFoundError, PerceptionError, PlanningError


class UnknownStation(NotFoundError):
    """A station name that the lab layout does not define."""


class UnknownSlot(NotFoundError):
    """A slot name that the station's rack does not have."""


class SlotEmpty(ConflictError):
    """Pick from a slot that holds no vial."""


class SlotOccupied(ConflictError):
    """Place into a slot that already holds a vial."""


class GripperNotEmpty(ConflictError):
    """Pick while already holding a vial (or place while holding none)."""


class Unreachable(PlanningError):
    """No inverse-kinematics solution (within joint limits and collision-free) for a pose."""


class NoPathFound(PlanningError):
    """The planner found no collision-free path in its time budget."""


class PathInCollision(PlanningError):
    """A path failed the fine-resolution verification (never executed)."""


class GraspFailed(DeviceError):
    """The gripper closed on nothing, or the vial slipped out."""

    retryable = True


class LocalisationFailed(PerceptionError):
    """The station fiducial could not be located (or the fix was implausible)."""
