"""What a job needs (GPUs by index or a CPU slot) and what is free, without importing torch.

The UI process runs the scheduler, so GPU discovery asks `nvidia-smi` instead of initialising CUDA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from typing import Any

DEFAULT_CPU_SLOTS = 1


@lru_cache(maxsize=1)
def detect_gpus() -> tuple[int, ...]:
    """Indices of visible NVIDIA GPUs (respecting CUDA_VISIBLE_DEVICES); empty without a driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(int(i) for i in visible.split(",") if i.strip().isdigit())
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


def cpu_slots(setting: Any) -> int:
    """CPU jobs that may run at once: env LLM_STUDIO_CPU_SLOTS, else the stored setting, else 1."""
    raw = os.environ.get("LLM_STUDIO_CPU_SLOTS", setting)
    try:
        return max(1, int(raw)) if raw is not None else DEFAULT_CPU_SLOTS
    except (TypeError, ValueError):
        return DEFAULT_CPU_SLOTS


def threads_per_cpu_slot(slots: int) -> int:
    """Torch threads for one CPU job when `slots` CPU jobs may run at once: the machine's cores split
    evenly (two jobs with every core each oversubscribe the CPU and both run far slower)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, slots))


def wanted(device: str, num_processes: int, pinned_gpus: list[int], gpus: tuple[int, ...]) -> dict[str, Any]:
    """The resources a training job asks for, from its config's environment section."""
    if device == "cpu" or not gpus:
        return {"cpu_slots": 1}
    if pinned_gpus:
        return {"gpus": list(pinned_gpus)}
    return {"gpu_count": max(1, num_processes)}


def assign(request: dict[str, Any], busy_gpus: set[int], busy_cpu: int, slots: int, gpus: tuple[int, ...]
           ) -> dict[str, Any] | None:
    """Concrete resources for `request` given what running jobs hold, or None if it must wait."""
    if "cpu_slots" in request:
        return {"cpu_slots": 1} if busy_cpu < slots else None
    free = [g for g in gpus if g not in busy_gpus]
    if "gpus" in request:
        return {"gpus": request["gpus"]} if all(g in free for g in request["gpus"]) else None
    count = request.get("gpu_count", 1)
    if count > len(gpus):
        raise ValueError(f"the job asks for {count} GPUs but this machine has {len(gpus)}")
    return {"gpus": free[:count]} if len(free) >= count else None
