"""Evaluation metrics: normalised exact match, sacrebleu BLEU, perplexity.

Per-row values go into predictions.parquet; corpus values become `validation/<metric>`.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata

_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = string.punctuation + "“”‘’«»。，、！？：；"

LOWER_IS_BETTER = {"loss", "perplexity"}


def higher_is_better(metric: str) -> bool:
    """'loss' and 'perplexity' improve downwards; 'bleu' and 'exact_match' upwards."""
    return metric.split("/")[-1] not in LOWER_IS_BETTER


def normalize_answer(text: str) -> str:
    """Unicode NFKC, lower case, whitespace collapsed, punctuation stripped from both ends.

    'Paris.' and ' paris' match; '3.5' and '35' do not (inner punctuation is kept).
    """
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = _SPACES.sub(" ", text).strip()
    return text.strip(_EDGE_PUNCT + " ")


def exact_match(prediction: str, target: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(target))


def sentence_bleu(prediction: str, target: str) -> float:
    """sacrebleu sentence BLEU (0-100): exponential smoothing and effective order, so short answers
    are scored on the n-gram orders they have."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, [target]).score)


def corpus_bleu(predictions: list[str], targets: list[str]) -> float:
    """sacrebleu corpus BLEU (0-100) over all predictions.

    With effective order: n-gram orders that no reference is long enough to have are left out, so a
    set of exact one-word answers scores 100 instead of 0 (plain BLEU needs 4-grams).
    """
    import sacrebleu

    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_bleu(predictions, [targets], use_effective_order=True).score)


def perplexity(loss: float) -> float:
    """exp(mean token loss), capped so a diverged run reports a large number instead of inf."""
    return math.exp(min(loss, 50.0))
