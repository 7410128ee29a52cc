"""From conversations to model-ready batches: tokenize + mask, plan batches (packing, length grouping), collate.

    examples, stats = tokenize_conversations(conversations, tokenizer, cfg.dataset)
    plan = plan_batches([len(e) for e in examples], batch_size=8, max_length=512, packing=True,
                        group_by_length=True, seed=42, epoch=0)
    for rows in plan[start_batch:]:                      # a resumed run skips to its batch index
        batch = collate(examples, rows, tokenizer.pad_token_id, packed=True)
        loss = model(**to_device(batch["inputs"], device)).loss

Packing is how the engine avoids computing padding: several examples share one row, their position ids
restart at 0, and the attention never crosses from one example into another (see `collate`).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from llm_studio.data.render import render_conversation
from llm_studio.errors import DatasetError

IGNORE_INDEX = -100  # label value the loss skips (torch cross_entropy's default ignore_index)
MEGA_CHUNK = 50  # length grouping sorts within chunks of this many batches (as transformers' sampler)
PACK_CHUNK = 4096  # examples packed together: ~99.9% full rows, yet row mates change every epoch


@dataclass(slots=True)
class Example:
    """One tokenized conversation: ids and the parallel 0/1 label mask."""

    input_ids: list[int]
    mask: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def length(self) -> int:
        return len(self.input_ids)


def tokenize_conversations(conversations: Iterable[Any], tokenizer: Any,
                           dataset_cfg: Any) -> tuple[list[Example], dict[str, int]]:
    """Render every conversation (a list of messages, or an object with `.messages`) under `dataset_cfg`.

    Over-long examples are cut to `max_length` keeping the start (`overlong="truncate"`) or dropped
    (`"drop"`). An example without any label token left (the first token is never one: nothing predicts
    it) is dropped too. A malformed conversation raises DatasetError naming its 1-based row.
    Stats: n_conversations, n_examples (kept), n_truncated (kept after cutting), n_dropped, n_tokens and
    n_label_tokens (of the kept examples).
    """
    max_length = dataset_cfg.max_length
    examples: list[Example] = []
    stats = dict(n_conversations=0, n_examples=0, n_truncated=0, n_dropped=0, n_tokens=0, n_label_tokens=0)
    for k, conv in enumerate(conversations):
        stats["n_conversations"] += 1
        try:
            ids, mask = render_conversation(
                tokenizer, getattr(conv, "messages", conv), system_prompt=dataset_cfg.system_prompt,
                prompt_template=dataset_cfg.prompt_template, mask_prompt=dataset_cfg.mask_prompt)
        except ValueError as e:  # a malformed conversation or template: name the row, keep the reason
            raise DatasetError(str(e), row=k + 1) from e
        truncated = len(ids) > max_length
        if truncated:
            if dataset_cfg.overlong == "drop":
                stats["n_dropped"] += 1
                continue
            ids, mask = ids[:max_length], mask[:max_length]
        n_labels = sum(mask) - mask[0] if mask else 0
        if n_labels == 0:
            stats["n_dropped"] += 1
            continue
        stats["n_truncated"] += truncated
        stats["n_tokens"] += len(ids)
        stats["n_label_tokens"] += n_labels
        examples.append(Example(ids, mask))
    stats["n_examples"] = len(examples)
    return examples, stats


def plan_batches(lengths: Sequence[int], *, batch_size: int, max_length: int, packing: bool,
                 group_by_length: bool, seed: int, epoch: int) -> list[list[list[int]]]:
    """The batches of one epoch: each batch a list of rows, each row a list of example indices.

    Deterministic in (lengths, seed, epoch), so a resumed run that skips to batch k sees the same batches;
    a different epoch gives a different order (and, with packing, different row mates). Every example
    appears exactly once per epoch.
    - Not packing: one example per row.
    - Packing: examples are shuffled, then packed best-fit decreasing within chunks of PACK_CHUNK into
      rows of at most `max_length` tokens; an example is never split.
    - Group by length: rows are sorted by length within shuffled chunks of MEGA_CHUNK batches, so a batch
      holds rows of similar length (little padding); batch order is shuffled, except that the batch with
      the longest row goes first, so an out-of-memory shows at the first step rather than hours in.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    if packing and len(lengths) and lengths.max() > max_length:
        raise ValueError(f"an example of {lengths.max()} tokens cannot be packed into rows of {max_length}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if packing:
        rows: list[list[int]] = []
        for start in range(0, len(order), PACK_CHUNK):
            rows.extend(_pack(order[start:start + PACK_CHUNK], lengths, max_length))
        rows = [rows[k] for k in rng.permutation(len(rows))]  # packed rows come out sorted by size
    else:
        rows = [[int(i)] for i in order]
    if not group_by_length:
        return [rows[k:k + batch_size] for k in range(0, len(rows), batch_size)]

    lens = lengths.tolist()  # plain ints: summing small rows is faster in Python than via numpy
    row_len = np.array([sum(lens[i] for i in row) for row in rows], dtype=np.int64)
    chunk = batch_size * MEGA_CHUNK
    groups: list[np.ndarray] = []  # each batch as row numbers
    for start in range(0, len(rows), chunk):
        # stable sort, longest first: ties keep their shuffled order
        by_len = start + np.argsort(-row_len[start:start + chunk], kind="stable")
        groups.extend(by_len[b:b + batch_size] for b in range(0, len(by_len), batch_size))
    groups = [groups[k] for k in rng.permutation(len(groups))]
    if groups:
        longest = int(np.argmax([row_len[g].max() for g in groups]))
        groups.insert(0, groups.pop(longest))
    return [[rows[k] for k in g.tolist()] for g in groups]


def _pack(indices: np.ndarray, lengths: np.ndarray, max_length: int) -> list[list[int]]:
    """Best-fit decreasing: each example, longest first, goes to the fullest row it still fits in."""
    order = indices[np.argsort(-lengths[indices], kind="stable")]
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens left, row number), sorted: bisect finds the best fit
    for i in order.tolist():
        n = int(lengths[i])
        k = bisect_left(free, (n, -1))
        if k < len(free):
            left, r = free.pop(k)
            rows[r].append(i)
            left -= n
        else:
            r, left = len(rows), max_length - n
            rows.append([i])
        if left > 0:
            insort(free, (left, r))
    return rows


