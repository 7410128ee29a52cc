"""Plain records returned by the store. Only these leave `llm_studio.store`; no ORM object reaches a caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EXPERIMENT_STATUSES = ("queued", "running", "stopping", "stopped", "finished", "failed", "interrupted")
JOB_STATUSES = ("queued", "running", "stopping", "stopped", "finished", "failed", "interrupted", "cancelled")
JOB_KINDS = ("train", "export", "push")


@dataclass(frozen=True)
class DatasetRecord:
    id: int
    name: str
    path: str                     # folder under $LLM_STUDIO_HOME/datasets
    format: str                   # detected source format: prompt_answer, alpaca, sharegpt, openai_messages, threads
    columns: dict[str, Any]       # the column mapping used
    n_train: int
    n_valid: int
    stats: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ExperimentRecord:
    id: int
    name: str
    dataset_name: str | None
    config_path: str
    status: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float = 0.0         # 0..1
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    error: str | None = None
    parent_name: str | None = None
    latest_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str
    experiment_name: str
    status: str
    priority: int
    position: int                 # queue order within a priority (lower runs first)
    pid: int | None
    pid_start_time: float | None  # process create time (psutil), to detect pid reuse
    resources: dict[str, Any]     # {"gpus": [0, 1]} or {"cpu_slots": 1}
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricPoint:
    name: str                     # "train/loss", "validation/exact_match", ...
    step: int
    value: float
    epoch: float | None = None
    time: float | None = None     # unix seconds; filled by the store when None
    id: int | None = None         # row id, a cursor for live polling


@dataclass(frozen=True)
class EventRecord:
    id: int
    experiment_name: str | None
    time: datetime
    level: str                    # info | warning | error
    message: str
