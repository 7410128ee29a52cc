"""The language-modelling loss, summed over label tokens so callers normalise it themselves.

A batch's labels hold -100 where no token is predicted (prompt, padding, the first token of each packed
example). Position t's logits predict token t+1, so the labels are shifted by one. The recipe divides
the sum by the number of label tokens in the whole optimizer step (all micro-batches), which weights
every answer token equally however the tokens fall into micro-batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def label_token_count(labels: torch.Tensor) -> int:
    """Tokens the loss is computed on. Call it on the CPU copy of the labels (no device sync)."""
    return int((labels[..., 1:] != IGNORE_INDEX).sum())


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropy over label positions, computed in float32."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[..., :-1, :].reshape(-1, vocab).float(), labels[..., 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
