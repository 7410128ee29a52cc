"""Process-group setup and rank handling, kept in one place (DDP or DeepSpeed ZeRO over torchrun).

A run asking for more than one process (`environment.num_processes > 1` on CPU, or more than one GPU),
or for DeepSpeed (`environment.deepspeed_stage`, which wraps the model instead of DDP: train/zero.py),
is relaunched by `llm-studio train` under torchrun with the same arguments and its resolved experiment
name (`relaunch()`); the marker env var LLM_STUDIO_DDP stops the workers from relaunching again. Then:

- `setup()` joins the process group (gloo on CPU, nccl on GPU, plus a gloo group for CPU counts);
- `wrap_model()` wraps the model in DistributedDataParallel whose gradient all-reduce *sums* (the loss
  of each rank is already divided by the label tokens of the whole step, summed over ranks);
- `share(rows)` is this rank's part of each micro-batch: rows[rank::world]. Every rank runs the same
  steps over the same plan as one process would, so a step's loss and gradient equal the one-process
  run on the same global batch (up to float summation order), and checkpoints resume at any world size.
  A rank left without a row gets a stand-in row whose labels are masked, so that every rank joins the
  gradient all-reduce;
- `all_reduce_sum()` adds counts and loss sums for the normaliser and the logged metrics;
- `stop_due()` makes a stop request (SIGTERM, the runner) on any rank stop every rank after the same step;
- everything that writes (metrics, logs, checkpoints, predictions, summary) asks `is_main_process()`;
  evaluation runs on rank 0 while the others wait at a barrier.

Signals: torchrun and its workers run in their own process group with SIGTERM/SIGINT ignored by
torchrun itself; the `llm-studio train` process forwards SIGTERM/SIGINT to that group, so each worker
gets exactly one signal per signal sent (as a single process would). Each process dies with its parent
(PR_SET_PDEATHSIG), so a SIGKILL of the launcher leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch

MARKER_ENV = "LLM_STUDIO_DDP"           # set for the workers torchrun starts: never relaunch again
TIMEOUT = timedelta(hours=2)            # collectives may wait this long (rank 0 evaluating, saving)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


_CURRENT = DistEnv()
_CPU_GROUP: Any = None     # gloo group for CPU numbers (the default group when the backend is gloo)
_DEVICE = torch.device("cpu")


# --- relaunching under torchrun ---------------------------------------------------------------------

def processes_wanted(cfg: Any) -> int:
    """How many processes the config asks for: num_processes, or the listed GPUs when CUDA trains."""
    env = cfg.environment
    n = env.num_processes
    if env.device != "cpu" and torch.cuda.is_available() and len(env.gpus) > 1:
        n = max(n, len(env.gpus))
    return n


def should_relaunch(cfg: Any) -> bool:
    wanted = processes_wanted(cfg) > 1 or cfg.environment.deepspeed_stage > 0  # DeepSpeed reads torchrun's env
    return wanted and not os.environ.get(MARKER_ENV) and "WORLD_SIZE" not in os.environ


def train_args(config_path: str | None, name: str, overrides: list[str], resume: str | None) -> list[str]:
    """`llm-studio train` arguments naming the resolved experiment, for every rank."""
    if resume:
        return ["train", "--resume", name]
    return ["train", str(config_path), "--name", name, *[a for o in overrides for a in ("--set", o)]]


def relaunch(cfg: Any, args: list[str], store: Any, name: str) -> int:
    """Run `llm-studio train ARGS` under torchrun with N processes; the exit code of the run."""
    n = processes_wanted(cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "llm_studio.cli", *args]
    env = dict(os.environ, **{MARKER_ENV: "1", "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGHUP,SIGQUIT"})
    if (cfg.environment.gpus and cfg.environment.device != "cpu" and torch.cuda.is_available()
            and "CUDA_VISIBLE_DEVICES" not in os.environ):  # the runner sets it to the GPUs it granted
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in cfg.environment.gpus)
    if cfg.environment.device == "cpu" or not torch.cuda.is_available():
        env["LLM_STUDIO_DDP_DEVICE"] = "cpu"
    if cfg.environment.num_threads > 0:
        env.setdefault("OMP_NUM_THREADS", str(cfg.environment.num_threads))

    def child_setup() -> None:  # in torchrun, before exec: own group, deaf to SIGTERM/SIGINT, dies with us
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent()

    proc = subprocess.Popen(cmd, env=env, preexec_fn=child_setup)  # noqa: PLW1509 - the setup above needs it
    seen: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        seen.append(signum)
        sig = signal.SIGKILL if signum == signal.SIGINT and seen.count(signal.SIGINT) > 2 else signum
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
                continue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return _outcome(rc, store, name)


def _outcome(rc: int, store: Any, name: str) -> int:
    """The exit code of a torchrun run; a run whose ranks died without a final status is marked failed."""
    from datetime import datetime, timezone

    try:
        status = store.get_experiment(name).status
    except Exception:  # noqa: BLE001 - no row: the workers never started
        return rc or 1
    if rc == 0:
        return 0
    if status in ("running", "stopping", "queued"):
        with contextlib.suppress(Exception):
            store.update_experiment(name, status="failed", finished_at=datetime.now(timezone.utc),
                                    error=f"a training process ended without a status (torchrun exit {rc})")
        return 1
    return 130 if status == "interrupted" else (0 if status in ("finished", "stopped") else 1)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (no orphaned ranks after a SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# --- inside a worker --------------------------------------------------------------------------------

def setup() -> DistEnv:
    """Read RANK / LOCAL_RANK / WORLD_SIZE (set by torchrun); join the process group when more than one."""
    global _CURRENT, _CPU_GROUP, _DEVICE
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    _CURRENT = DistEnv(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       world_size=world_size)
    if world_size > 1 and not torch.distributed.is_initialized():
        _die_with_parent()
        cuda = torch.cuda.is_available() and os.environ.get("LLM_STUDIO_DDP_DEVICE") != "cpu"
        if cuda:
            torch.cuda.set_device(_CURRENT.local_rank)
            _DEVICE = torch.device("cuda", _CURRENT.local_rank)
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
        _CPU_GROUP = torch.distributed.new_group(backend="gloo", timeout=TIMEOUT) if cuda else None
        torch.distributed.barrier()  # every rank has checked the request before rank 0 creates anything
    return _CURRENT


def current() -> DistEnv:
    return _CURRENT


def is_main_process() -> bool:
    return _CURRENT.is_main


def world_size() -> int:
    return _CURRENT.world_size


def describe() -> str:
    return (f"distributed: rank {_CURRENT.rank} of world size {_CURRENT.world_size} "
            f"({torch.distributed.get_backend()})" if _CURRENT.is_distributed else "world size 1")


def _sum_hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP checks a real annotation, none is allowed
    """DDP gradient all-reduce that sums (DDP's default averages): each rank's loss is already a share."""
    fut = torch.distributed.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module the training loop calls (DDP when distributed). Saving always uses the unwrapped model."""
    if not _CURRENT.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [_DEVICE.index] if _DEVICE.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=ids)
    ddp.register_comm_hook(None, _sum_hook)
    return ddp


