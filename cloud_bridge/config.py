"""Settings of the bridge (HTTP side and ROS side), declared once as typed parameter models.

The database URL comes, in order, from the explicit argument, ``AICHEMIST_DATABASE_URL``, or the
params file; the default is an embedded SQLite file (WAL) under the user's data directory.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import yaml
from pydantic import Field

from aichemist.params import Params, validate_config
from planner.tasks import LabLimits

DATABASE_URL_ENV = "AICHEMIST_DATABASE_URL"
BOOTSTRAP_ADMIN_KEY_ENV = "AICHEMIST_BOOTSTRAP_ADMIN_KEY"


def default_database_url() -> str:
    data_dir = pathlib.Path(os.environ.get("XDG_DATA_HOME", pathlib.Path.home() / ".local" / "share"))
    return f"sqlite:///{data_dir / 'aichemist' / 'bridge.db'}"


def resolve_database_url(explicit: str | None = None, settings: "BridgeSettings | None" = None) -> str:
    if explicit:
        return explicit
    if os.environ.get(DATABASE_URL_ENV):
        return os.environ[DATABASE_URL_ENV]
    if settings is not None and settings.database_url:
        return settings.database_url
    return default_database_url()


class ApprovalPolicy(Params):
    """Which submitters must wait for a human with the approve scope before anything runs."""

    require_approval_for_kinds: tuple[str, ...] = Field(
        default=("model_service",), description="API key kinds whose tasks wait for approval")
    approver_kinds: tuple[str, ...] = Field(
        default=("human",), description="API key kinds allowed to approve (with the approve scope)")


class BridgeSettings(Params):
    """Parameters of the HTTP side of the bridge."""

    database_url: str = Field(default="", description="SQLAlchemy URL; empty = env or default")
    lab_limits: dict[str, LabLimits] = Field(
        default_factory=dict, description="Process window per lab id; labs not listed use the default")
    approval: ApprovalPolicy = ApprovalPolicy()
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    rate_limit_per_s: float = Field(default=20.0, gt=0, le=100000, description="default per API key")
    rate_limit_burst: int = Field(default=40, ge=1, le=100000)
    worker_threads: int = Field(default=12, ge=1, le=256, description="threads (and pooled connections) "
                                "for database work")
    auth_cache_s: float = Field(default=1.0, ge=0, le=60,
                                description="a key revoked from another process is refused within this time")
    sse_poll_s: float = Field(default=0.25, gt=0, le=10)
    sse_keepalive_s: float = Field(default=15.0, gt=0, le=300)
    lab_status_stale_s: float = Field(default=30.0, gt=0, description="older node reports are 'stale'")
    page_size_max: int = Field(default=200, ge=1, le=10000)

    def limits_for(self, lab: str) -> LabLimits:
        limits = self.lab_limits.get(lab)
        # one shared default (validation only reads it): building LabLimits() deep-copies its
        # defaults, which was 5 % of a submission's CPU
        return limits if limits is not None else _DEFAULT_LIMITS


_DEFAULT_LIMITS = LabLimits()


class BridgeNodeParams(Params):
    """Parameters of the ROS side (bridge_node)."""

    database_url: str = Field(default="", description="SQLAlchemy URL; empty = env or default")
    lab: str = Field(default="default", min_length=1, max_length=64, description="lab id served")
    owner: str = Field(default="", max_length=128, description="lease owner name; empty = host:pid")
    lease_s: float = Field(default=15.0, ge=0.5, le=3600, description="lease length")
    heartbeat_s: float = Field(default=5.0, ge=0.1, le=600, description="lease renewal period")
    poll_s: float = Field(default=0.5, ge=0.05, le=60, description="queue poll period")
    max_attempts: int = Field(default=3, ge=1, le=100, description="claims before a task is failed")
    max_concurrent: int = Field(default=1, ge=1, le=64)
    action_name: str = Field(default="/planner/execute_task")
    status_period_s: float = Field(default=2.0, ge=0.1, le=600, description="lab status report period")
    device_nodes: list[str] = Field(default_factory=list,
                                    description="lifecycle nodes whose state the lab status reports (device = the "
                                                "node name without '_node')")


def load_settings(path: str | os.PathLike[str] | None = None, *, key: str = "bridge") -> BridgeSettings:
    """Read BridgeSettings from a YAML params file (the ``bridge:`` section or the whole file)."""
    if path is None:
        return BridgeSettings()
    data: Any = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    if isinstance(data, dict) and key in data:
        data = data[key]
    return validate_config(BridgeSettings, data, what=f"bridge settings in {path}")


class EpochClock:
    """Wall time in seconds since the epoch: leases are compared across processes and machines,
    so a monotonic per-process clock would not do."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
