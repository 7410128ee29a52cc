"""Process-group setup and rank handling, kept in one place.

Today a run is one process. Multi-process training (torchrun DDP, DeepSpeed) plugs in here: `setup()`
reads the launcher's environment, `wrap_model()` wraps the model, `no_sync()` skips the gradient
all-reduce on all but the last micro-batch of an optimizer step, and `all_reduce_sum()` adds counts
across ranks (the label-token count that normalises the loss). Everything that writes (metrics, logs,
checkpoints, summary) asks `is_main_process()` first, so only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch


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


def setup() -> DistEnv:
    """Read RANK / LOCAL_RANK / WORLD_SIZE (set by torchrun). A single process gets rank 0 of 1."""
    global _CURRENT
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        # The DDP/DeepSpeed engineer replaces this with init_process_group + device binding.
        raise NotImplementedError("multi-process training is not implemented yet; run one process")
    _CURRENT = DistEnv(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       world_size=world_size)
    return _CURRENT


def current() -> DistEnv:
    return _CURRENT


def is_main_process() -> bool:
    return _CURRENT.is_main


def world_size() -> int:
    return _CURRENT.world_size


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module the training loop calls (DDP wrapper later). Saving always uses the unwrapped model."""
    return model


@contextlib.contextmanager
def no_sync(model: torch.nn.Module, last_micro_batch: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce except on the last micro-batch of an optimizer step."""
    if _CURRENT.is_distributed and not last_micro_batch and hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def all_reduce_sum(value: Any) -> Any:
    """Sum a number (or tensor) over ranks; the identity for one process."""
    return value


def barrier() -> None:
    if _CURRENT.is_distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()


def teardown() -> None:
    if _CURRENT.is_distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
