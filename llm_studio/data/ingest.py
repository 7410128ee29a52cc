"""Import a dataset file into the workspace: read, map, check, split, describe, write, register.

    import_dataset("qa.csv", "my-qa", validation_fraction=0.1)

writes `$LLM_STUDIO_HOME/datasets/my-qa/` with `data.parquet` and `validation.parquet` (columns `id`
string, `messages` list<struct<role, content>>; validation may have 0 rows) and `dataset.yaml`
(sources, format, mapping, counts, statistics), then adds the store row. All checks run before
anything is written: the folder is built under a hidden temp name inside datasets/ and renamed into
place at the end, so a failure leaves the workspace exactly as it was.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from llm_studio.data.conversations import Conversation, build_conversations
from llm_studio.data.formats import (Table, detect_mapping, file_kind, mapping_format, read_table,
                                     resolve_mapping)
from llm_studio.errors import DatasetError, LLMStudioError, NameTakenError, NotFoundError
from llm_studio.paths import check_name, datasets_dir

if TYPE_CHECKING:
    from llm_studio.store import Store
    from llm_studio.store.records import DatasetRecord

SPLIT_FILES = {"train": "data.parquet", "validation": "validation.parquet"}
MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMA = pa.schema([("id", pa.string()), ("messages", MESSAGES_TYPE)])
MAX_VALIDATION_FRACTION = 0.9
DEFAULT_MAX_UPLOAD_MB = 1024
OPTIONAL_KEYS = ("system", "input", "id", "parent_id")


def import_dataset(path: str | Path, name: str, *, validation_path: str | Path | None = None,
                   validation_fraction: float = 0.0, seed: int = 42, mapping: dict[str, Any] | None = None,
                   max_bytes: int | None = None, store: Store | None = None) -> DatasetRecord:
    """Import `path` (CSV, Parquet, JSON array, JSONL) as dataset `name` and return its store record.

    Validation comes from `validation_path` (same column mapping), or from a seeded `validation_fraction`
    of the conversations (threads stay whole on one side), or is empty. `mapping` replaces column
    detection (keys: prompt, input, answer, system, id, parent_id, messages, conversations).
    Any bad input raises DatasetError naming the file, row and column, and writes nothing.
    """
    name = _checked_name(name)
    fraction = _checked_fraction(validation_fraction, validation_path)
    limit = default_max_bytes() if max_bytes is None else max_bytes
    sources = [Path(path)] + ([Path(validation_path)] if validation_path is not None else [])
    for source in sources:
        _check_file(source, limit)
    if store is None:
        from llm_studio.store import Store
        with Store() as own:
            return _import_checked(sources, name, fraction, seed, mapping, own)
    return _import_checked(sources, name, fraction, seed, mapping, store)


def _import_checked(sources: list[Path], name: str, fraction: float, seed: int,
                    mapping: dict[str, Any] | None, store: Store) -> DatasetRecord:
    """import_dataset once the arguments are checked: everything that reads the files, then writes."""
    _check_name_free(store, name)
    table = read_table(sources[0])
    used = resolve_mapping(table, mapping)
    train = build_conversations(table, used)
    valid: list[Conversation] = []
    rows = {"train": len(table.df), "validation": 0}
    if len(sources) > 1:
        vtable = read_table(sources[1])
        valid = build_conversations(vtable, _validation_mapping(vtable, used, user_given=mapping is not None))
        rows["validation"] = len(vtable.df)
    elif fraction > 0:
        train, valid = split_by_fraction(train, fraction, seed)

    info = {
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": mapping_format(used),
        "source": {"train": str(sources[0].resolve()),
                   "validation": str(sources[1].resolve()) if len(sources) > 1 else None,
                   "validation_fraction": fraction, "seed": seed},
        "mapping": used,
        "counts": {"train": len(train), "validation": len(valid), "source_rows": rows},
        "statistics": {"train": conversation_stats(train), "validation": conversation_stats(valid)},
    }
    folder, created = _write_folder(name, train, valid, info)
    try:
        return store.add_dataset(name, str(folder), info["format"], used, len(train), len(valid),
                                 info["statistics"])
    except BaseException as e:
        shutil.rmtree(folder, ignore_errors=True)  # a folder without its store row would block the name
        _remove_empty(created)
        if isinstance(e, NameTakenError):
            raise DatasetError(f"a dataset named {name!r} already exists") from e
        raise


def default_max_bytes() -> int:
    """The upload limit: $LLM_STUDIO_MAX_UPLOAD_MB (default 1024 MB) in bytes."""
    raw = os.environ.get("LLM_STUDIO_MAX_UPLOAD_MB", str(DEFAULT_MAX_UPLOAD_MB))
    try:
        mb = float(raw)
    except ValueError:
        raise DatasetError(f"LLM_STUDIO_MAX_UPLOAD_MB must be a number of megabytes, not {raw!r}") from None
    return int(mb * 1024 * 1024)


def _checked_name(name: str) -> str:
    try:
        return check_name(name, "dataset name")
    except LLMStudioError as e:
        raise DatasetError(str(e)) from None


def _checked_fraction(fraction: Any, validation_path: str | Path | None) -> float:
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise DatasetError(f"validation fraction must be a number, not {fraction!r}") from None
    if not 0.0 <= value <= MAX_VALIDATION_FRACTION:
        raise DatasetError(f"validation fraction {value} is outside [0, {MAX_VALIDATION_FRACTION}]")
    if value > 0 and validation_path is not None:
        raise DatasetError("give either a validation file or a validation fraction, not both")
    return value


def _check_file(path: Path, limit: int) -> None:
    file_kind(path)  # unsupported extension: refuse before looking further
    if not path.is_file():
        raise DatasetError("file not found" if not path.exists() else "not a file", file=str(path))
    size = path.stat().st_size
    if size > limit:
        raise DatasetError(f"the file is {_size(size)}, over the {_size(limit)} upload limit "
                           "(LLM_STUDIO_MAX_UPLOAD_MB)", file=str(path))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _check_name_free(store: Store, name: str) -> None:
    try:
        store.get_dataset(name)
    except NotFoundError:
        pass
    else:
        raise DatasetError(f"a dataset named {name!r} already exists; pick another name or delete it first")
    if (datasets_dir() / name).exists():
        raise DatasetError(f"the folder {datasets_dir() / name} exists but no dataset {name!r} is registered "
                           "(left by an interrupted import?); remove the folder or pick another name")


def _validation_mapping(vtable: Table, used: dict[str, str], user_given: bool) -> dict[str, str]:
    """The train mapping for the validation file. A detected mapping drops optional columns it lacks."""
    if user_given:
        return resolve_mapping(vtable, used)
    present = {k: v for k, v in used.items() if k not in OPTIONAL_KEYS or v in vtable.df.columns}
    if "parent_id" in present and "id" not in present:
        del present["parent_id"]
    return resolve_mapping(vtable, present)


def split_by_fraction(conversations: list[Conversation], fraction: float,
                      seed: int) -> tuple[list[Conversation], list[Conversation]]:
    """Move about `fraction` of the conversations to validation, whole groups at a time, seeded.

    Conversations of one thread share their history, so they go to the same side. At least one
    conversation stays in train; both sides keep the source order.
    """
    if fraction <= 0 or len(conversations) < 2:
        return conversations, []
    target = min(max(1, round(len(conversations) * fraction)), len(conversations) - 1)
    sizes = Counter(c.group for c in conversations)
    groups = list(sizes)
    random.Random(seed).shuffle(groups)
    chosen: set[str] = set()
    count = 0
    for group in groups:
        if count >= target:
            break
        if count + sizes[group] <= len(conversations) - 1:
            chosen.add(group)
            count += sizes[group]
    return ([c for c in conversations if c.group not in chosen],
            [c for c in conversations if c.group in chosen])


def conversation_stats(conversations: list[Conversation]) -> dict[str, Any]:
    """Counts and character lengths for the UI. A turn is one user/assistant exchange.

    `length_histogram` bins whole conversations by characters (all turns): `edges` has one more item
    than `counts`, bin i covering [edges[i], edges[i+1]).
    """
    messages = [c.messages for c in conversations]
    turns = [sum(m["role"] == "assistant" for m in ms) for ms in messages]
    prompts = [len(m["content"]) for ms in messages for m in ms if m["role"] == "user"]
    answers = [len(m["content"]) for ms in messages for m in ms if m["role"] == "assistant"]
    lengths = [sum(len(m["content"]) for m in ms) for ms in messages]
    return {
        "conversations": len(conversations),
        "with_system_prompt": sum(bool(ms) and ms[0]["role"] == "system" for ms in messages),
        "turns_per_conversation": {
            **_summary(turns, percentiles=False),
            "counts": {str(k): v for k, v in sorted(Counter(turns).items())},
        },
        "prompt_chars": _summary(prompts),
        "answer_chars": _summary(answers),
        "conversation_chars": _summary(lengths),
        "length_histogram": _histogram(lengths),
    }


def _summary(values: list[int], percentiles: bool = True) -> dict[str, float]:
    if not values:
        return {}
    out: dict[str, float] = {"min": int(min(values)), "mean": round(float(np.mean(values)), 2)}
    if percentiles:
        for q in (50, 90, 99):
            out[f"p{q}"] = int(np.percentile(values, q, method="nearest"))
    out["max"] = int(max(values))
    return out


def _histogram(values: list[int], max_bins: int = 20) -> dict[str, Any]:
    """Bins of a round width (1, 2 or 5 times a power of ten) starting at 0."""
    if not values:
        return {"unit": "characters", "edges": [], "counts": []}
    top = max(values) + 1
    width = 1
    while -(-top // width) > max_bins:
        width = _next_round_width(width + 1)
    n_bins = -(-top // width)
    counts = np.bincount(np.asarray(values) // width, minlength=n_bins)
    return {"unit": "characters", "edges": [i * width for i in range(n_bins + 1)],
            "counts": [int(c) for c in counts]}


def _next_round_width(width: int) -> int:
    """The next of 1, 2, 5, 10, 20, 50, ... at or above `width`."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= width:
                return step * scale
        scale *= 10


