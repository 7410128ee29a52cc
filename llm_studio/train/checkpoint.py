"""Checkpoints: save and load atomically, keep the last K plus the best.

Layout of `experiments/<name>/checkpoints/step-N/` (a folder Hugging Face tools load directly):
    adapter_model.safetensors + adapter_config.json   (LoRA/DoRA, incl. modules_to_save)  or
    model.safetensors + config.json                    (full fine-tuning)
    tokenizer files, generation_config.json
    training_state.pt   optimizer, scheduler, RNG states (python, numpy, torch, cuda)
    state.json          global_step, epoch, batch_index, metrics, backbone, adapter type (readable)

A checkpoint is written to a hidden temp folder and renamed into place, so a crash leaves either the
whole checkpoint or none. `batch_index` is the index of the next micro-batch of epoch `epoch`'s
deterministic batch plan: resume re-plans that epoch and skips to it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_studio.paths import replace_folder
from llm_studio.train.metrics import higher_is_better

STATE_FILE = "state.json"
TRAINING_STATE_FILE = "training_state.pt"
PREFIX = "step-"


@dataclass
class Progress:
    """Where a run is: optimizer steps done, current epoch, next micro-batch index in that epoch."""
    global_step: int = 0
    epoch: int = 0
    batch_index: int = 0


@dataclass
class CheckpointInfo:
    path: Path
    step: int
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return self.state.get("metrics") or {}


# --- RNG -------------------------------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- save / load -----------------------------------------------------------------------------------

def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{PREFIX}{step}"


def save_checkpoint(root: Path, *, model: torch.nn.Module, tokenizer: Any, optimizer: torch.optim.Optimizer | None,
                    scheduler: Any, progress: Progress, metrics: dict[str, float] | None = None,
                    extra: dict[str, Any] | None = None, extra_state: dict[str, Any] | None = None,
                    move_in: dict[str, Path] | None = None) -> Path:
    """Write `root/step-<global_step>/` atomically and return it. Replaces a checkpoint of the same step.

    `metrics` are the evaluation results at this step (they make it a candidate for "best"); `extra`
    goes into state.json, `extra_state` into training_state.pt (e.g. a GradScaler's state). `optimizer`
    is None when its state is saved elsewhere: `move_in` {name: folder} moves such folders (DeepSpeed's
    sharded state) inside before the rename, so they too are all there or not at all.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, progress.global_step)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        optimizer_state = {"optimizer": optimizer.state_dict()} if optimizer is not None else {}
        torch.save({**optimizer_state, "scheduler": scheduler.state_dict(),
                    "rng": capture_rng(), "progress": asdict(progress), **(extra_state or {})},
                   tmp / TRAINING_STATE_FILE)
        for name, folder in (move_in or {}).items():
            os.replace(folder, tmp / name)
        state = {**asdict(progress), "metrics": dict(metrics or {}), **(extra or {})}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        _fsync_dir_files(tmp)
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fsync_dir_files(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def load_training_state(path: Path) -> dict[str, Any]:
    """optimizer, scheduler, rng and progress of a checkpoint folder (our own file: full unpickling)."""
    return torch.load(Path(path) / TRAINING_STATE_FILE, map_location="cpu", weights_only=False)


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --- listing and pruning ---------------------------------------------------------------------------

def list_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest first (temp folders and half-written ones are skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if not p.is_dir() or not p.name.startswith(PREFIX) or not p.name[len(PREFIX):].isdigit():
            continue
        if not (p / STATE_FILE).is_file() or not (p / TRAINING_STATE_FILE).is_file():
            continue
        out.append(CheckpointInfo(path=p, step=int(p.name[len(PREFIX):]), state=read_state(p)))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(root: Path) -> CheckpointInfo | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def best_checkpoint(root: Path, metric: str) -> CheckpointInfo | None:
    """The checkpoint with the best `metric` (e.g. 'validation/loss'); ties go to the earlier step."""
    scored = [c for c in list_checkpoints(root) if metric in c.metrics]
    if not scored:
        return None
    sign = -1.0 if higher_is_better(metric) else 1.0
    return min(scored, key=lambda c: (sign * c.metrics[metric], c.step))


def prune_checkpoints(root: Path, keep_last: int, best_metric: str | None = None) -> list[Path]:
    """Delete all but the last `keep_last` checkpoints and the best by `best_metric`; return what was deleted."""
    found = list_checkpoints(root)
    keep = {c.path for c in found[-keep_last:]} if keep_last > 0 else set()
    best = best_checkpoint(root, best_metric) if best_metric else None
    if best is not None:
        keep.add(best.path)
    removed = []
    for c in found:
        if c.path not in keep:
            shutil.rmtree(c.path, ignore_errors=True)
            removed.append(c.path)
    return removed


def remove_partial_checkpoints(root: Path) -> list[Path]:
    """Delete what a killed save left behind (hidden `.step-N.*` temp, old and staging folders).

    Only call this while no other process saves into `root`: the run that owns the folder, at its start."""
    root = Path(root)
    if not root.is_dir():
        return []
    partial = [p for p in root.iterdir() if p.name.startswith(f".{PREFIX}")]
    for p in partial:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return partial
