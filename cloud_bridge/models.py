"""Database schema of the bridge (SQLAlchemy 2 declarative models).

Times are float seconds since the epoch (``EpochClock``): leases are compared between processes,
and floats behave the same on SQLite and PostgreSQL. JSON documents are stored as text so the
same migration serves both databases.
"""

from __future__ import annotations

from sqlalchemy import (Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# Task states. Terminal states are written once (a conditional update from a live state).
AWAITING_APPROVAL = "awaiting_approval"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
LIVE_STATES = (AWAITING_APPROVAL, QUEUED, RUNNING)
TERMINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
ALL_STATES = LIVE_STATES + TERMINAL_STATES

SCOPES = ("submit", "read", "approve", "admin")
KEY_KINDS = ("human", "model_service", "scheduler", "service")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public prefix of the key
    secret_hash: Mapped[str] = mapped_column(String(128))  # sha256 hex of the whole key
    name: Mapped[str] = mapped_column(String(200), default="")
    lab: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="human")
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    rate_limit_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("lab", "idempotency_key", name="uq_tasks_lab_idempotency_key"),
        Index("ix_tasks_lab_status_created", "lab", "status", "created_at"),
        Index("ix_tasks_claim", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    lab: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    campaign: Mapped[str] = mapped_column(String(128), default="", index=True)
    task_json: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    submitted_by: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32))
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approved_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    approved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the durable queue
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    goal_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)  # ROS action goal id
    # progress and outcome
    phase: Mapped[str] = mapped_column(String(64), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    result_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_type: Mapped[str] = mapped_column(String(128), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    result_json: Mapped[str] = mapped_column(Text, default="")


class TaskEvent(Base):
    """Append-only event log: the source of the SSE streams (works across processes)."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_task_events_lab_id", "lab", "id"), Index("ix_task_events_task_id", "task_id", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("tasks.id"))
    lab: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    data_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_lab_id", "lab", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    key_id: Mapped[str] = mapped_column(String(16), default="")  # never the secret
    lab: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(String(64), default="")


class LabNode(Base):
    """What a lab-side process (the bridge node) last reported: ROS nodes, devices, safety."""

    __tablename__ = "lab_nodes"

    lab: Mapped[str] = mapped_column(String(64), primary_key=True)
    reporter: Mapped[str] = mapped_column(String(128), primary_key=True)
    report_json: Mapped[str] = mapped_column(Text)
    reported_at: Mapped[float] = mapped_column(Float)


class InventoryItem(Base):
    __tablename__ = "inventory"

    lab: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # reagent | vial | rack | solvent ...
    location: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    amount: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit: Mapped[str] = mapped_column(String(16), default="")
    updated_at: Mapped[float] = mapped_column(Float)