def _write_folder(name: str, train: list[Conversation], valid: list[Conversation],
                  info: dict[str, Any]) -> tuple[Path, list[Path]]:
    """Write everything under a hidden temp folder, then rename it to datasets/<name>.

    Returns the folder and the parents this call created (to remove again if the store refuses).
    """
    root = datasets_dir()
    created = [p for p in (root.parent, root) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".importing"))
    final = root / name
    try:
        for split, conversations in (("train", train), ("validation", valid)):
            pq.write_table(_arrow_table(conversations), tmp / SPLIT_FILES[split])
        (tmp / "dataset.yaml").write_text(yaml.safe_dump(info, sort_keys=False, allow_unicode=True),
                                          encoding="utf-8")
        try:
            os.rename(tmp, final)  # atomic; fails when another import created the folder meanwhile
        except OSError as e:
            raise DatasetError(f"a dataset named {name!r} already exists") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    return final, created


def _remove_empty(folders: list[Path]) -> None:
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            pass  # not empty: something else lives there now


def _arrow_table(conversations: list[Conversation]) -> pa.Table:
    return pa.Table.from_arrays([pa.array([c.id for c in conversations], pa.string()),
                                 pa.array([c.messages for c in conversations], MESSAGES_TYPE)], schema=SCHEMA)


