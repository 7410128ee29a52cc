"""ORM rows of the store (SQLAlchemy 2.0 declarative). Each row turns into a plain record with `to_record()`.

The schema states its rules: check constraints on statuses, kinds and levels, explicitly named
constraints and indexes, a comment on every column. Migrations (`migrations/versions/`) create the same
schema; `tests/test_store.py` checks the two never drift apart.

Datetimes are stored as naive UTC (SQLite has no time zones) and come back timezone-aware UTC.
Metric times are unix seconds (floats): they are written in bulk and plotted, never shown as dates.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from llm_studio.store.records import (
    EXPERIMENT_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    DatasetRecord,
    EventRecord,
    ExperimentRecord,
    JobRecord,
)

EVENT_LEVELS = ("info", "warning", "error")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime, stored naive. Naive input is refused: its zone would be a guess."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one (e.g. datetime.now(timezone.utc))")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData()


class Dataset(Base):
    """An imported dataset; its files live in `path`."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", name="uq_datasets_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Row id.")
    name: Mapped[str] = mapped_column(String(100), nullable=False, comment="Unique user-given name (paths.check_name).")
    path: Mapped[str] = mapped_column(Text, nullable=False, comment="Folder holding data.parquet and dataset.yaml.")
    format: Mapped[str] = mapped_column(String(50), nullable=False, comment="Detected source format, e.g. prompt_answer.")
    columns: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict, comment="Column mapping used at import.")
    n_train: Mapped[int] = mapped_column(Integer, nullable=False, default=0, comment="Training rows/conversations.")
    n_valid: Mapped[int] = mapped_column(Integer, nullable=False, default=0, comment="Validation rows/conversations.")
    stats: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict, comment="Token-length statistics etc.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, comment="Import time (UTC).")

    def to_record(self) -> DatasetRecord:
        return DatasetRecord(
            id=self.id, name=self.name, path=self.path, format=self.format, columns=dict(self.columns or {}),
            n_train=self.n_train, n_valid=self.n_valid, stats=dict(self.stats or {}), created_at=self.created_at,
        )


class Experiment(Base):
    """One training run: its config, status and live progress (written by the worker's heartbeat)."""

    __tablename__ = "experiments"
    __table_args__ = (
        UniqueConstraint("name", name="uq_experiments_name"),
        CheckConstraint(_in("status", EXPERIMENT_STATUSES), name="ck_experiments_status"),
        Index("ix_experiments_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Row id.")
    name: Mapped[str] = mapped_column(String(100), nullable=False, comment="Unique name; also the folder name.")
    # A name, not a foreign key: deleting a dataset must not erase which data an experiment used.
    dataset_name: Mapped[str | None] = mapped_column(String(100), comment="Dataset trained on (may be deleted since).")
    config_path: Mapped[str] = mapped_column(Text, nullable=False, comment="The complete config.yaml of the run.")
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued", comment="Lifecycle status.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, comment="Creation time (UTC).")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="When training started (UTC).")
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="When it ended, any outcome (UTC).")
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, comment="Fraction done, 0..1.")
    step: Mapped[int] = mapped_column(Integer, nullable=False, default=0, comment="Optimizer steps done.")
    total_steps: Mapped[int] = mapped_column(Integer, nullable=False, default=0, comment="Planned optimizer steps.")
    eta_s: Mapped[float | None] = mapped_column(Float, comment="Estimated seconds left.")
    error: Mapped[str | None] = mapped_column(Text, comment="Why it failed, for the user (log tail).")
    parent_name: Mapped[str | None] = mapped_column(String(100), comment="Experiment this one was cloned from.")

    def to_record(self, latest_metrics: dict[str, float] | None = None) -> ExperimentRecord:
        return ExperimentRecord(
            id=self.id, name=self.name, dataset_name=self.dataset_name, config_path=self.config_path,
            status=self.status, created_at=self.created_at, started_at=self.started_at,
            finished_at=self.finished_at, progress=self.progress, step=self.step, total_steps=self.total_steps,
            eta_s=self.eta_s, error=self.error, parent_name=self.parent_name,
            latest_metrics=dict(latest_metrics or {}),
        )


