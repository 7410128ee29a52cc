"""The experiment form, generated from the config schema (`llm_studio.config.ui_fields()`).

Widgets come from each field's type and UI metadata: a toggle for a bool, a dropdown for choices (several
values for a list of choices), a spin box for a number with a range, a text box for the rest (lists as
comma-separated text). Help is the tooltip, fields marked `advanced` hide behind a toggle, and a field
with `visible_if` shows only while the field it names has one of the listed values.

Wave sends only the inputs that changed since the last submission, so the values live in
`q.client.form["values"]` ({dotted path: value}) and `collect` merges each submission into them.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from h2o_wave import Q, ui

PREFIX = "cfg_"
SKIP = {"dataset.name"}   # chosen at the top of the page, beside the preset
MULTILINE = {"dataset.system_prompt", "dataset.prompt_template"}
SECTION_TITLES = {
    "general": "General", "dataset": "Data", "model": "Model", "adapter": "Adapter (LoRA)",
    "training": "Training", "evaluation": "Evaluation", "generation": "Generation",
    "environment": "Environment", "logging": "Logging",
}
BIG = 1_000_000_000


def widget_name(path: str) -> str:
    return PREFIX + path.replace(".", "__")


def path_of(name: str) -> str:
    return name[len(PREFIX):].replace("__", ".")


def _args(ann: Any) -> tuple[Any, ...]:
    return typing.get_args(ann)


def _is_optional(ann: Any) -> bool:
    return (isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union) and type(None) in _args(ann)


def _base(ann: Any) -> Any:
    """`int | None` -> int; `list[str]` stays list[str]."""
    if _is_optional(ann):
        rest = [a for a in _args(ann) if a is not type(None)]
        return rest[0] if len(rest) == 1 else str
    return ann


def _is_list(ann: Any) -> bool:
    return typing.get_origin(_base(ann)) is list


def _item_type(ann: Any) -> Any:
    inner = _args(_base(ann))[0] if _args(_base(ann)) else str
    if typing.get_origin(inner) is typing.Literal:
        return type(_args(inner)[0])
    return inner


def controllers(fields: list[dict[str, Any]]) -> set[str]:
    """Paths that other fields' visibility depends on (their widgets submit on change)."""
    return {p for f in fields for p in (f.get("visible_if") or {})}


def visible(field: dict[str, Any], values: dict[str, Any], advanced: bool) -> bool:
    if field.get("advanced") and not advanced:
        return False
    for path, allowed in (field.get("visible_if") or {}).items():
        if values.get(path) not in allowed:
            return False
    return True


def widget(field: dict[str, Any], value: Any, show: bool, trigger: bool) -> Any:
    path, ann = field["path"], field["annotation"]
    name, label, tip = widget_name(path), field.get("label") or path, field.get("help")
    base = _base(ann)
    choices = field.get("choices")
    if base is bool:
        return ui.toggle(name=name, label=label, value=bool(value), tooltip=tip, visible=show, trigger=trigger)
    if choices:
        options = [ui.choice(name=str(c), label=str(c)) for c in choices]
        if _is_list(ann):
            return ui.dropdown(name=name, label=label, values=[str(v) for v in value or []], choices=options,
                               tooltip=tip, visible=show, trigger=trigger)
        return ui.dropdown(name=name, label=label, value=str(value), choices=options, tooltip=tip, visible=show,
                           trigger=trigger)
    if base in (int, float) and not isinstance(value, str):
        step = field.get("step")
        lo = field.get("min")
        hi = field.get("max")
        if base is float and step and lo is not None and hi is not None and (hi - lo) / step <= 200:
            return ui.slider(name=name, label=label, value=value, min=lo, max=hi, step=step, tooltip=tip,
                             visible=show, trigger=trigger)
        if base is int or (step is not None and step >= 0.01):
            return ui.spinbox(name=name, label=label, value=value, min=lo if lo is not None else -BIG,
                              max=hi if hi is not None else BIG, step=step or 1, tooltip=tip, visible=show,
                              trigger=trigger)
    if _is_list(ann):
        text = ", ".join(str(v) for v in value or [])
        tip = f"{tip} Comma-separated." if tip else "Comma-separated."
        return ui.textbox(name=name, label=label, value=text, tooltip=tip, visible=show, trigger=trigger)
    if base in (int, float):
        bounds = [f"min {field['min']}" if field.get("min") is not None else "",
                  f"max {field['max']}" if field.get("max") is not None else ""]
        rng = ", ".join(b for b in bounds if b)
        return ui.textbox(name=name, label=label, value="" if value is None else str(value),
                          tooltip=f"{tip} ({rng})" if rng else tip, visible=show, trigger=trigger)
    multiline = path in MULTILINE
    return ui.textbox(name=name, label=label, value="" if value is None else str(value), tooltip=tip,
                      visible=show, multiline=multiline, height="80px" if multiline else None, trigger=trigger)


def section_cards(fields: list[dict[str, Any]], values: dict[str, Any], advanced: bool) -> list[tuple[str, Any]]:
    """(card name, form card) per config section, for the `grid` zone."""
    triggers = controllers(fields)
    by_section: dict[str, list[dict[str, Any]]] = {}
    for f in fields:
        if f["path"] in SKIP or f["section"] == "general":
            continue
        by_section.setdefault(f["section"], []).append(f)
    cards = []
    for i, (section, items) in enumerate(by_section.items()):
        widgets = [widget(f, values.get(f["path"], f.get("default")), visible(f, values, advanced),
                          f["path"] in triggers) for f in items]
        hidden = sum(1 for f in items if f.get("advanced")) if not advanced else 0
        if hidden:
            widgets.append(ui.text_xs(f"{hidden} advanced setting{'s' if hidden > 1 else ''} hidden"))
        cards.append((f"form_{section}", ui.form_card(
            box=ui.box("grid", order=i, width="calc(50% - 16px)"), title=SECTION_TITLES.get(section, section),
            items=widgets)))
    return cards


def parse(field: dict[str, Any], raw: Any) -> Any:
    """A submitted widget value as the config wants it (bad text is kept, to be reported by validation)."""
    ann = field["annotation"]
    base = _base(ann)
    choices = field.get("choices")
    if base is bool:
        return bool(raw)
    if choices:
        by_text = {str(c): c for c in choices}
        if _is_list(ann):
            return [by_text.get(str(v), v) for v in (raw or [])]
        return by_text.get(str(raw), raw)
    if _is_list(ann):
        items = [s.strip() for s in str(raw or "").split(",") if s.strip()]
        kind = _item_type(ann)
        if kind is int:
            return [int(s) if s.lstrip("-").isdigit() else s for s in items]
        return items
    if base in (int, float):
        if isinstance(raw, (int, float)):
            return int(raw) if base is int and float(raw).is_integer() else raw
        text = str(raw).strip()
        if text == "" and _is_optional(ann):
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if base is int and number.is_integer() else number
    text = "" if raw is None else str(raw)
    if text.strip() == "" and _is_optional(ann):
        return None
    return text


def collect(q: Q, fields: list[dict[str, Any]], values: dict[str, Any]) -> dict[str, Any]:
    """Merge this submission's form inputs into `values` (in place) and return it."""
    for f in fields:
        raw = q.args[widget_name(f["path"])]
        if raw is not None:
            values[f["path"]] = parse(f, raw)
    return values