def preview_file(path: str | Path, n: int = 5, mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the UI shows before importing: columns, mapping guess, format, first `n` conversations.

    Unreadable files raise DatasetError; mapping and content problems come back in `problem` (with
    the detected mapping and raw rows) so the user can fix the mapping in the form.
    """
    path = Path(path)
    _check_file(path, default_max_bytes())
    table = read_table(path)
    guess = detect_mapping(table.df) if mapping is None else {k: v for k, v in mapping.items() if v}
    result: dict[str, Any] = {
        "file": str(path), "kind": table.kind, "columns": [str(c) for c in table.df.columns],
        "rows": len(table.df), "mapping": guess, "format": mapping_format(guess),
        "sample_rows": [{str(k): _plain(v) for k, v in row.items()}
                        for row in table.df.head(n).to_dict(orient="records")],
        "n_conversations": None, "conversations": [], "problem": None,
    }
    try:
        used = resolve_mapping(table, mapping)
        conversations = build_conversations(table, used)
    except DatasetError as e:
        result["problem"] = str(e)
        return result
    result.update(mapping=used, format=mapping_format(used), n_conversations=len(conversations),
                  conversations=[{"id": c.id, "messages": c.messages} for c in conversations[:n]])
    return result


def _plain(value: Any) -> Any:
    """A cell as a JSON-friendly value for a preview table."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


# --- reading and removing imported datasets -------------------------------------------------------

def dataset_dir(name: str) -> Path:
    """The folder of dataset `name` (the name is checked before it becomes a path)."""
    return datasets_dir() / _checked_name(name)


def read_records(name: str, split: str = "train") -> list[dict[str, Any]]:
    """The split's rows as {"id": str, "messages": [{"role", "content"}, ...]}.

    The sample dataset is registered on first use, so a fresh workspace can train on it directly.
    """
    if split not in SPLIT_FILES:
        raise DatasetError(f"unknown split {split!r}; use {' or '.join(SPLIT_FILES)}")
    file = dataset_dir(name) / SPLIT_FILES[split]
    if not file.is_file():
        from llm_studio.data.sample import SAMPLE_NAME, ensure_sample_dataset
        if name != SAMPLE_NAME:
            raise NotFoundError(f"dataset {name!r} not found (no {file})")
        ensure_sample_dataset()
    return pq.read_table(file).to_pylist()


def read_split(name: str, split: str = "train", missing_ok: bool = False) -> list[list[dict[str, str]]]:
    """The split's conversations, each a list of {"role", "content"} dicts (none for a missing split
    when `missing_ok`: a dataset without validation rows)."""
    try:
        return [row["messages"] for row in read_records(name, split)]
    except (NotFoundError, FileNotFoundError):
        if missing_ok:
            return []
        raise


def delete_dataset(name: str, store: Store | None = None) -> None:
    """Remove dataset `name`: its store row and its folder (NotFoundError when it is not registered).

    The folder is first renamed to a hidden name, so a crash midway never leaves a half-deleted
    folder under the dataset's name (nor an unregistered folder blocking the name).
    """
    folder = dataset_dir(name)
    if store is None:
        from llm_studio.store import Store
        with Store() as own:
            return delete_dataset(name, own)
    trash = None
    if folder.exists():
        trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}.", suffix=".deleting"))
        os.replace(folder, trash)  # replaces the empty placeholder from mkdtemp
    try:
        store.delete_dataset(name)
    except BaseException:
        if trash is not None:
            os.rename(trash, folder)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
