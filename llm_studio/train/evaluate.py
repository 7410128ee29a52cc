"""Evaluation: validation loss (and perplexity) over the validation examples, and generated answers for
the first K validation conversations with the run's generation settings, scored by exact match and BLEU.

Generation is batched with left padding (prompts end at the same column, so new tokens line up), and
prompts are sorted by length so a batch pads little. It runs under a forked RNG seeded from the run's
seed: sampling is reproducible and never shifts the training RNG, so evaluating does not change the
training curve (a resumed run matches an uninterrupted one).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from llm_studio.config.schema import DatasetConfig, GenerationConfig
from llm_studio.train import metrics as M
from llm_studio.train.loss import label_logits, label_token_count

PREFIX = "validation/"


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)   # "validation/loss", "validation/exact_match", ...
    predictions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batches: Sequence[dict[str, Any]], device: torch.device,
                    autocast: Callable[[], contextlib.AbstractContextManager]) -> tuple[float, int]:
    """Mean loss per label token over collated batches, and the number of label tokens."""
    total = torch.zeros((), device=device, dtype=torch.float64)
    n_tokens = 0
    for batch in batches:
        inputs = dict(batch["inputs"])
        labels = inputs.pop("labels")
        n_tokens += label_token_count(labels)
        inputs = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in inputs.items()}
        inputs.setdefault("use_cache", False)
        with label_logits(model, labels, device) as selection, autocast():
            logits = model(**inputs).logits
        total += selection.loss_sum(logits).double()
    if n_tokens == 0:
        return float("nan"), 0
    return total.item() / n_tokens, n_tokens  # one sync, at the end


def _generation_config(gen: GenerationConfig, tokenizer: Any, model: torch.nn.Module) -> Any:
    from transformers import GenerationConfig as HFGenerationConfig

    eos: list[int] = []
    model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in ([model_eos] if isinstance(model_eos, int) else list(model_eos or [])) + [tokenizer.eos_token_id]:
        if e is not None and e not in eos:
            eos.append(e)
    kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty,
                              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": eos or None,
                              "do_sample": gen.temperature > 0, "use_cache": True}
    if gen.temperature > 0:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or None)
    return HFGenerationConfig(**kwargs)


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def generate_answers(model: torch.nn.Module, tokenizer: Any, prompts: list[list[int]], gen: GenerationConfig, *,
                     batch_size: int, device: torch.device,
                     autocast: Callable[[], contextlib.AbstractContextManager]) -> list[str]:
    """Decoded answers (special tokens removed, stripped) for each prompt, in the given order."""
    config = _generation_config(gen, tokenizer, model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = _left_pad([prompts[i] for i in chunk], tokenizer.pad_token_id)
        with autocast():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        new_tokens = out[:, ids.shape[1]:].cpu()
        for i, row in zip(chunk, new_tokens.tolist()):
            answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return answers


def evaluate(model: torch.nn.Module, tokenizer: Any, *, loss_batches: Sequence[dict[str, Any]],
             conversations: Sequence[list[dict[str, str]]], dataset_cfg: DatasetConfig, gen_cfg: GenerationConfig,
             metric_names: Sequence[str], num_predictions: int, batch_size: int, seed: int, device: torch.device,
             autocast: Callable[[], contextlib.AbstractContextManager]) -> EvalResult:
    """Validation metrics named in `metric_names` and the prediction rows for predictions.parquet."""
    from llm_studio.data.render import render_prompt

    t0 = time.perf_counter()
    result = EvalResult()
    was_training = model.training
    model.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if {"loss", "perplexity"} & set(metric_names) and loss_batches:
                loss, _ = validation_loss(model, loss_batches, device, autocast)
                if not math.isnan(loss):
                    if "loss" in metric_names:
                        result.metrics[PREFIX + "loss"] = loss
                    if "perplexity" in metric_names:
                        result.metrics[PREFIX + "perplexity"] = M.perplexity(loss)
            rows = [c for c in conversations if c and c[-1]["role"] == "assistant"][:num_predictions]
            if rows:
                prompts = [render_prompt(tokenizer, c, system_prompt=dataset_cfg.system_prompt,
                                         prompt_template=dataset_cfg.prompt_template)[-dataset_cfg.max_length:]
                           for c in rows]
                answers = generate_answers(model, tokenizer, prompts, gen_cfg, batch_size=batch_size, device=device,
                                           autocast=autocast)
                targets = [c[-1]["content"] for c in rows]
                for conv, target, answer in zip(rows, targets, answers):
                    user = next((m["content"] for m in reversed(conv) if m["role"] == "user"), "")
                    result.predictions.append({"prompt": user, "target": target, "prediction": answer,
                                               "exact_match": M.exact_match(answer, target),
                                               "bleu": M.sentence_bleu(answer, target)})
                if "exact_match" in metric_names:
                    result.metrics[PREFIX + "exact_match"] = (sum(p["exact_match"] for p in result.predictions)
                                                              / len(result.predictions))
                if "bleu" in metric_names:
                    result.metrics[PREFIX + "bleu"] = M.corpus_bleu(answers, targets)
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - t0
    return result


def write_predictions(path: Path, step: int, rows: list[dict[str, Any]]) -> None:
    """The latest evaluation's predictions (prompt, target, prediction, ...) as one parquet file, atomically."""
    import pandas as pd

    from llm_studio.paths import atomic_write_bytes

    buf = io.BytesIO()
    pd.DataFrame([{"step": step, **r} for r in rows]).to_parquet(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue())
