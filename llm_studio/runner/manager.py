"""Experiment commands behind the CLI and the UI: start, stop, resume, cancel, move, delete, clone, show, list.

Every command validates first and changes nothing on a user error. Running work belongs to worker
processes; these functions only write the store and send signals, so they are fast enough for a UI handler
(called through `q.run`).
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from llm_studio import paths
from llm_studio.config import ConfigError, ExperimentConfig, load_config, save_config
from llm_studio.errors import LLMStudioError, NameTakenError, NotFoundError
from llm_studio.runner import process, resources
from llm_studio.store import Store
from llm_studio.store.records import ExperimentRecord, JobRecord

ACTIVE = ("queued", "running", "stopping")


@dataclass(frozen=True)
class ExperimentView:
    """An experiment as the user sees it: the store row, its job, and `broken` with a reason if unreadable."""
    record: ExperimentRecord
    job: JobRecord | None = None
    status: str = ""
    broken_reason: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name


def experiment_dir(name: str) -> Path:
    return paths.experiments_dir() / paths.check_name(name, "experiment name")


def _request(cfg: ExperimentConfig) -> dict[str, Any]:
    env = cfg.environment
    return resources.wanted(env.device, env.num_processes, env.gpus, resources.detect_gpus())


def _queue(store: Store, name: str, cfg: ExperimentConfig, resume: bool = False) -> JobRecord:
    return store.enqueue_job(name, kind="train", args={"resume": resume, "request": _request(cfg)})


def start(config_path: str | Path, name: str | None = None, overrides: Iterable[str] = (),
          store: Store | None = None, parent_name: str | None = None) -> ExperimentRecord:
    """Validate the config, write it into the experiment folder and queue a training job."""
    cfg = load_config(config_path, list(overrides))  # ConfigError before anything is queued
    return create_and_queue(cfg, name or paths.default_experiment_name(config_path), store=store, parent_name=parent_name)


def create_and_queue(cfg: ExperimentConfig, name: str, store: Store | None = None,
                     parent_name: str | None = None) -> ExperimentRecord:
    store = store or Store()
    folder = experiment_dir(name)
    try:
        store.get_experiment(name)
        raise NameTakenError(f"experiment '{name}' already exists: pick another --name")
    except NotFoundError:
        pass
    if folder.exists():
        raise NameTakenError(f"experiment folder {folder} already exists: pick another --name")
    _require_dataset(cfg.dataset.name, store)
    folder.mkdir(parents=True)
    try:
        save_config(cfg, folder / "config.yaml")
        rec = store.create_experiment(name, str(folder / "config.yaml"), dataset_name=cfg.dataset.name,
                                      parent_name=parent_name, status="queued")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _queue(store, name, cfg)
    store.add_event(name, "info", "queued")
    return rec


def _require_dataset(name: str, store: Store) -> None:
    """The dataset must exist before a run is queued (the sample registers itself on first use)."""
    from llm_studio.data import ensure_sample_dataset

    if name == "sample-qa":
        ensure_sample_dataset(store=store)
    else:
        store.get_dataset(name)


def _view(store: Store, rec: ExperimentRecord, jobs: dict[str, JobRecord]) -> ExperimentView:
    folder = Path(rec.config_path).parent
    job = jobs.get(rec.name)
    try:
        if not folder.is_dir():
            raise LLMStudioError(f"folder {folder} is missing")
        try:
            load_config(rec.config_path)
        except ConfigError as e:
            raise LLMStudioError(f"config.yaml is unreadable: {e.problems[0][0]}: {e.problems[0][1]}") from None
        summary: dict[str, Any] = {}
        summary_path = folder / "summary.json"
        if summary_path.exists():
            try:
                summary = json.loads(summary_path.read_text())
            except (ValueError, OSError) as e:
                raise LLMStudioError(f"summary.json is corrupt ({e.__class__.__name__})") from None
        return ExperimentView(rec, job, rec.status, None, summary)
    except LLMStudioError as e:
        return ExperimentView(rec, job, "broken", str(e))


def list_experiments(store: Store | None = None) -> list[ExperimentView]:
    """All experiments; one that cannot be read shows as `broken` and never hides the others."""
    store = store or Store()
    jobs: dict[str, JobRecord] = {}
    for j in store.list_jobs(kind="train"):
        jobs.setdefault(j.experiment_name, j)  # list is newest-priority first; keep the first seen
    return [_view(store, rec, jobs) for rec in store.list_experiments()]


def show(name: str, store: Store | None = None) -> ExperimentView:
    store = store or Store()
    rec = store.get_experiment(name)
    jobs = {j.experiment_name: j for j in reversed(store.list_jobs(experiment_name=name, kind="train"))}
    return _view(store, rec, jobs)


def _require(rec: ExperimentRecord, allowed: tuple[str, ...], action: str) -> None:
    if rec.status not in allowed:
        raise LLMStudioError(f"cannot {action} experiment '{rec.name}': it is {rec.status} "
                             f"(only {' / '.join(allowed)})")


def stop(name: str, store: Store | None = None, wait_s: float = 0.0) -> ExperimentRecord:
    """SIGTERM the worker (it saves a checkpoint and ends `stopped`); the scheduler SIGKILLs after a grace."""
    store = store or Store()
    rec = store.get_experiment(name)
    _require(rec, ("running", "stopping", "queued"), "stop")
    job = store.active_job(name)
    if rec.status == "queued" or (job and job.status == "queued"):
        return cancel(name, store)
    if job and job.pid:
        args = dict(job.args, stop_requested_at=datetime.now(timezone.utc).isoformat())
        store.update_job(job.id, status="stopping", args=args)
        store.update_experiment(name, status="stopping")
        process.signal_group(job.pid, signal.SIGTERM)
        store.add_event(name, "info", "stop requested")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and store.get_experiment(name).status in ACTIVE:
        time.sleep(0.5)
    return store.get_experiment(name)


def cancel(name: str, store: Store | None = None) -> ExperimentRecord:
    store = store or Store()
    rec = store.get_experiment(name)
    job = store.active_job(name)
    if not job or job.status != "queued":
        raise LLMStudioError(f"cannot cancel experiment '{name}': it is {rec.status}, not queued (use stop)")
    store.update_job(job.id, status="cancelled", finished_at=datetime.now(timezone.utc))
    # a never-started run goes back to stopped so it can be resumed or deleted
    store.update_experiment(name, status="stopped")
    store.add_event(name, "info", "cancelled while queued")
    return store.get_experiment(name)


def resume(name: str, store: Store | None = None) -> ExperimentRecord:
    store = store or Store()
    rec = store.get_experiment(name)
    _require(rec, ("stopped", "interrupted", "failed", "finished"), "resume")
    cfg = load_config(rec.config_path)
    has_checkpoint = any((Path(rec.config_path).parent / "checkpoints").glob("step-*"))
    store.update_experiment(name, status="queued", error=None, finished_at=None)
    _queue(store, name, cfg, resume=has_checkpoint)
    store.add_event(name, "info", "queued to resume" if has_checkpoint else "queued (no checkpoint: from start)")
    return store.get_experiment(name)


def move(name: str, position: int, store: Store | None = None) -> list[JobRecord]:
    store = store or Store()
    job = store.active_job(name)
    if not job or job.status != "queued":
        raise LLMStudioError(f"cannot move experiment '{name}': it is not queued")
    if position < 1:
        raise LLMStudioError("--to is a 1-based queue position")
    store.move_job(job.id, position)
    return store.list_jobs(status="queued")


def delete(name: str, store: Store | None = None, force: bool = False, wait_s: float = 90.0) -> None:
    """Remove the experiment's folder and rows; refused while it runs unless `force` (stop first)."""
    store = store or Store()
    rec = store.get_experiment(name)
    if rec.status in ("running", "stopping"):
        if not force:
            raise LLMStudioError(f"experiment '{name}' is {rec.status}: stop it first or use --force")
        try:
            rec = stop(name, store, wait_s=wait_s)
        except LLMStudioError:  # the run ended on its own between the two reads: nothing left to stop
            rec = store.get_experiment(name)
            if rec.status in ACTIVE:
                raise
        job = store.active_job(name)
        if job and job.pid and process.is_running(job.pid, job.pid_start_time):
            process.signal_group(job.pid, signal.SIGKILL)
    elif rec.status == "queued":
        cancel(name, store)
    folder = Path(rec.config_path).parent
    store.delete_experiment(name)
    if folder.is_dir() and folder.parent == paths.experiments_dir():
        shutil.rmtree(folder, ignore_errors=True)