def share(rows: list[Any]) -> tuple[list[Any], bool]:
    """This rank's rows of one micro-batch, and False when it only has a stand-in row (mask its labels)."""
    if not _CURRENT.is_distributed:
        return rows, True
    mine = rows[_CURRENT.rank::_CURRENT.world_size]
    return (mine, True) if mine else (rows[:1], False)


@contextlib.contextmanager
def no_sync(model: torch.nn.Module, last_micro_batch: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce except on the last micro-batch of an optimizer step."""
    if _CURRENT.is_distributed and not last_micro_batch and hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def all_reduce_sum(value: Any) -> Any:
    """Sum over ranks: a number, a list of numbers (one collective) or a tensor; the identity for one process."""
    if not _CURRENT.is_distributed:
        return value
    if torch.is_tensor(value):
        out = value.detach().clone()
        torch.distributed.all_reduce(out)
        return out
    numbers = list(value) if isinstance(value, (list, tuple)) else [value]
    t = torch.tensor(numbers, dtype=torch.float64)
    torch.distributed.all_reduce(t, group=_CPU_GROUP)
    out = [type(v)(x) for v, x in zip(numbers, t.tolist())]
    return out if isinstance(value, (list, tuple)) else out[0]


def stop_due(stop: Any, step: int | None = None) -> bool:
    """`stop.due(step)` agreed by every rank: a stop requested on any rank stops all after the same step."""
    due = stop.due(step) if step is not None else stop.requested
    if not _CURRENT.is_distributed:
        return due
    if all_reduce_sum(int(due)) and not due:
        stop.request("a stop was requested on another rank")
        return True
    return due


def barrier() -> None:
    if _CURRENT.is_distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()


def teardown() -> None:
    if _CURRENT.is_distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
