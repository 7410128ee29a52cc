"""Entry of a training run: `train_command(config_path, name, overrides, resume) -> exit code`.

    llm-studio train CONFIG [--name NAME] [--set key=value ...]     # a new run (name: <stem>-<time>)
    llm-studio train --resume NAME                                  # continue from the latest checkpoint
    python -m llm_studio.train ...                                  # the same flags, as a module

More than one process (environment.num_processes > 1, or several GPUs): after the checks below, the
command relaunches itself under torchrun with the resolved name, one DDP rank per process; rank 0
writes everything (train/distributed.py).

Everything that can be wrong with the request (config fields, options this machine cannot run, Neptune
token, experiment name, dataset) is checked first and raises `LLMStudioError` before anything exists:
the CLI prints it as one line and exits 2. Then the experiment folder and store row are created and
the run ends as one of
    finished  exit 0
    stopped   exit 0   SIGTERM (or Ctrl-C, or the runner's `stopping`): the current step finishes,
                       a checkpoint is saved
    failed    exit 1   an exception: its message in the store and summary.json, traceback in train.log
The worker the runner spawns is this same command (env LLM_STUDIO_JOB_ID tells us the job); it may
find its experiment row already `queued` or `running`, which is then ours to use.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from llm_studio.config import load_config, save_config
from llm_studio.config.schema import ExperimentConfig
from llm_studio.errors import ConfigError, LLMStudioError, NameTakenError, NotFoundError
from llm_studio.paths import atomic_write_text, check_name, default_experiment_name, experiments_dir

STOP_AFTER_STEP_ENV = "LLM_STUDIO_STOP_AFTER_STEP"
JOB_ID_ENV = "LLM_STUDIO_JOB_ID"


@dataclass
class RunRequest:
    """A checked request: safe to create the experiment and start."""
    cfg: ExperimentConfig
    name: str
    exp_dir: Path
    store: Any
    existing: Any                 # the ExperimentRecord if the row exists already
    resume_from: Path | None      # checkpoint folder to continue from
    resuming: bool
    job_id: str | None


def train_command(config_path: str | None, name: str | None, overrides: list[str], resume: str | None) -> int:
    """Run one experiment in the foreground; the exit code (0 finished/stopped, 1 failed).

    Raises LLMStudioError (ConfigError, NameTakenError, NotFoundError...) for a request that cannot
    start; nothing has been created then.
    """
    from llm_studio.train import distributed

    req = prepare(config_path, name, overrides or [], resume)
    if distributed.should_relaunch(req.cfg):  # more than one process: the same command under torchrun
        args = distributed.train_args(config_path, req.name, overrides or [], resume)
        return distributed.relaunch(req.cfg, args, req.store, req.name)
    return execute(req)


# --- checks (nothing is created here) --------------------------------------------------------------

def prepare(config_path: str | None, name: str | None, overrides: list[str], resume: str | None) -> RunRequest:
    from llm_studio.store import Store

    job_id = os.environ.get(JOB_ID_ENV) or None
    if resume:
        if config_path:
            raise LLMStudioError("give either a CONFIG file or --resume NAME, not both")
        if overrides:
            raise LLMStudioError("--set cannot change a resumed run (its curve would not continue); "
                                 "clone the experiment to change settings")
        if name and name != resume:
            raise LLMStudioError("--name and --resume name different experiments")
        name = check_name(resume, "experiment name")
        exp_dir = experiments_dir() / name
        source = exp_dir / "config.yaml"
        if not source.is_file():
            raise NotFoundError(f"experiment {name!r} has no {source}: nothing to resume")
        cfg = load_config(source)
    else:
        if not config_path:
            raise LLMStudioError("give a CONFIG file to train, or --resume NAME")
        cfg = load_config(config_path, overrides)  # every bad field, named
        name = check_name(name or default_experiment_name(config_path), "experiment name")
        exp_dir = experiments_dir() / name
        source = Path(config_path)
    _check_machine(cfg, str(source))

    store = Store()
    try:
        existing = store.get_experiment(name)
    except NotFoundError:
        existing = None
    ours = _launched_for(store, job_id, name)
    resume_from = None
    if resume:
        if existing is None:
            raise NotFoundError(f"experiment {name!r} does not exist")
        if existing.status in ("running", "stopping") and not ours:
            raise LLMStudioError(f"experiment {name!r} is {existing.status}: stop it before resuming")
        from llm_studio.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(exp_dir / "checkpoints")
        resume_from = latest.path if latest else None
    elif existing is not None and existing.status != "queued" and not ours:
        raise NameTakenError(f"experiment {name!r} already exists ({existing.status}): pick another --name, "
                             f"or continue it with --resume {name}")
    elif existing is None and ((exp_dir / "checkpoints").exists() or (exp_dir / "summary.json").exists()):
        raise NameTakenError(f"experiment folder {exp_dir} already holds a run: pick another --name")
    _require_dataset(cfg, store)
    return RunRequest(cfg=cfg, name=name, exp_dir=exp_dir, store=store, existing=existing,
                      resume_from=resume_from, resuming=bool(resume), job_id=job_id)


def _check_machine(cfg: ExperimentConfig, source: str) -> None:
    """Options this machine cannot run fail here, before any work, naming the field."""
    from llm_studio.models.load import hardware_problems
    from llm_studio.tracking.reporter import neptune_problems

    problems = hardware_problems(cfg) + neptune_problems(cfg)
    if problems:
        raise ConfigError(problems, source)


def _launched_for(store: Any, job_id: str | None, name: str) -> bool:
    """True if the runner started this process for experiment `name` (its row is then ours in any state)."""
    if not job_id:
        return False
    try:
        return store.get_job(int(job_id)).experiment_name == name
    except (LLMStudioError, ValueError):
        return False


def _require_dataset(cfg: ExperimentConfig, store: Any) -> None:
    from llm_studio.data import SAMPLE_NAME, ensure_sample_dataset

    name = cfg.dataset.name
    if name == SAMPLE_NAME:
        ensure_sample_dataset(store=store)  # the shipped sample registers itself on first use
        return
    try:
        store.get_dataset(name)
    except NotFoundError:
        raise ConfigError([("dataset.name", f"no dataset named {name!r}: import one with "
                                            "`llm-studio datasets import FILE --name NAME`")]) from None


# --- the run ---------------------------------------------------------------------------------------

def execute(req: RunRequest) -> int:
    from llm_studio.tracking.reporter import NeptuneSink, Reporter
    from llm_studio.train import distributed
    from llm_studio.train.recipe import TrainRecipe
    from llm_studio.train.run_state import StopFlag

    dist = distributed.setup()
    cfg, name, exp_dir, store = req.cfg, req.name, req.exp_dir, req.store
    started = datetime.now(timezone.utc)
    if dist.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        config_file = exp_dir / "config.yaml"
        if not req.resuming:
            save_config(cfg, config_file)  # complete: every default written
        if req.existing is None:
            store.create_experiment(name, str(config_file), dataset_name=cfg.dataset.name, status="running")
        store.update_experiment(name, status="running", started_at=started, finished_at=None, error=None,
                                config_path=str(config_file))
        if req.resuming:  # steps after the checkpoint will be logged again: drop their first logging
            from llm_studio.train.checkpoint import read_state

            resumed_at = int(read_state(req.resume_from).get("global_step", 0)) if req.resume_from else 0
            store.delete_metrics_after(name, resumed_at)

    reporter = Reporter(name, exp_dir / "train.log", store=store, job_id=req.job_id, enabled=dist.is_main)
    if cfg.logging.neptune_project and dist.is_main:
        try:
            reporter.neptune = NeptuneSink(cfg.logging.neptune_project, cfg.logging.neptune_mode, name,
                                           Reporter.flat_params(cfg.model_dump(mode="json")))
        except Exception as e:  # noqa: BLE001 - tracking is not worth a lost run
            reporter.warning(f"Neptune is off for this run: {e.__class__.__name__}: {_one_line(e)}")
    after = os.environ.get(STOP_AFTER_STEP_ENV)
    stop = StopFlag(after_step=int(after) if after else None)
    previous = _install_signal_handlers(stop)
    reporter.start_heartbeat(on_stop_request=lambda: stop.request("the runner asked this run to stop"))
    verb = f"resuming from {req.resume_from.name}" if req.resume_from else ("restarting (no checkpoint)"
                                                                          if req.resuming else "starting")
    reporter.info(f"{verb} experiment {name} (pid {os.getpid()}, {distributed.describe()}) in {exp_dir}",
                  event=True)

    recipe = TrainRecipe(cfg, exp_dir=exp_dir, reporter=reporter, resume_from=req.resume_from, stop=stop)
    status, error, code = "failed", None, 1
    t0 = time.perf_counter()
    try:
        recipe.setup()
        status = recipe.train()
        code = 0
    except KeyboardInterrupt:
        status, error, code = "interrupted", "interrupted (Ctrl-C twice) without a final checkpoint", 130
        reporter.error(f"run {status}: {error}")
    except Exception as e:  # noqa: BLE001 - every failure ends the run as `failed`, with its reason
        status, error, code = "failed", f"{e.__class__.__name__}: {_one_line(e)}", 1
        reporter.error(f"run failed: {error}", exc_info=True)  # the traceback goes to train.log
        if not dist.is_main:  # other ranks do not write train.log: their reason goes to stderr
            print(f"rank {dist.rank} failed: {error}", file=sys.stderr)
    finally:
        _restore_signal_handlers(previous)
        finished = datetime.now(timezone.utc)
        reporter.flush()  # every metric is in the store before the status says the run is over
        if dist.is_main:
            summary = {"name": name, "status": status, "error": error, **_safe(recipe.summary),
                       "started_at": started.isoformat(), "finished_at": finished.isoformat(),
                       "wall_seconds": round(time.perf_counter() - t0, 3)}
            atomic_write_text(exp_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
            try:
                reporter.set_status(status, finished_at=finished, error=error)
            except Exception as e:  # noqa: BLE001 - the runner reconciles from the exit code
                reporter.warning(f"could not record the final status: {e}", event=False)
        reporter.close(status)
        distributed.teardown()
    return code


def _safe(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a summary must be written even after a broken setup
        return {"summary_error": f"{e.__class__.__name__}: {e}"}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:1000] if text else e.__class__.__name__


def _install_signal_handlers(stop: Any) -> dict[int, Any]:
    """SIGTERM: stop after the current step. Ctrl-C: the same; a second Ctrl-C aborts at once."""
    def on_term(signum: int, frame: Any) -> None:
        stop.request("SIGTERM received")

    def on_int(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request("Ctrl-C received")
        print("\nstopping after this step (a checkpoint is saved); Ctrl-C again aborts", file=sys.stderr)

    previous: dict[int, Any] = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
    except ValueError:  # not the main thread (e.g. called from a test thread): no handlers
        pass
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler)
        except (ValueError, TypeError):
            pass
