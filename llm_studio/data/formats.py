"""Read dataset files (CSV, Parquet, JSON, JSONL) into tables and guess which columns hold what.

Row numbers in errors are the ones a person finds when opening the file:
- CSV: the spreadsheet row, the header being row 1 (so the first data row is row 2);
- JSONL: the line number; JSON: the position of the object in the array (from 1);
- Parquet: the position of the row in the file (from 1).
`Table.rows` keeps that number beside each DataFrame row, and `ROW_MEANING` says it in words.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm_studio.errors import DatasetError

EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json",
              ".jsonl": "jsonl", ".ndjson": "jsonl"}
ROW_MEANING = {"csv": "spreadsheet row, the header is row 1", "jsonl": "line number",
               "json": "position in the JSON array, from 1", "parquet": "row in the file, from 1"}
MAPPING_KEYS = ("prompt", "input", "answer", "system", "id", "parent_id", "messages", "conversations")
FORMATS = ("prompt_answer", "alpaca", "threads", "openai_messages", "sharegpt")

# Column names recognised by detection, in order of preference (compared case-insensitively).
CANDIDATES = {
    "prompt": ("prompt", "instruction", "question", "input"),
    "answer": ("answer", "output", "response", "completion"),
    "system": ("system", "system_prompt"),
    "id": ("id",),
    "parent_id": ("parent_id", "parent"),
    "messages": ("messages",),
    "conversations": ("conversations",),
}
_CHUNK = 1 << 20


@dataclass
class Table:
    """A file read into a DataFrame, with the human row number of each DataFrame row."""

    df: pd.DataFrame
    file: str           # the path as given, used in error messages
    kind: str           # csv | parquet | json | jsonl
    rows: list[int]     # rows[i] is the row number of df.iloc[i] (see ROW_MEANING)

    def error(self, message: str, position: int | None = None, column: str | None = None) -> DatasetError:
        """A DatasetError for DataFrame position `position` (or the whole file when None)."""
        if position is None:
            return DatasetError(message, file=self.file, column=column)
        return DatasetError(f"{message} (row = {ROW_MEANING[self.kind]})", file=self.file,
                            row=self.rows[position], column=column)


def file_kind(path: str | Path) -> str:
    """csv | parquet | json | jsonl from the extension, or DatasetError for anything else."""
    kind = EXTENSIONS.get(Path(path).suffix.lower())
    if kind is None:
        raise DatasetError(f"unsupported file type {Path(path).suffix or '(no extension)'!r}; "
                           f"use one of {', '.join(sorted(EXTENSIONS))}", file=str(path))
    return kind


def read_table(path: str | Path) -> Table:
    """Read a dataset file into a Table. Every problem becomes a DatasetError naming the file."""
    path = Path(path)
    name = str(path)
    kind = file_kind(path)
    if not path.is_file():
        raise DatasetError("file not found" if not path.exists() else "not a file", file=name)
    if path.stat().st_size == 0:
        raise DatasetError("the file is empty", file=name)
    if kind == "parquet":
        table = _read_parquet(path, name)
    else:
        _check_text(path, name, kind)
        table = {"csv": _read_csv, "json": _read_json, "jsonl": _read_jsonl}[kind](path, name)
    if len(table.df) == 0:
        raise DatasetError("the file has no data rows", file=name)
    return table


def _read_parquet(path: Path, name: str) -> Table:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PAR1":
        raise DatasetError("not a Parquet file (no Parquet magic bytes); check the file and its extension", file=name)
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DatasetError(f"cannot read the Parquet file: {e}", file=name) from e
    return Table(df.reset_index(drop=True), name, "parquet", list(range(1, len(df) + 1)))


def _check_text(path: Path, name: str, kind: str) -> None:
    """Refuse binary content and text that is not UTF-8, pointing at the first bad byte's row."""
    with open(path, "rb") as f:
        head = f.read(8192)
    if head.startswith(b"PAR1"):
        raise DatasetError(f"this is a Parquet file, not {kind.upper()}; rename it to .parquet", file=name)
    if b"\x00" in head:
        raise DatasetError(f"binary content, not a {kind.upper()} text file; check the file and its extension",
                           file=name)
    if kind == "csv" and re.match(rb'^(\xef\xbb\xbf)?\s*(\{\s*"|\[\s*[\{\]])', head):
        raise DatasetError("this looks like JSON, not CSV; rename it to .json or .jsonl", file=name)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                _raise_not_utf8(path, name, kind, offset + e.start)
            if not chunk:
                return
            offset += len(chunk)


