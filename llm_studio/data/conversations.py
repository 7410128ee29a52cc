"""Turn a mapped table into normalized conversations.

A conversation is a list of {"role", "content"} dicts: an optional leading system turn, then user and
assistant turns alternating, ending with an assistant turn. Every source format lands here:

- prompt_answer / alpaca: one row = one exchange (alpaca's prompt = instruction + "\\n\\n" + input);
- threads: rows linked by id/parent_id, one row = one exchange whose parent is the previous exchange;
  each leaf gives one conversation, the path from its root (system turn taken from the root row);
- openai_messages / sharegpt: one row = one whole conversation, in a list column.

Problems raise DatasetError naming the file, row and column (see `formats.Table.error`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from llm_studio.data.formats import Table, cell_text, mapping_format

ROLES = ("system", "user", "assistant")
# ShareGPT speaks of human/gpt; some exports mix in the OpenAI names.
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "system": "system"}


@dataclass
class Conversation:
    id: str
    messages: list[dict[str, str]]
    group: str  # conversations sharing history (one thread's root) stay together in a split


def build_conversations(table: Table, mapping: dict[str, str]) -> list[Conversation]:
    """All conversations of `table` under a resolved `mapping` (see formats.resolve_mapping)."""
    fmt = mapping_format(mapping)
    if fmt == "threads":
        return _threads(table, mapping)
    if fmt in ("openai_messages", "sharegpt"):
        return _listed(table, mapping, mapping.get("messages") or mapping["conversations"])
    return _exchanges(table, mapping)


def _column(table: Table, column: str | None) -> list[Any]:
    return table.df[column].tolist() if column else [None] * len(table.df)


def _text(table: Table, pos: int, column: str | None, value: Any, what: str | None = None) -> str | None:
    """The cell as text. With `what`, the cell is required: empty or blank raises naming `what`."""
    try:
        text = cell_text(value)
    except TypeError as e:
        raise table.error(str(e), pos, column) from None
    if what and (text is None or not text.strip()):
        raise table.error(f"empty {what}", pos, column)
    return text


def _ids(table: Table, mapping: dict[str, str]) -> list[str]:
    """Conversation/exchange ids: the id column (non-empty, unique), else 'row-N' after the row number."""
    column = mapping.get("id")
    if not column:
        return [f"row-{r}" for r in table.rows]
    ids: list[str] = []
    first_pos: dict[str, int] = {}
    for pos, value in enumerate(_column(table, column)):
        id_ = _text(table, pos, column, value, "id").strip()
        if id_ in first_pos:
            raise table.error(f"duplicate id {id_!r} (first used in row {table.rows[first_pos[id_]]})",
                              pos, column)
        first_pos[id_] = pos
        ids.append(id_)
    return ids


def _exchange_rows(table: Table, mapping: dict[str, str]) -> list[tuple[str | None, str, str]]:
    """(system, prompt, answer) per row, with alpaca's input appended to the prompt."""
    out = []
    columns = [mapping.get(k) for k in ("system", "prompt", "input", "answer")]
    for pos, (system, prompt, extra, answer) in enumerate(zip(*(_column(table, c) for c in columns))):
        prompt = _text(table, pos, mapping["prompt"], prompt, "prompt")
        extra = _text(table, pos, mapping.get("input"), extra)
        if extra and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        answer = _text(table, pos, mapping["answer"], answer, "answer")
        system = _text(table, pos, mapping.get("system"), system)
        out.append((system if system and system.strip() else None, prompt, answer))
    return out


def _exchanges(table: Table, mapping: dict[str, str]) -> list[Conversation]:
    ids = _ids(table, mapping)
    conversations = []
    for id_, (system, prompt, answer) in zip(ids, _exchange_rows(table, mapping)):
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        conversations.append(Conversation(id_, messages, id_))
    return conversations


