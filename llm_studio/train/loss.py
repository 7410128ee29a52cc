"""The language-modelling loss, summed over label tokens so callers normalise it themselves.

A batch's labels hold -100 where no token is predicted (prompt, padding, the first token of each packed
example). Position t's logits predict token t+1, so the labels are shifted by one. The recipe divides
the sum by the number of label tokens in the whole optimizer step (all micro-batches), which weights
every answer token equally however the tokens fall into micro-batches.

`label_logits` computes the output head only at label positions: a packed step predicts every token of
its rows, but the loss reads only the answer tokens', and the full (tokens x vocabulary) logits, their
float32 copy, log-softmax and gradient are the largest activations of a step (~0.6 GB per 1,000 tokens
on a 150k-vocabulary model).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

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


class LabelLogits:
    """The positions whose next token is a label (flat indices into batch x sequence) and those labels."""

    def __init__(self, labels: torch.Tensor, device: torch.device):
        # on the CPU copy of the labels: the indices are known without a device sync
        shifted = torch.full_like(labels, IGNORE_INDEX)
        shifted[..., :-1] = labels[..., 1:]
        shifted = shifted.flatten()
        index = (shifted != IGNORE_INDEX).nonzero().squeeze(1)
        self.labels = labels
        self.index = index.to(device, non_blocking=True)
        self.targets = shifted[index].to(device, non_blocking=True)
        self.selected = False  # whether the head saw only the label positions in the last forward

    def select(self, module: torch.nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        self.selected = True
        return (hidden.flatten(0, -2).index_select(0, self.index),) + tuple(args[1:])

    def loss_sum(self, logits: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of the forward's logits: the selected rows, or full logits when the head
        was not called as a module (a model that multiplies by its weight directly)."""
        if self.selected and logits.dim() == 2:
            return F.cross_entropy(logits.float(), self.targets, reduction="sum")
        return token_loss_sum(logits, self.labels.to(logits.device, non_blocking=True))


@contextlib.contextmanager
def label_logits(model: torch.nn.Module, labels: torch.Tensor, device: torch.device,
                 enabled: bool = True) -> Iterator[LabelLogits]:
    """While open, `model`'s output head (its unwrapped module: DDP and DeepSpeed call the same one) sees
    only the label positions' hidden states, so the forward returns logits of shape (label tokens, vocab).
    Pass the labels' CPU copy. Use `.loss_sum(logits)` for the loss either way."""
    selection = LabelLogits(labels, device)
    head = model.get_output_embeddings() if enabled and hasattr(model, "get_output_embeddings") else None
    handle = head.register_forward_pre_hook(selection.select) if head is not None else None
    try:
        yield selection
    finally:
        if handle is not None:
            handle.remove()
