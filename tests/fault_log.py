"""What the fault tier tried (tests/faults): filled by its tests, printed by its conftest."""

from __future__ import annotations

from typing import Any

FAULTS: list[dict[str, Any]] = []
