"""The Store: every read and write of the studio's state, addressed by names, returning plain records.

    from llm_studio.store import Store
    store = Store()                       # $LLM_STUDIO_HOME/llm_studio.db, migrated on open
    store.create_experiment("run-1", "experiments/run-1/config.yaml", dataset_name="sample")
    store.log_metrics("run-1", [MetricPoint("train/loss", step=1, value=2.3)])

Each method is one short transaction. Unknown names raise NotFoundError, duplicates NameTakenError,
other database failures StoreError. Metric methods live in metrics.py, job methods in jobs.py.
A Store may be shared by threads; each process opens its own (never pass one across fork).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from llm_studio import paths
from llm_studio.errors import NameTakenError, NotFoundError, StoreError
from llm_studio.store.jobs import JobQueries
from llm_studio.store.metrics import MetricQueries, latest_by_experiment
from llm_studio.store.models import EVENT_LEVELS, Dataset, Event, Experiment, Setting
from llm_studio.store.records import EXPERIMENT_STATUSES, DatasetRecord, EventRecord, ExperimentRecord

EXPERIMENT_FIELDS = frozenset({
    "status", "started_at", "finished_at", "progress", "step", "total_steps", "eta_s", "error",
    "config_path", "dataset_name", "parent_name",
})


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_status(status: str) -> None:
    if status not in EXPERIMENT_STATUSES:
        raise StoreError(f"unknown experiment status {status!r}: use one of {', '.join(EXPERIMENT_STATUSES)}")


class Store(JobQueries, MetricQueries):
    """The studio's database. `Store(db_path=None)` opens (and migrates) $LLM_STUDIO_HOME/llm_studio.db."""

    # -- datasets ---------------------------------------------------------------------------------------

    def add_dataset(
        self,
        name: str,
        path: str,
        format: str,
        columns: dict[str, Any],
        n_train: int,
        n_valid: int,
        stats: dict[str, Any] | None = None,
    ) -> DatasetRecord:
        paths.check_name(name, "dataset name")
        with self._session(write=True) as s:
            if s.scalars(select(Dataset.id).where(Dataset.name == name)).first() is not None:
                raise NameTakenError(f"dataset {name!r} already exists")
            row = Dataset(name=name, path=str(path), format=format, columns=dict(columns or {}), n_train=int(n_train),
                          n_valid=int(n_valid), stats=dict(stats or {}), created_at=_now())
            s.add(row)
            s.flush()
            return row.to_record()

    def get_dataset(self, name: str) -> DatasetRecord:
        with self._session() as s:
            row = s.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()
            if row is None:
                raise NotFoundError(f"dataset {name!r} does not exist")
            return row.to_record()

    def list_datasets(self) -> list[DatasetRecord]:
        """All datasets, newest first."""
        with self._session() as s:
            return [row.to_record() for row in s.scalars(select(Dataset).order_by(Dataset.id.desc()))]

    def delete_dataset(self, name: str) -> None:
        """Forget a dataset (its files are the caller's). Experiments keep its name."""
        with self._session(write=True) as s:
            if s.execute(delete(Dataset).where(Dataset.name == name)).rowcount == 0:
                raise NotFoundError(f"dataset {name!r} does not exist")

    # -- experiments ------------------------------------------------------------------------------------

    def create_experiment(
        self,
        name: str,
        config_path: str,
        dataset_name: str | None = None,
        parent_name: str | None = None,
        status: str = "queued",
    ) -> ExperimentRecord:
        paths.check_name(name, "experiment name")
        _check_status(status)
        with self._session(write=True) as s:
            if s.scalars(select(Experiment.id).where(Experiment.name == name)).first() is not None:
                raise NameTakenError(f"experiment {name!r} already exists")
            row = Experiment(name=name, config_path=str(config_path), dataset_name=dataset_name,
                             parent_name=parent_name, status=status, created_at=_now(),
                             progress=0.0, step=0, total_steps=0)
            s.add(row)
            s.flush()
            return row.to_record()

    def get_experiment(self, name: str) -> ExperimentRecord:
        """The experiment with its latest metrics."""
        with self._session() as s:
            row = self._experiment(s, name)
            return row.to_record(latest_by_experiment(s, [row.id])[row.id])

    def list_experiments(self, status: str | tuple[str, ...] | None = None) -> list[ExperimentRecord]:
        """Experiments newest first, each with its latest metrics (two queries, whatever the count)."""
        query = select(Experiment).order_by(Experiment.id.desc())
        if status is not None:
            query = query.where(Experiment.status.in_([status] if isinstance(status, str) else list(status)))
        with self._session() as s:
            rows = list(s.scalars(query))
            latest = latest_by_experiment(s, [row.id for row in rows])
            return [row.to_record(latest[row.id]) for row in rows]

    def update_experiment(self, name: str, **fields: Any) -> ExperimentRecord:
        """Set experiment columns (names in EXPERIMENT_FIELDS) and return the updated experiment."""
        unknown = sorted(set(fields) - EXPERIMENT_FIELDS)
        if unknown:
            raise StoreError(
                f"unknown experiment field(s) {', '.join(unknown)}: use {', '.join(sorted(EXPERIMENT_FIELDS))}"
            )
        if "status" in fields:
            _check_status(fields["status"])
        with self._session(write=True) as s:
            row = self._experiment(s, name)
            for key, value in fields.items():
                setattr(row, key, value)
            s.flush()
            s.expire(row)  # read back what was stored (datetimes normalised to UTC)
            return row.to_record(latest_by_experiment(s, [row.id])[row.id])

    def delete_experiment(self, name: str) -> None:
        """Delete the experiment with its jobs, metrics, latest metrics and events (foreign-key cascade)."""
        with self._session(write=True) as s:
            if s.execute(delete(Experiment).where(Experiment.name == name)).rowcount == 0:
                raise NotFoundError(f"experiment {name!r} does not exist")

    # -- events -----------------------------------------------------------------------------------------

    def add_event(self, experiment_name: str | None, level: str, message: str) -> EventRecord:
        """Record something the user should see; `experiment_name=None` for studio-wide events."""
        if level not in EVENT_LEVELS:
            raise StoreError(f"unknown event level {level!r}: use one of {', '.join(EVENT_LEVELS)}")
        with self._session(write=True) as s:
            experiment_id = None if experiment_name is None else self._experiment(s, experiment_name).id
            row = Event(experiment_id=experiment_id, time=_now(), level=level, message=str(message))
            s.add(row)
            s.flush()
            return row.to_record(experiment_name)

    def list_events(self, experiment_name: str | None = None, limit: int | None = 100) -> list[EventRecord]:
        """Events newest first: one experiment's, or all of them when `experiment_name` is None."""
        query = (select(Event, Experiment.name).outerjoin(Experiment, Event.experiment_id == Experiment.id)
                 .order_by(Event.id.desc()))
        if limit is not None:
            query = query.limit(limit)
        with self._session() as s:
            if experiment_name is not None:
                query = query.where(Event.experiment_id == self._experiment(s, experiment_name).id)
            return [event.to_record(name) for event, name in s.execute(query)]

    # -- settings (non-secret) --------------------------------------------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        with self._session() as s:
            row = s.get(Setting, key)
            return default if row is None else row.value

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value. Never a secret: tokens come from the environment."""
        if not isinstance(key, str) or not key:
            raise StoreError(f"setting key must be a non-empty string, got {key!r}")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise StoreError(f"setting {key!r} must be JSON-serialisable: {e}") from e
        upsert = sqlite_insert(Setting.__table__).values(key=key, value=value)
        upsert = upsert.on_conflict_do_update(index_elements=["key"], set_={"value": upsert.excluded.value})
        with self._session(write=True) as s:
            s.execute(upsert)