def clone(name: str, new_name: str, overrides: Iterable[str] = (), store: Store | None = None
          ) -> ExperimentRecord:
    store = store or Store()
    rec = store.get_experiment(name)
    cfg = load_config(rec.config_path, list(overrides))
    return create_and_queue(cfg, new_name, store=store, parent_name=name)


def logs(name: str, store: Store | None = None, lines: int = 200) -> str:
    store = store or Store()
    rec = store.get_experiment(name)
    return process.tail(Path(rec.config_path).parent / "train.log", lines)


def follow_logs(name: str, store: Store | None = None, poll_s: float = 0.5):
    """Yield new log text until the experiment is no longer active (and the log is drained)."""
    store = store or Store()
    path = Path(store.get_experiment(name).config_path).parent / "train.log"
    pos = 0
    while True:
        active = store.get_experiment(name).status in ACTIVE
        if path.exists():
            with open(path, "r", encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            if chunk:
                yield chunk
        if not active:
            return
        time.sleep(poll_s)


def as_dict(view: ExperimentView) -> dict[str, Any]:
    r = view.record
    job = view.job
    return {
        "name": r.name, "status": view.status, "dataset": r.dataset_name, "progress": r.progress,
        "step": r.step, "total_steps": r.total_steps, "eta_s": r.eta_s, "error": r.error,
        "broken_reason": view.broken_reason, "parent": r.parent_name,
        "created_at": r.created_at, "started_at": r.started_at, "finished_at": r.finished_at,
        "pid": job.pid if job else None, "job_status": job.status if job else None,
        "metrics": r.latest_metrics, "folder": str(Path(r.config_path).parent),
    }


def config_yaml(name: str, store: Store | None = None) -> str:
    """The config that the run actually used (its saved config.yaml), never the current form."""
    store = store or Store()
    return Path(store.get_experiment(name).config_path).read_text(encoding="utf-8")


__all__ = ["ExperimentView", "start", "create_and_queue", "list_experiments", "show", "stop", "cancel", "resume",
           "move", "delete", "clone", "logs", "follow_logs", "as_dict", "config_yaml",
           "experiment_dir"]