def _raise_not_utf8(path: Path, name: str, kind: str, bad: int) -> None:
    with open(path, "rb") as f:
        prefix = f.read(bad + 4)
    try:  # re-decode: the incremental decoder's offset can be off by a carried-over partial character
        prefix.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start
    byte = prefix[bad]
    text = prefix[:bad].decode("utf-8", errors="replace")
    message = f"not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"
    line = text.count("\n") + 1
    if kind == "csv":
        # A sentinel where the bad byte was lands in the same record and field once parsed.
        records = list(csv.reader(io.StringIO(text.lstrip("\ufeff") + "\x01"), delimiter=_csv_separator(path)))
        header = records[0] if len(records) > 1 else []
        field = len(records[-1]) - 1
        column = header[field] if 0 <= field < len(header) else None
        raise DatasetError(f"{message} (row = {ROW_MEANING['csv']})", file=name, row=len(records), column=column)
    if kind == "jsonl":
        with open(path, "rb") as f:
            raw = next(itertools.islice(f, line - 1, line), b"")
        try:  # name the key whose value holds the bad byte
            item = json.loads(raw.decode("utf-8", errors="replace"))
            column = next((str(k) for k, v in item.items() if "\ufffd" in json.dumps(v, ensure_ascii=False)), None)
        except (ValueError, AttributeError):
            column = None
        raise DatasetError(f"{message} (row = {ROW_MEANING['jsonl']})", file=name, row=line, column=column)
    raise DatasetError(f"{message} at line {line}", file=name)


