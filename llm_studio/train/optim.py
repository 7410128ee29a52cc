"""Optimizer and learning-rate schedule.

`learning_rate(step, ...)` is a small pure function (nanoGPT-style) so the schedule can be tested and
plotted on its own; `build_scheduler` wraps it in a `LambdaLR` only so its position is checkpointed with
the usual `state_dict()`.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from llm_studio.config.schema import TrainingConfig
from llm_studio.errors import ConfigError

SCHEDULES = ("constant", "linear", "cosine")


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Steps that ramp the learning rate up; at least one whenever the ratio is above zero."""
    return min(total_steps, math.ceil(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0


def learning_rate(step: int, *, base_lr: float, total_steps: int, warmup: int, schedule: str) -> float:
    """The learning rate used by optimizer step `step` (0-based).

    Warmup rises linearly to `base_lr` over `warmup` steps ((step + 1) / (warmup + 1) of it, so the first
    step already learns). After warmup: 'constant' stays at `base_lr`; 'linear' decays to 0 at
    `total_steps`; 'cosine' follows half a cosine down to 0 at `total_steps`.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if step < warmup:
        return base_lr * (step + 1) / (warmup + 1)
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters; weight decay only on matrices (not biases, norms or LoRA magnitudes)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg: TrainingConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused kernel where torch has one for the device), or bitsandbytes' 8-bit AdamW on CUDA."""
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ConfigError([("adapter", "the model has no trainable parameters")])
    if cfg.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        if device.type != "cuda":
            raise ConfigError([("training.optimizer",
                                f"{cfg.optimizer} needs a CUDA GPU (bitsandbytes 8-bit optimizer); use adamw")])
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if cfg.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
        return cls(groups, lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError, ValueError):
        # fused needs every parameter floating-point on a device with a fused kernel
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = warmup_steps(total_steps, cfg.warmup_ratio)

    def factor(step: int) -> float:
        return learning_rate(step, base_lr=1.0, total_steps=total_steps, warmup=warmup, schedule=cfg.scheduler)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_parameters(model: torch.nn.Module) -> Iterable[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
