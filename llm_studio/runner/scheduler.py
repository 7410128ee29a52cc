"""The scheduler: one per workspace; starts queued jobs when resources are free and reconciles the rest.

It runs as an asyncio task inside the UI (`run_async`) or alone as `llm-studio worker` (`run_forever`).
A file lock (flock) makes it the only active scheduler; the OS drops the lock when its holder dies, so a
new scheduler takes over safely and adopts the jobs that are still running.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from llm_studio import paths
from llm_studio.runner import process, resources
from llm_studio.settings import secret_env
from llm_studio.store import Store
from llm_studio.store.records import JobRecord

log = logging.getLogger(__name__)

HEARTBEAT_STALE_S = 8.0        # workers beat every ~2 s
STOP_GRACE_S = 60.0            # SIGKILL after this long in `stopping`
START_GRACE_S = 30.0           # a worker may take this long to write its first heartbeat
TERMINAL = ("stopped", "finished", "failed", "interrupted")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _age_s(t: datetime | None) -> float:
    return float("inf") if t is None else (_now() - t).total_seconds()


class Scheduler:
    def __init__(self, store: Store | None = None, interval_s: float = 1.0):
        self.store = store or Store()
        self.interval_s = interval_s
        self._lock_file: IO[str] | None = None

    # --- the lock -------------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Become the active scheduler of this workspace; False if another live process is."""
        if self._lock_file:
            return True
        path = paths.home() / "scheduler.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f
        return True

    def release(self) -> None:
        if self._lock_file:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # --- one pass -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Reconcile running jobs, escalate overdue stops, then start what fits."""
        if not self.acquire():
            return
        exit_codes = process.reap_children()
        for job in self.store.list_jobs(status=("running", "stopping")):
            self._reconcile(job, exit_codes)
        self._start_queued()

    def _reconcile(self, job: JobRecord, exit_codes: dict[int, int]) -> None:
        alive = process.is_running(job.pid, job.pid_start_time)
        if alive:
            if job.status == "stopping" and _age_s(_stop_requested(job)) > STOP_GRACE_S:
                log.warning("job %s ignored SIGTERM for %.0f s: SIGKILL", job.id, STOP_GRACE_S)
                process.signal_group(job.pid, signal.SIGKILL)
            return
        exp = self.store.get_experiment(job.experiment_name)
        code = exit_codes.get(job.pid or -1)
        if exp.status in TERMINAL:  # the worker recorded its own end
            self.store.update_job(job.id, status=exp.status, finished_at=_now(), exit_code=code)
            return
        if _age_s(job.heartbeat_at or job.started_at) < HEARTBEAT_STALE_S and code is None:
            return  # maybe just gone; give a last heartbeat time to land
        exp_dir = Path(exp.config_path).parent
        log_tail = process.tail(exp_dir / "train.log", 15)
        resumable = any((exp_dir / "checkpoints").glob("step-*"))
        status = "interrupted" if resumable else "failed"
        how = f"exit code {code}" if code is not None else "the worker process disappeared"
        reason = f"{how}; last log lines:\n{log_tail}" if log_tail else how
        self.store.update_job(job.id, status=status, finished_at=_now(), exit_code=code)
        self.store.update_experiment(job.experiment_name, status=status, finished_at=_now(), error=reason)
        self.store.add_event(job.experiment_name, "error", f"run {status}: {how}")

    def _start_queued(self) -> None:
        running = self.store.list_jobs(status=("running", "stopping"))
        gpus = resources.detect_gpus()
        busy_gpus = {g for j in running for g in j.resources.get("gpus", [])}
        busy_cpu = sum(j.resources.get("cpu_slots", 0) for j in running)
        slots = resources.cpu_slots(self.store.get_setting("cpu_slots"))
        for job in self.store.list_jobs(status="queued"):
            request = job.args.get("request") or {"cpu_slots": 1}
            try:
                granted = resources.assign(request, busy_gpus, busy_cpu, slots, gpus)
            except ValueError as e:
                self._fail_unstartable(job, str(e))
                continue
            if granted is None:
                continue  # strict priority/FIFO would block; smaller jobs may still fit
            if self._launch(job, granted, slots):
                busy_gpus.update(granted.get("gpus", []))
                busy_cpu += granted.get("cpu_slots", 0)

    def _launch(self, job: JobRecord, granted: dict, cpu_slots: int) -> bool:
        exp = self.store.get_experiment(job.experiment_name)
        exp_dir = Path(exp.config_path).parent
        env = dict(os.environ, LLM_STUDIO_HOME=str(paths.home()), LLM_STUDIO_JOB_ID=str(job.id),
                   PYTHONUNBUFFERED="1")
        env.update(secret_env())  # tokens from Settings reach the worker only through its environment
        if "gpus" in granted:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in granted["gpus"])
        if "cpu_slots" in granted and cpu_slots > 1 and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(resources.threads_per_cpu_slot(cpu_slots))  # the config's num_threads wins
        if job.args.get("resume"):
            args = process.python_cli("train", "--resume", exp.name)
        else:
            args = process.python_cli("train", str(exp.config_path), "--name", exp.name)
        # claim first so a second scheduler (or tick) can never start the same job twice
        if not self.store.claim_job(job.id, pid=0, pid_start_time=0.0, resources=granted):
            return False
        pid, created = process.spawn_detached(args, exp_dir / "train.log", env)
        self.store.update_job(job.id, pid=pid, pid_start_time=created, heartbeat_at=_now())
        self.store.update_experiment(exp.name, status="running", started_at=_now(), error=None)
        self.store.add_event(exp.name, "info", f"started worker pid {pid} on {granted}")
        return True

    def _fail_unstartable(self, job: JobRecord, reason: str) -> None:
        self.store.update_job(job.id, status="failed", finished_at=_now())
        self.store.update_experiment(job.experiment_name, status="failed", error=reason)

    # --- loops ----------------------------------------------------------------------------------
    def run_forever(self, stop_after_s: float | None = None) -> None:
        """Tick until interrupted (or for `stop_after_s`); the standalone `llm-studio worker`."""
        t0 = time.monotonic()
        try:
            while stop_after_s is None or time.monotonic() - t0 < stop_after_s:
                try:
                    self.tick()
                except Exception:  # one bad pass must not end the scheduler
                    log.exception("scheduler pass failed")
                time.sleep(self.interval_s)
        finally:
            self.release()

    async def run_async(self) -> None:
        """The same loop as an asyncio task (inside the UI): each pass runs in a thread."""
        try:
            while True:
                try:
                    await asyncio.to_thread(self.tick)
                except Exception:
                    log.exception("scheduler pass failed")
                await asyncio.sleep(self.interval_s)
        finally:
            self.release()


def scheduler_active() -> bool:
    """True if some live process holds this workspace's scheduler lock."""
    path = paths.home() / "scheduler.lock"
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _stop_requested(job: JobRecord) -> datetime | None:
    raw = job.args.get("stop_requested_at")
    return datetime.fromisoformat(raw) if raw else None