def _threads(table: Table, mapping: dict[str, str]) -> list[Conversation]:
    ids = _ids(table, mapping)
    exchanges = _exchange_rows(table, mapping)
    pos_of = {id_: pos for pos, id_ in enumerate(ids)}
    column = mapping["parent_id"]
    parents: list[str | None] = []
    for pos, value in enumerate(_column(table, column)):
        parent = _text(table, pos, column, value)
        parent = parent.strip() if parent and parent.strip() else None
        if parent is not None and parent not in pos_of:
            raise table.error(f"parent_id {parent!r} matches no id", pos, column)
        parents.append(parent)
    _check_no_cycles(table, column, ids, parents, pos_of)

    has_child = {p for p in parents if p is not None}
    conversations = []
    for leaf, id_ in enumerate(ids):
        if id_ in has_child:
            continue
        path = [leaf]
        while parents[path[-1]] is not None:
            path.append(pos_of[parents[path[-1]]])
        path.reverse()
        system = exchanges[path[0]][0]
        messages = [{"role": "system", "content": system}] if system else []
        for pos in path:
            messages += [{"role": "user", "content": exchanges[pos][1]},
                         {"role": "assistant", "content": exchanges[pos][2]}]
        conversations.append(Conversation(id_, messages, ids[path[0]]))
    return conversations


def _check_no_cycles(table: Table, column: str, ids: list[str], parents: list[str | None],
                     pos_of: dict[str, int]) -> None:
    """Walk up from every row; meeting a row of the current walk again is a cycle."""
    done = [False] * len(ids)
    for start in range(len(ids)):
        walk: list[int] = []
        on_walk: set[int] = set()
        pos: int | None = start
        while pos is not None and not done[pos]:
            if pos in on_walk:
                loop = walk[walk.index(pos):] + [pos]
                chain = " -> ".join(repr(ids[p]) for p in loop)
                raise table.error(f"parent_id cycle: {chain}", min(loop[:-1]), column)
            walk.append(pos)
            on_walk.add(pos)
            parent = parents[pos]
            pos = pos_of[parent] if parent is not None else None
        for p in walk:
            done[p] = True


def _listed(table: Table, mapping: dict[str, str], column: str) -> list[Conversation]:
    ids = _ids(table, mapping)
    systems = _column(table, mapping.get("system"))
    conversations = []
    for pos, (id_, value, system) in enumerate(zip(ids, _column(table, column), systems)):
        messages = normalize_turns(table, pos, column, value)
        system = _text(table, pos, mapping.get("system"), system)
        if system and system.strip() and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        conversations.append(Conversation(id_, messages, id_))
    return conversations


def normalize_turns(table: Table, pos: int, column: str, value: Any) -> list[dict[str, str]]:
    """A list cell ({role, content} or ShareGPT {from, value} turns) as a checked conversation."""
    if isinstance(value, str):  # CSV has no lists: accept the list written as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise table.error("expected a list of turns, found text that is not JSON", pos, column) from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise table.error("expected a non-empty list of turns", pos, column)
    messages: list[dict[str, str]] = []
    for k, turn in enumerate(value, start=1):
        if not isinstance(turn, dict):
            raise table.error(f"turn {k}: expected an object with role and content", pos, column)
        raw_role = turn.get("role", turn.get("from"))
        role = ROLE_ALIASES.get(str(raw_role).strip().lower()) if raw_role is not None else None
        if role is None:
            raise table.error(f"turn {k}: unsupported role {raw_role!r}; use system, user or assistant "
                              "(ShareGPT: system, human, gpt)", pos, column)
        content = _content(turn.get("content", turn.get("value")))
        if content is None:
            raise table.error(f"turn {k} ({role}): content must be text", pos, column)
        if not content.strip():
            if role == "system":
                continue  # an empty system prompt says nothing; drop it rather than refuse the row
            raise table.error(f"turn {k} ({role}) is empty", pos, column)
        expected = _expected_role(messages)
        if role not in expected:
            raise table.error(f"turn {k}: expected {' or '.join(expected)}, found {role} "
                              "(turns go: optional system, then user and assistant alternating)", pos, column)
        messages.append({"role": role, "content": content})
    if not messages or messages[-1]["role"] != "assistant":
        raise table.error("the conversation must end with an assistant turn", pos, column)
    return messages


def _expected_role(messages: list[dict[str, str]]) -> tuple[str, ...]:
    if not messages:
        return ("system", "user")
    return ("assistant",) if messages[-1]["role"] == "user" else ("user",)


def _content(value: Any) -> str | None:
    """Text content; OpenAI's list of parts ([{"type": "text", "text": ...}]) is joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    return None
