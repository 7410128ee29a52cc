"""The job queue: enqueue, claim (atomically), heartbeat, reorder. Policy (what runs when) is the runner's.

Queue order is (priority desc, position, id). Every write runs in a BEGIN IMMEDIATE transaction, so
"max position + 1" and "claim only if still queued" cannot race between processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from llm_studio.errors import NotFoundError, StoreError
from llm_studio.store.database import StoreBase
from llm_studio.store.models import Experiment, Job
from llm_studio.store.records import JOB_KINDS, JOB_STATUSES, JobRecord

ACTIVE_JOB_STATUSES = ("queued", "running", "stopping")
JOB_FIELDS = frozenset({
    "status", "priority", "position", "pid", "pid_start_time", "resources", "args",
    "heartbeat_at", "started_at", "finished_at", "exit_code",
})
_QUEUE_ORDER = (Job.priority.desc(), Job.position, Job.id)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise StoreError(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")


def _records(session: Session, query: Select) -> list[JobRecord]:
    return [job.to_record(name) for job, name in session.execute(query)]


def _with_name() -> Select:
    return select(Job, Experiment.name).join(Experiment, Job.experiment_id == Experiment.id)


class JobQueries(StoreBase):
    """Job methods of `Store`."""

    def _job_record(self, session: Session, job_id: int) -> JobRecord:
        found = _records(session, _with_name().where(Job.id == job_id))
        if not found:
            raise NotFoundError(f"job {job_id} does not exist")
        return found[0]

    def enqueue_job(
        self,
        experiment_name: str,
        kind: str = "train",
        priority: int = 0,
        resources: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Queue a job at the end of its priority (position = current max + 1)."""
        _check_choice("job kind", kind, JOB_KINDS)
        with self._session(write=True) as s:
            experiment = self._experiment(s, experiment_name)
            last = s.execute(select(func.max(Job.position))).scalar_one_or_none() or 0
            job = Job(kind=kind, experiment_id=experiment.id, status="queued", priority=int(priority),
                      position=last + 1, resources=dict(resources or {}), args=dict(args or {}), created_at=_now())
            s.add(job)
            s.flush()
            return job.to_record(experiment.name)

    def get_job(self, job_id: int) -> JobRecord:
        with self._session() as s:
            return self._job_record(s, job_id)

    def list_jobs(
        self,
        status: str | Iterable[str] | None = None,
        experiment_name: str | None = None,
        kind: str | None = None,
    ) -> list[JobRecord]:
        """Jobs in queue order (priority desc, position, id), optionally filtered."""
        query = _with_name()
        if status is not None:
            query = query.where(Job.status.in_([status] if isinstance(status, str) else list(status)))
        if kind is not None:
            query = query.where(Job.kind == kind)
        with self._session() as s:
            if experiment_name is not None:
                query = query.where(Job.experiment_id == self._experiment(s, experiment_name).id)
            return _records(s, query.order_by(*_QUEUE_ORDER))

    def active_job(self, experiment_name: str, kind: str = "train") -> JobRecord | None:
        """The newest queued/running/stopping job of that kind, if any."""
        with self._session() as s:
            experiment_id = self._experiment(s, experiment_name).id
            found = _records(s, _with_name().where(
                Job.experiment_id == experiment_id, Job.kind == kind, Job.status.in_(ACTIVE_JOB_STATUSES),
            ).order_by(Job.id.desc()).limit(1))
            return found[0] if found else None

    def update_job(self, job_id: int, **fields: Any) -> JobRecord:
        """Set job columns (names in JOB_FIELDS) and return the updated job."""
        unknown = sorted(set(fields) - JOB_FIELDS)
        if unknown:
            raise StoreError(f"unknown job field(s) {', '.join(unknown)}: use {', '.join(sorted(JOB_FIELDS))}")
        if "status" in fields:
            _check_choice("job status", fields["status"], JOB_STATUSES)
        with self._session(write=True) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id} does not exist")
            for key, value in fields.items():
                setattr(job, key, value)
            s.flush()
            s.expire(job)  # read back what was stored (datetimes normalised to UTC)
            return self._job_record(s, job_id)

    def claim_job(self, job_id: int, pid: int, pid_start_time: float | None, resources: dict[str, Any]) -> bool:
        """Mark a queued job running for `pid`. False if it is no longer queued (claimed, cancelled, deleted)."""
        now = _now()
        with self._session(write=True) as s:
            result = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="running", pid=pid, pid_start_time=pid_start_time, resources=dict(resources or {}),
                        started_at=now, heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def heartbeat(
        self,
        job_id: int,
        progress: float | None = None,
        step: int | None = None,
        total_steps: int | None = None,
        eta_s: float | None = None,
    ) -> str:
        """Record a sign of life and the experiment's progress in one transaction.

        Returns the job's status, so a worker sees a stop request ("stopping") without another query.
        """
        progress_fields = {k: v for k, v in
                           {"progress": progress, "step": step, "total_steps": total_steps, "eta_s": eta_s}.items()
                           if v is not None}
        with self._session(write=True) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id} does not exist")
            job.heartbeat_at = _now()
            if progress_fields:
                s.execute(update(Experiment).where(Experiment.id == job.experiment_id).values(**progress_fields)
                          .execution_options(synchronize_session=False))
            return job.status

    def move_job(self, job_id: int, position: int) -> JobRecord:
        """Move a queued job to 1-based `position` among the queued jobs of its priority (clamped to the end).

        The group's existing position values are reassigned in the new order, so other groups are untouched.
        """
        if position < 1:
            raise StoreError(f"queue position must be 1 or more, got {position}")
        with self._session(write=True) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id} does not exist")
            if job.status != "queued":
                raise StoreError(f"job {job_id} is {job.status}, only queued jobs can be moved")
            group = list(s.scalars(select(Job).where(Job.status == "queued", Job.priority == job.priority)
                                   .order_by(Job.position, Job.id)))
            slots = [j.position for j in group]
            if len(set(slots)) < len(slots):  # ties (positions set by hand): renumber so the order is exact
                slots = list(range(slots[0], slots[0] + len(slots)))
            group.remove(job)
            group.insert(min(position, len(group) + 1) - 1, job)
            for j, slot in zip(group, slots):
                j.position = slot
            s.flush()
            return self._job_record(s, job_id)