def collate(examples: Sequence[Example], rows: Sequence[Sequence[int]], pad_id: int, *, packed: bool,
            flatten: bool = False) -> dict[str, Any]:
    """Turn one planned batch into model inputs and token counts.

    Returns {"inputs": dict for `model(**inputs)`, "n_real_tokens", "n_computed_tokens", "n_label_tokens"}:
    n_real_tokens counts example tokens, n_computed_tokens the batch numel (padding included),
    n_label_tokens the labels that are not -100. Labels are -100 where the mask is 0, on padding, and on
    the first token of every example (nothing of its own precedes it: in a packed row it would otherwise
    be predicted from the previous example). Rows are right-padded with `pad_id` to the longest row.

    Example, A=[1,2,3] mask [0,1,1], B=[4,5] mask [0,1], C=[6,7,8,9] mask [0,0,1,1], pad_id=0:

        collate([A, B, C], [[0, 1], [2]], 0, packed=True)["inputs"] ==
            input_ids    [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
            labels       [[-100, 2, 3, -100, 5], [-100, -100, 8, 9, -100]]
            position_ids [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
            use_cache    False
        n_real_tokens 9, n_computed_tokens 10, n_label_tokens 5

        collate([A, B, C], [[0], [1], [2]], 0, packed=False)["inputs"] ==
            input_ids      [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]
            labels         [[-100, 2, 3, -100], [-100, 5, -100, -100], [-100, -100, 8, 9]]
            attention_mask [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
            use_cache      False
        n_real_tokens 9, n_computed_tokens 12, n_label_tokens 5

    Why packed rows carry position_ids and no attention_mask: transformers 5.x (sdpa and eager, checked
    by tests/test_render_batching.py on a real Llama) finds packed sequences from position_ids that
    restart at 0 (`masking_utils.find_packed_sequence_indices`) and builds a block-diagonal causal mask
    per row, so attention never crosses examples; RoPE sees the same positions as the example alone,
    so the loss equals that of the examples run one by one.
    This works for any batch size. Its conditions, both met here:
    - no 2D attention_mask is passed: one would switch the detection off;
    - no KV cache: `use_cache` defaults to the model config (True, even in training) and a cache also
      switches it off, silently letting examples attend to each other, hence `use_cache=False` in inputs.
    Padding at the end of a row gets positions 0, 1, ... too: it becomes a dummy sequence of its own
    that attends only to itself and carries no labels.

    `flatten=True` (packed only) puts the whole batch in one row without padding, for flash_attention_2:
    it finds packed sequences only at batch size 1 (`_is_packed_sequence`), and would otherwise attend
    across examples. The varlen kwargs are given too, so it need not re-derive them (a device sync) in
    every layer; other attention implementations ignore them. With the rows above:

        collate([A, B, C], [[0, 1], [2]], 0, packed=True, flatten=True)["inputs"] ==
            input_ids    [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
            labels       [[-100, 2, 3, -100, 5, -100, -100, 8, 9]]
            position_ids [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
            cu_seq_lens_q, cu_seq_lens_k  int32 [0, 3, 5, 9];  max_length_q, max_length_k  4
            use_cache    False
        n_real_tokens 9, n_computed_tokens 9, n_label_tokens 5

    Do not flatten for sdpa/eager: they compute the full square of the row, so one long row costs
    about batch_size times more attention than batch_size rows.
    """
    if flatten:
        if not packed:
            raise ValueError("flatten needs packed=True")
        rows = [[i for row in rows for i in row]]
    if not packed and any(len(row) != 1 for row in rows):
        raise ValueError("unpacked rows hold exactly one example each")
    row_lens = [sum(len(examples[i]) for i in row) for row in rows]
    width = max(row_lens)
    # Flat Python lists grown with C-speed extends, then one numpy conversion per field: converting
    # list-of-lists with torch.tensor, or each example separately, costs several times more.
    ids: list[int] = []
    mask: list[int] = []
    positions: list[int] = []
    for row, n in zip(rows, row_lens):
        for i in row:
            ex = examples[i]
            ids.extend(ex.input_ids)
            mask.extend(ex.mask)
            positions.extend(range(len(ex)))
        pad = width - n
        ids.extend([pad_id] * pad)
        mask.extend([0] * pad)
        positions.extend(range(pad))  # padding: a dummy sequence of its own (see above)
    shape = (len(rows), width)
    ids_np = np.array(ids, dtype=np.int64).reshape(shape)
    pos_np = np.array(positions, dtype=np.int64).reshape(shape)
    # an example's first token (position 0) is never a label, whatever its mask says
    is_label = (np.array(mask, dtype=np.int64).reshape(shape) != 0) & (pos_np != 0)
    labels_np = np.where(is_label, ids_np, IGNORE_INDEX)

    import torch  # lazily: the planning half of this module is usable without torch

    inputs: dict[str, Any] = {"input_ids": torch.from_numpy(ids_np), "labels": torch.from_numpy(labels_np)}
    if packed:
        inputs["position_ids"] = torch.from_numpy(pos_np)
    else:
        lens = np.array(row_lens, dtype=np.int64)[:, None]
        inputs["attention_mask"] = torch.from_numpy((np.arange(width) < lens).astype(np.int64))
    if flatten:
        ex_lens = [len(examples[i]) for i in rows[0]]
        cu_seq_lens = torch.tensor(np.cumsum([0, *ex_lens]), dtype=torch.int32)
        inputs.update(cu_seq_lens_q=cu_seq_lens, cu_seq_lens_k=cu_seq_lens,
                      max_length_q=max(ex_lens), max_length_k=max(ex_lens))
    inputs["use_cache"] = False
    return {"inputs": inputs, "n_real_tokens": sum(row_lens), "n_computed_tokens": len(rows) * width,
            "n_label_tokens": int(is_label.sum())}


def to_device(inputs: dict[str, Any], device: Any) -> dict[str, Any]:
    """Move the tensors of `inputs` to `device`, keeping the other values (use_cache) as they are."""
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in inputs.items()}


def stats_text(stats: Any) -> str:
    """A short line of the numeric statistics of `tokenize_conversations`."""
    if not isinstance(stats, dict):
        return str(stats)
    keep = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(keep[:6]) or "no stats"


__all__ = ["TrainRecipe", "StopFlag", "memory_mb"]
