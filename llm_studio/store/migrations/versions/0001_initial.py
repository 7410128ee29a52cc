"""The first schema: datasets, experiments, jobs, metrics (+ latest_metrics), events, settings.

Frozen on purpose: it spells the tables out instead of importing the models, so later model changes
need a new migration (the drift test in tests/test_store.py says when).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EXPERIMENT_STATUSES = ("queued", "running", "stopping", "stopped", "finished", "failed", "interrupted")
JOB_STATUSES = EXPERIMENT_STATUSES + ("cancelled",)
JOB_KINDS = ("train", "export", "push")
EVENT_LEVELS = ("info", "warning", "error")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("format", sa.String(50), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_valid", sa.Integer(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("dataset_name", sa.String(100), nullable=True),
        sa.Column("config_path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("parent_name", sa.String(100), nullable=True),
        sa.UniqueConstraint("name", name="uq_experiments_name"),
        sa.CheckConstraint(_in("status", EXPERIMENT_STATUSES), name="ck_experiments_status"),
    )
    op.create_index("ix_experiments_status", "experiments", ["status"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_start_time", sa.Float(), nullable=True),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE", name="fk_jobs_experiment_id"),
        sa.CheckConstraint(_in("kind", JOB_KINDS), name="ck_jobs_kind"),
        sa.CheckConstraint(_in("status", JOB_STATUSES), name="ck_jobs_status"),
    )
    op.create_index("ix_jobs_queue", "jobs", ["status", "priority", "position"])
    op.create_index("ix_jobs_experiment_id", "jobs", ["experiment_id", "kind"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),  # NULL = NaN (SQLite stores NaN as NULL)
        sa.Column("time", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], ondelete="CASCADE", name="fk_metrics_experiment_id"
        ),
        sqlite_autoincrement=True,  # ids never reused: a safe polling cursor
    )
    op.create_index("ix_metrics_experiment_name_step", "metrics", ["experiment_id", "name", "step"])
    op.create_index("ix_metrics_experiment_cursor", "metrics", ["experiment_id", "id"])
    op.create_table(
        "latest_metrics",
        sa.Column("experiment_id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),  # NULL = NaN (SQLite stores NaN as NULL)
        sa.Column("time", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], ondelete="CASCADE", name="fk_latest_metrics_experiment_id"
        ),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], ondelete="CASCADE", name="fk_events_experiment_id"
        ),
        sa.CheckConstraint(_in("level", EVENT_LEVELS), name="ck_events_level"),
    )
    op.create_index("ix_events_experiment_id", "events", ["experiment_id", "id"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=True),
    )


def downgrade() -> None:
    for table in ("settings", "events", "latest_metrics", "metrics", "jobs", "experiments", "datasets"):
        op.drop_table(table)
