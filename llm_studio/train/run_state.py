"""What a run carries between steps: the stop flag, the statistics between two log lines, a collated
micro-batch, and the memory figure logged with them (kept out of recipe.py so the recipe reads as a story)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from llm_studio.train.metrics import higher_is_better


@dataclass
class StopFlag:
    """Set by the SIGTERM handler (or the runner's `stopping` heartbeat); read after every step.

    `after_step` acts as if a stop arrived once that step is done: deterministic stops for tests and
    for reproducing a stop/resume (env LLM_STUDIO_STOP_AFTER_STEP).
    """
    requested: bool = False
    reason: str = ""
    after_step: int | None = None

    def request(self, reason: str = "stop requested") -> None:
        if not self.requested:
            self.reason = reason
        self.requested = True

    def due(self, step: int) -> bool:
        if self.after_step is not None and step >= self.after_step and not self.requested:
            self.request(f"stop after step {self.after_step} (LLM_STUDIO_STOP_AFTER_STEP)")
        return self.requested


@dataclass
class StepWindow:
    """Train statistics between two log lines. The loss stays on the device until the log step."""
    loss_sum: torch.Tensor | None = None
    label_tokens: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0
    grad_norm: torch.Tensor | None = None
    lr: float = 0.0

    def train_metrics(self, loss: float, grad_norm: float, memory_mb: float) -> dict[str, float]:
        return {
            "train/loss": loss,
            "train/lr": self.lr,
            "train/grad_norm": grad_norm,
            "train/tokens_per_s": self.real_tokens / self.seconds if self.seconds > 0 else 0.0,
            "train/pad_fraction": 1.0 - self.real_tokens / self.computed_tokens if self.computed_tokens else 0.0,
            "train/memory_mb": memory_mb,
        }


@dataclass
class MicroBatch:
    """One collated micro-batch (this rank's share of it) with its token counts."""
    inputs: dict[str, Any]
    labels: torch.Tensor
    real_tokens: int
    computed_tokens: int


def memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on a GPU; resident memory of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@dataclass
class BestMetrics:
    """The best value of each evaluation metric so far, and the step where `key` (the run's best metric)
    was best: what "best checkpoint" and the summary report."""
    key: str
    values: dict[str, float] = field(default_factory=dict)
    step: int | None = None

    def update(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            old = self.values.get(name)
            if old is None or (value > old if higher_is_better(name) else value < old):
                self.values[name] = value
                if name == self.key:
                    self.step = step
