"""Metric history and the latest-metrics summary: batched writes, cursor polling, downsampled series.

Polling with `after_id` is safe under concurrent writers because SQLite runs one write transaction at a
time: a row's id is assigned inside its transaction, so every id a reader has not seen yet is larger
than every id it has.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from llm_studio.errors import StoreError
from llm_studio.store.database import StoreBase
from llm_studio.store.models import LatestMetric, Metric
from llm_studio.store.records import MetricPoint

_METRICS = Metric.__table__
_LATEST = LatestMetric.__table__
_COLUMNS = (_METRICS.c.id, _METRICS.c.name, _METRICS.c.step, _METRICS.c.epoch, _METRICS.c.value, _METRICS.c.time)

# Evenly spaced rows of one series, first and last included: row rn (0-based, by step) is kept when it
# is the first of its bucket, bucket = rn * (k - 1) / (n - 1) in integer division (k kept out of n).
# The window runs over the (experiment_id, name, step) index only; the join reads just the k kept rows.
_SERIES_SQL = text(
    """
    WITH ranked AS (
        SELECT id, row_number() OVER (ORDER BY step, id) - 1 AS rn
        FROM metrics WHERE experiment_id = :experiment_id AND name = :name
    )
    SELECT m.id, m.name, m.step, m.epoch, m.value, m.time
    FROM ranked JOIN metrics AS m ON m.id = ranked.id
    WHERE ranked.rn = 0 OR (ranked.rn * (:k - 1)) / (:n - 1) > ((ranked.rn - 1) * (:k - 1)) / (:n - 1)
    ORDER BY m.step, m.id
    """
)

# The latest point per name (highest step, then the later insert), as log_metrics keeps it.
_REBUILD_LATEST_SQL = text(
    """
    INSERT INTO latest_metrics (experiment_id, name, step, value, time)
    SELECT experiment_id, name, step, value, time FROM (
        SELECT experiment_id, name, step, value, time,
               row_number() OVER (PARTITION BY name ORDER BY step DESC, id DESC) AS rn
        FROM metrics WHERE experiment_id = :experiment_id
    ) WHERE rn = 1
    """
)


def _value(value: float | None) -> float:
    return math.nan if value is None else value  # SQLite stores NaN as NULL


def _point(row: Sequence) -> MetricPoint:
    return MetricPoint(name=row[1], step=row[2], value=_value(row[4]), epoch=row[3], time=row[5], id=row[0])


def latest_by_experiment(session: Session, experiment_ids: list[int]) -> dict[int, dict[str, float]]:
    """{experiment id: {metric name: latest value}} in one query (for experiment lists, never N+1)."""
    out: dict[int, dict[str, float]] = {i: {} for i in experiment_ids}
    if not experiment_ids:
        return out
    rows = session.execute(
        select(_LATEST.c.experiment_id, _LATEST.c.name, _LATEST.c.value)
        .where(_LATEST.c.experiment_id.in_(experiment_ids))
        .order_by(_LATEST.c.experiment_id, _LATEST.c.name)
    )
    for experiment_id, name, value in rows:
        out[experiment_id][name] = _value(value)
    return out


class MetricQueries(StoreBase):
    """Metric methods of `Store`."""

    def log_metrics(self, experiment_name: str, points: Iterable[MetricPoint]) -> None:
        """Append points in one transaction and update the latest-metrics summary.

        Latest = highest step per name; on equal steps the later insert wins. Points without a time get now.
        """
        points = list(points)
        now = time.time()
        rows = [
            {"name": p.name, "step": int(p.step), "epoch": None if p.epoch is None else float(p.epoch),
             "value": float(p.value), "time": now if p.time is None else float(p.time)}
            for p in points
        ]
        latest: dict[str, dict] = {}
        for row in rows:
            if row["name"] not in latest or row["step"] >= latest[row["name"]]["step"]:
                latest[row["name"]] = row
        with self._session(write=True) as s:
            experiment_id = self._experiment(s, experiment_name).id
            if not rows:
                return
            for row in rows:
                row["experiment_id"] = experiment_id
            s.execute(insert(_METRICS), rows)  # one executemany
            upsert = sqlite_insert(_LATEST)
            upsert = upsert.on_conflict_do_update(
                index_elements=[_LATEST.c.experiment_id, _LATEST.c.name],
                set_={"step": upsert.excluded.step, "value": upsert.excluded.value, "time": upsert.excluded.time},
                where=upsert.excluded.step >= _LATEST.c.step,
            )
            s.execute(upsert, [
                {k: row[k] for k in ("experiment_id", "name", "step", "value", "time")} for row in latest.values()
            ])

    def delete_metrics_after(self, experiment_name: str, step: int) -> int:
        """Drop the points of steps after `step` and rebuild the latest-metrics summary; the count dropped.

        A run resumed from step N's checkpoint logs steps N+1.. again: without this, a run killed after
        its last checkpoint would show those steps twice."""
        with self._session(write=True) as s:
            experiment_id = self._experiment(s, experiment_name).id
            dropped = s.execute(delete(_METRICS).where(_METRICS.c.experiment_id == experiment_id,
                                                       _METRICS.c.step > step)).rowcount
            if dropped:
                s.execute(delete(_LATEST).where(_LATEST.c.experiment_id == experiment_id))
                s.execute(_REBUILD_LATEST_SQL, {"experiment_id": experiment_id})
            return dropped

    def get_metrics(
        self,
        experiment_name: str,
        names: str | Iterable[str] | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[MetricPoint]:
        """Points with id > `after_id` in insert order. Live charts pass the last id they saw."""
        with self._session() as s:
            experiment_id = self._experiment(s, experiment_name).id
            query = select(*_COLUMNS).where(_METRICS.c.experiment_id == experiment_id, _METRICS.c.id > after_id)
            if names is not None:
                query = query.where(_METRICS.c.name.in_([names] if isinstance(names, str) else list(names)))
            query = query.order_by(_METRICS.c.id)
            if limit is not None:
                query = query.limit(limit)
            return [_point(row) for row in s.execute(query)]

    def get_metric_series(self, experiment_name: str, name: str, max_points: int | None = None) -> list[MetricPoint]:
        """One metric ordered by step; longer than `max_points` -> evenly downsampled, first and last kept."""
        if max_points is not None and max_points < 2:
            raise StoreError(f"max_points must be at least 2 (first and last point), got {max_points}")
        with self._session() as s:
            experiment_id = self._experiment(s, experiment_name).id
            where = (_METRICS.c.experiment_id == experiment_id, _METRICS.c.name == name)
            n = s.execute(select(func.count()).select_from(_METRICS).where(*where)).scalar_one()
            if max_points is None or n <= max_points:
                rows = s.execute(select(*_COLUMNS).where(*where).order_by(_METRICS.c.step, _METRICS.c.id))
            else:
                rows = s.execute(_SERIES_SQL, {"experiment_id": experiment_id, "name": name, "k": max_points, "n": n})
            return [_point(row) for row in rows]

    def metric_names(self, experiment_name: str) -> list[str]:
        """Names of the metrics logged for the experiment, sorted."""
        with self._session() as s:
            experiment_id = self._experiment(s, experiment_name).id
            query = select(_LATEST.c.name).where(_LATEST.c.experiment_id == experiment_id).order_by(_LATEST.c.name)
            return list(s.scalars(query))

    def latest_metrics(self, experiment_name: str) -> dict[str, float]:
        """{name: value at the highest step} from the summary table."""
        with self._session() as s:
            experiment_id = self._experiment(s, experiment_name).id
            return latest_by_experiment(s, [experiment_id])[experiment_id]