def _read_csv(path: Path, name: str) -> Table:
    try:
        # Everything as text, and no NaN guessing: an answer "None" or "NA" stays that text.
        # Blank lines are kept so that row numbers match a spreadsheet; empty rows are dropped below.
        df = pd.read_csv(path, sep=_csv_separator(path), dtype=str, keep_default_na=False, na_filter=False,
                         skip_blank_lines=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as e:
        raise DatasetError("the file has no header and no rows", file=name) from e
    except pd.errors.ParserError as e:
        text = str(e).strip()
        m = re.search(r"Expected \d+ fields in line (\d+), saw \d+", text)
        if m:
            raise DatasetError(f"malformed CSV: {text.split('C error: ')[-1]} "
                               f"(row = {ROW_MEANING['csv']}); quote fields that contain commas",
                               file=name, row=int(m.group(1))) from e
        m = re.search(r"EOF inside string starting at row (\d+)", text)
        if m:
            raise DatasetError(f"malformed CSV: a quoted field is never closed (row = {ROW_MEANING['csv']})",
                               file=name, row=int(m.group(1)) + 1) from e
        raise DatasetError(f"malformed CSV: {text}", file=name) from e
    rows = list(range(2, len(df) + 2))
    keep = (df != "").any(axis=1).tolist() if len(df.columns) else [False] * len(df)
    df = df[keep].reset_index(drop=True)
    return Table(df, name, "csv", [r for r, k in zip(rows, keep) if k])


def _csv_separator(path: Path) -> str:
    """',' unless the header has none and uses ';' (spreadsheets in many locales) or tabs instead."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline()
    if "," in header:
        return ","
    return max((";", "\t"), key=header.count) if (";" in header or "\t" in header) else ","


def _read_json(path: Path, name: str) -> Table:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(path, name)  # JSON lines saved as .json: common, and unambiguous
        raise DatasetError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", file=name) from e
    if isinstance(data, dict):
        raise DatasetError("expected a JSON array of objects, found one object "
                           "(JSON lines should use the .jsonl extension)", file=name)
    if not isinstance(data, list):
        raise DatasetError(f"expected a JSON array of objects, found {type(data).__name__}", file=name)
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise DatasetError(f"expected an object, found {_json_type(item)} (row = {ROW_MEANING['json']})",
                               file=name, row=i + 1)
    return Table(pd.DataFrame.from_records(data), name, "json", list(range(1, len(data) + 1)))


def _read_jsonl(path: Path, name: str) -> Table:
    records, rows = [], []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"invalid JSON at column {e.colno}: {e.msg} (row = {ROW_MEANING['jsonl']})",
                                   file=name, row=line_no) from e
            if not isinstance(item, dict):
                raise DatasetError(f"expected a JSON object, found {_json_type(item)} "
                                   f"(row = {ROW_MEANING['jsonl']})", file=name, row=line_no)
            records.append(item)
            rows.append(line_no)
    return Table(pd.DataFrame.from_records(records), name, "jsonl", rows)


def _json_type(value: Any) -> str:
    """How a value reads to someone who wrote the file: 'an array', 'an object', 'a number', ..."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return {str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


# --- column mapping -------------------------------------------------------------------------------

def detect_mapping(df: pd.DataFrame) -> dict[str, str]:
    """Guess the column mapping from column names (case-insensitive). May be incomplete or empty.

    Keys: prompt, input (alpaca's extra prompt part), answer, system, id, parent_id, messages,
    conversations. `mapping_format` tells which format a mapping describes.
    """
    by_lower: dict[str, str] = {}
    for column in df.columns:
        by_lower.setdefault(str(column).strip().lower(), column)

    def find(key: str) -> str | None:
        return next((by_lower[c] for c in CANDIDATES[key] if c in by_lower), None)

    mapping: dict[str, str] = {}
    for key in ("messages", "conversations"):
        if find(key):
            mapping[key] = find(key)
            break
    else:
        if "instruction" in by_lower and "input" in by_lower:  # alpaca: instruction + input + output
            mapping["prompt"], mapping["input"] = by_lower["instruction"], by_lower["input"]
        elif find("prompt"):
            mapping["prompt"] = find("prompt")
        if find("answer"):
            mapping["answer"] = find("answer")
        if find("parent_id") and find("id"):
            mapping["parent_id"] = find("parent_id")
    for key in ("system", "id"):
        if find(key):
            mapping[key] = find(key)
    return mapping


def mapping_format(mapping: dict[str, str]) -> str | None:
    """The source format a mapping describes (see FORMATS), or None when it is incomplete."""
    if mapping.get("messages"):
        return "openai_messages"
    if mapping.get("conversations"):
        return "sharegpt"
    if not (mapping.get("prompt") and mapping.get("answer")):
        return None
    if mapping.get("parent_id"):
        return "threads"
    if mapping.get("input") or (str(mapping["prompt"]).lower(), str(mapping["answer"]).lower()) == (
            "instruction", "output"):
        return "alpaca"
    return "prompt_answer"


def resolve_mapping(table: Table, mapping: dict[str, Any] | None = None) -> dict[str, str]:
    """The mapping to use for `table`: `mapping` when given (it replaces detection), else the detected one.

    Raises DatasetError for unknown keys, columns the file lacks, and incomplete mappings, always
    listing the columns found so the user can fix the mapping.
    """
    found = ", ".join(map(str, table.df.columns))
    if mapping is None:
        resolved = detect_mapping(table.df)
        if mapping_format(resolved) is None:
            raise DatasetError(
                f"cannot tell which columns hold the conversations; found columns: {found}. Name them "
                "prompt/answer (optionally system, id, parent_id), or messages, or conversations, "
                "or give a column mapping", file=table.file)
        return resolved
    unknown = [k for k in mapping if k not in MAPPING_KEYS]
    if unknown:
        raise DatasetError(f"unknown mapping key(s) {', '.join(map(repr, unknown))}; "
                           f"use {', '.join(MAPPING_KEYS)}", file=table.file)
    resolved = {k: v for k, v in mapping.items() if v not in (None, "")}
    for key, column in resolved.items():
        if column not in table.df.columns:
            raise DatasetError(f"mapped column for {key!r} not found; found columns: {found}",
                               file=table.file, column=str(column))
    if mapping_format(resolved) is None:
        raise DatasetError("the mapping needs 'prompt' and 'answer', or 'messages', or 'conversations' "
                           f"(given: {', '.join(resolved) or 'nothing'}; found columns: {found})",
                           file=table.file)
    if resolved.get("parent_id") and not resolved.get("id"):
        raise DatasetError(f"'parent_id' needs an 'id' column too; found columns: {found}", file=table.file)
    return resolved


def cell_text(value: Any) -> str | None:
    """A cell as text; None for missing values. Integer-valued floats (pandas upcasts) lose the '.0'."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    raise TypeError(f"expected text, found {_json_type(value)}")