class Job(Base):
    """A unit of work for the runner (train, export, push) on one experiment, in a priority queue."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", JOB_KINDS), name="ck_jobs_kind"),
        CheckConstraint(_in("status", JOB_STATUSES), name="ck_jobs_status"),
        Index("ix_jobs_queue", "status", "priority", "position"),
        Index("ix_jobs_experiment_id", "experiment_id", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Row id; the job's handle.")
    kind: Mapped[str] = mapped_column(String(20), nullable=False, comment="train | export | push.")
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE", name="fk_jobs_experiment_id"), nullable=False,
        comment="The experiment worked on; deleting it deletes its jobs.",
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued", comment="Lifecycle status.")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0, comment="Higher runs first.")
    position: Mapped[int] = mapped_column(Integer, nullable=False, comment="Order within a priority, lower first.")
    pid: Mapped[int | None] = mapped_column(Integer, comment="Worker process id while it runs.")
    pid_start_time: Mapped[float | None] = mapped_column(Float, comment="Worker create time, detects pid reuse.")
    resources: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict, comment="Requested/assigned GPUs or slots.")
    args: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict, comment="Kind-specific arguments.")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="Last sign of life (UTC).")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, comment="Enqueue time (UTC).")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="Claim time (UTC).")
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="End time (UTC).")
    exit_code: Mapped[int | None] = mapped_column(Integer, comment="Worker exit status.")

    def to_record(self, experiment_name: str) -> JobRecord:
        return JobRecord(
            id=self.id, kind=self.kind, experiment_name=experiment_name, status=self.status,
            priority=self.priority, position=self.position, pid=self.pid, pid_start_time=self.pid_start_time,
            resources=dict(self.resources or {}), heartbeat_at=self.heartbeat_at, created_at=self.created_at,
            started_at=self.started_at, finished_at=self.finished_at, exit_code=self.exit_code,
            args=dict(self.args or {}),
        )


class Metric(Base):
    """The metric history: one row per logged point. The id is a cursor for live polling.

    Read as plain tuples (see metrics.py), not ORM objects: series can be long.
    """

    __tablename__ = "metrics"
    # AUTOINCREMENT: ids are never reused after deletes, so "id > last seen" stays a correct cursor.
    __table_args__ = (
        Index("ix_metrics_experiment_name_step", "experiment_id", "name", "step"),
        Index("ix_metrics_experiment_cursor", "experiment_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, comment="Insert order; poll cursor.")
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE", name="fk_metrics_experiment_id"), nullable=False,
        comment="Owning experiment.",
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False, comment="e.g. train/loss, validation/exact_match.")
    step: Mapped[int] = mapped_column(Integer, nullable=False, comment="Optimizer step of the point.")
    epoch: Mapped[float | None] = mapped_column(Float, comment="Fractional epoch of the point.")
    # Nullable because SQLite stores NaN as NULL; a diverged loss must still be recorded (read back as NaN).
    value: Mapped[float | None] = mapped_column(Float, comment="The value; NULL means NaN.")
    time: Mapped[float] = mapped_column(Float, nullable=False, comment="Unix seconds when measured.")


class LatestMetric(Base):
    """The last value of each metric per experiment, so list pages never scan the history."""

    __tablename__ = "latest_metrics"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE", name="fk_latest_metrics_experiment_id"), primary_key=True,
        comment="Owning experiment.",
    )
    name: Mapped[str] = mapped_column(String(200), primary_key=True, comment="Metric name.")
    step: Mapped[int] = mapped_column(Integer, nullable=False, comment="Highest step seen for the name.")
    value: Mapped[float | None] = mapped_column(Float, comment="Value at that step (latest insert on ties); NULL = NaN.")
    time: Mapped[float] = mapped_column(Float, nullable=False, comment="Unix seconds when measured.")


class Event(Base):
    """Something a user should see in the UI: started, checkpoint saved, failed because..."""

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(_in("level", EVENT_LEVELS), name="ck_events_level"),
        Index("ix_events_experiment_id", "experiment_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Insert order.")
    experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE", name="fk_events_experiment_id"),
        comment="Experiment concerned; NULL for studio-wide events.",
    )
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, comment="When it happened (UTC).")
    level: Mapped[str] = mapped_column(String(10), nullable=False, comment="info | warning | error.")
    message: Mapped[str] = mapped_column(Text, nullable=False, comment="One line for the user.")

    def to_record(self, experiment_name: str | None) -> EventRecord:
        return EventRecord(id=self.id, experiment_name=experiment_name, time=self.time, level=self.level,
                           message=self.message)


class Setting(Base):
    """Non-secret studio settings (tokens never go here: they come from the environment)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(200), primary_key=True, comment="Setting name.")
    value: Mapped[Any] = mapped_column(JSON, nullable=True, comment="JSON value.")
