"""Perception's failure types: each says why no trustworthy answer could be given."""

from __future__ import annotations

from aichemist.errors import PerceptionError


class MarkerNotFound(PerceptionError):
    """The requested marker is not in the image (nothing decoded, or only other ids)."""


class UntrustworthyEstimate(PerceptionError):
    """A marker was seen but its pose fails a trust check (reprojection, size, angle, ambiguity)."""


class ImageQualityError(PerceptionError):
    """The image cannot be used: too dark, saturated, blurred, empty or malformed."""


class CameraUnavailable(PerceptionError):
    """No image (or no camera info) from the requested camera within the timeout."""
