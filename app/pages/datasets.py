"""Datasets: the list, import (upload or a local path) with column mapping and preview, and one dataset's page.

Import is two steps. The file is read and previewed first (detected format, the mapping guess pre-filled
in dropdowns, the first conversations rendered); `Import` then writes the dataset. A bad row is shown in
the import card naming file, row and column, and nothing is created (the data layer writes all or nothing).
Uploads wait in a temp folder outside the workspace.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from typing import Any

from h2o_wave import Q, data, on, ui

from app import services
from app.components.errors import guarded
from app.components.layout import add_card, clear_page, close_dialog, confirm, notice, remove_card, title_card
from llm_studio.errors import DatasetError

EXTENSIONS = ["csv", "parquet", "pq", "json", "jsonl", "ndjson"]
MAPPING_KEYS = [  # (key, label, help)
    ("prompt", "Prompt column", "The user turn (instruction or question)."),
    ("answer", "Answer column", "The assistant turn the model learns to write."),
    ("system", "System column", "Optional system prompt per row."),
    ("input", "Input column", "Alpaca style: extra text appended to the prompt."),
    ("id", "Id column", "Row id; with a parent id column, rows chain into multi-turn threads."),
    ("parent_id", "Parent id column", "The id of the previous turn of the same conversation."),
    ("messages", "Messages column", "One column with a list of {role, content} messages (OpenAI style)."),
    ("conversations", "Conversations column", "One column with ShareGPT style {from, value} turns."),
]
NONE = "(none)"


# --- list ----------------------------------------------------------------------------------------

@on("#datasets")
@guarded
async def datasets_page(q: Q) -> None:
    clear_page(q, "#datasets")
    q.client.ds_import = None
    title_card(q, "Datasets", "Import CSV, Parquet, JSON or JSONL files. Columns are detected; the preview "
                              "shows the conversations the model will learn from.")
    add_card(q, "ds_import_start", _import_start_card())
    rows = await q.run(services.dataset_rows)
    add_card(q, "ds_list", _list_card(rows))


def _import_start_card() -> Any:
    return ui.form_card(box=ui.box("main", order=1), title="Import a dataset", items=[
        ui.file_upload(name="dataset_upload", label="Upload and preview", file_extensions=EXTENSIONS,
                       max_file_size=1024, height="180px", compact=False),
        ui.separator("or a file on this machine"),
        ui.inline([
            ui.textbox(name="dataset_path", label="Local path", placeholder="/data/my_dataset.csv", width="500px"),
            ui.button(name="dataset_path_preview", label="Preview", icon="View"),
        ], align="end"),
    ])


def _list_card(rows: list[dict[str, Any]]) -> Any:
    if not rows:
        items: list[Any] = [ui.text("No datasets yet. Import one above, or use the built-in **sample-qa** "
                                    "from the Home page.", name="ds_empty")]
    else:
        items = [ui.table(name="ds_table", columns=[
            ui.table_column(name="name", label="Name", sortable=True, searchable=True, min_width="200px",
                            cell_type=ui.markdown_table_cell_type(target="")),
            ui.table_column(name="format", label="Format", filterable=True),
            ui.table_column(name="train", label="Train rows", data_type="number", sortable=True),
            ui.table_column(name="validation", label="Validation rows", data_type="number", sortable=True),
            ui.table_column(name="created", label="Created", sortable=True),
        ], rows=[ui.table_row(name=r["name"], cells=[f"[{r['name']}](#dataset/{r['name']})", r["format"],
                                                       str(r["train"]), str(r["validation"]), r["created"]])
                 for r in rows])]
    return ui.form_card(box=ui.box("bottom", order=0), title="Datasets", items=items)


# --- import --------------------------------------------------------------------------------------

def suggest_name(file_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(file_name).stem).strip("-._") or "dataset"
    return stem[:80]


@on("dataset_upload")
@guarded
async def dataset_uploaded(q: Q) -> None:
    urls = q.args.dataset_upload or []
    if not urls:
        return
    folder = await q.run(services.upload_dir)
    local = await q.site.download(urls[0], str(folder))
    try:
        await q.site.unload(urls[0])  # the studio keeps its own copy until the import ends
    except Exception:  # noqa: BLE001 - a stale upload on the Wave server is harmless
        pass
    await _start_import(q, local, Path(local).name, temp_dir=str(folder))


@on("dataset_path_preview")
@guarded
async def dataset_path_preview(q: Q) -> None:
    raw = (q.args.dataset_path or "").strip()
    if not raw:
        notice(q, "Type the path of a dataset file on this machine first.", type="warning")
        return
    await _start_import(q, os.path.expanduser(raw), Path(raw).name, temp_dir=None)


async def _start_import(q: Q, path: str, file_name: str, temp_dir: str | None) -> None:
    _discard_upload(q)
    add_card(q, "ds_import_start", _import_start_card())  # a fresh upload box for the next file
    state = {"path": path, "file_name": file_name, "temp_dir": temp_dir, "name": suggest_name(file_name),
             "mapping": None, "fraction": 0.1, "error": None, "preview": None}
    q.client.ds_import = state
    try:
        state["preview"] = await q.run(services.preview_file, path)
        state["mapping"] = dict(state["preview"]["mapping"])
    except DatasetError as e:
        state["error"] = describe(e)
    _render_import(q)


def describe(e: DatasetError) -> str:
    """'bad.csv, row 3, column 'answer': the answer is empty' (the file by name, not its temp path)."""
    where = []
    if e.file:
        where.append(f"file {os.path.basename(e.file)}")
    if e.row is not None:
        where.append(f"row {e.row}")
    if e.column:
        where.append(f"column '{e.column}'")
    reason = e.reason
    return f"{', '.join(where)}: {reason}" if where else reason


def _render_import(q: Q) -> None:
    state = q.client.ds_import
    preview = state["preview"]
    items: list[Any] = [ui.text_l(f"Import {state['file_name']}")]
    if state["error"]:
        items.append(ui.message_bar(type="error", text=state["error"], name="ds_import_error"))
    if preview is None:
        items.append(ui.buttons([ui.button(name="ds_import_cancel", label="Close")]))
        add_card(q, "ds_import", ui.form_card(box=ui.box("main", order=2), items=items))
        remove_card(q, "ds_preview")
        return
    if preview.get("problem") and not state["error"]:
        problem = preview["problem"].replace(state["path"], state["file_name"])
        items.append(ui.message_bar(type="error", name="ds_import_error",
                                    text=f"{problem}. Fix the file, or the column mapping if a column was guessed "
                                         "wrong; nothing has been imported."))
    fmt = preview.get("format") or "unknown (choose the columns)"
    n = preview.get("n_conversations")
    items.append(ui.text(f"{preview['kind'].upper()} file, {preview['rows']} rows; detected format **{fmt}**"
                         + (f", {n} conversations" if n is not None else ""), name="ds_detected"))
    columns = preview["columns"]
    mapping = state["mapping"] or {}
    choices = [ui.choice(NONE, NONE)] + [ui.choice(c, c) for c in columns]
    dropdowns = [ui.dropdown(name=f"ds_map_{key}", label=label, tooltip=tip, value=mapping.get(key) or NONE,
                             choices=choices, width="230px")
                 for key, label, tip in MAPPING_KEYS]
    items += [
        ui.inline([
            ui.textbox(name="ds_name", label="Dataset name", value=state["name"], width="300px",
                       tooltip="Letters, digits, '.', '-' and '_'."),
            ui.spinbox(name="ds_valid_fraction", label="Validation fraction", value=state["fraction"], min=0,
                       max=0.9, step=0.05, width="200px",
                       tooltip="Share of conversations held out for validation (threads stay whole)."),
        ]),
        ui.text_m("Column mapping"),
        ui.inline(dropdowns[:4]),
        ui.inline(dropdowns[4:]),
        ui.buttons([
            ui.button(name="ds_import_button", label="Import", primary=True, icon="Download"),
            ui.button(name="ds_repreview", label="Preview with this mapping", icon="Refresh"),
            ui.button(name="ds_import_cancel", label="Cancel"),
        ]),
    ]
    add_card(q, "ds_import", ui.form_card(box=ui.box("main", order=2), items=items))
    add_card(q, "ds_preview", ui.form_card(box=ui.box("bottom", order=-1), title="Preview", items=[
        ui.text(render_conversations(preview.get("conversations") or []) or "_No conversations to show with "
                "this mapping._", name="ds_preview_conversations"),
        *([ui.separator("First rows as in the file"), _raw_rows_table(preview)] if preview.get("sample_rows")
          else []),
    ]))


def _raw_rows_table(preview: dict[str, Any]) -> Any:
    columns = preview["columns"]
    return ui.table(name="ds_raw_rows", height="220px", columns=[
        ui.table_column(name=f"c{i}", label=c, min_width="120px", cell_overflow="wrap") for i, c in enumerate(columns)
    ], rows=[ui.table_row(name=str(i), cells=["" if r.get(c) is None else str(r.get(c))[:300] for c in columns])
             for i, r in enumerate(preview["sample_rows"])])


def _collect_import(q: Q) -> dict[str, Any]:
    state = q.client.ds_import
    if q.args.ds_name is not None:
        state["name"] = q.args.ds_name.strip()
    if q.args.ds_valid_fraction is not None:
        state["fraction"] = float(q.args.ds_valid_fraction)
    mapping = dict(state["mapping"] or {})
    for key, _, _ in MAPPING_KEYS:
        value = q.args[f"ds_map_{key}"]
        if value is not None:
            if value == NONE:
                mapping.pop(key, None)
            else:
                mapping[key] = value
    state["mapping"] = mapping
    return state


@on("ds_repreview")
@guarded
async def ds_repreview(q: Q) -> None:
    if not q.client.ds_import:
        return await datasets_page(q)
    state = _collect_import(q)
    state["error"] = None
    try:
        preview = await q.run(services.preview_file, state["path"], state["mapping"])
        preview["mapping"] = state["mapping"]
        state["preview"] = preview
    except DatasetError as e:
        state["error"] = describe(e)
    _render_import(q)


@on("ds_import_button")
@guarded
async def ds_import(q: Q) -> None:
    if not q.client.ds_import:
        return await datasets_page(q)
    state = _collect_import(q)
    state["error"] = None
    try:
        name = await q.run(services.import_dataset, state["path"], state["name"], state["mapping"] or None,
                           state["fraction"])
    except DatasetError as e:
        state["error"] = describe(e) + ". Nothing was imported."
        _render_import(q)
        return
    _discard_upload(q)
    q.client.ds_import = None
    q.client.flash = f"Imported dataset {name}."
    q.page["meta"].redirect = f"#dataset/{name}"


@on("ds_import_cancel")
@guarded
async def ds_import_cancel(q: Q) -> None:
    _discard_upload(q)
    q.client.ds_import = None
    remove_card(q, "ds_import")
    remove_card(q, "ds_preview")


def _discard_upload(q: Q) -> None:
    state = q.client.ds_import
    if state and state.get("temp_dir"):
        shutil.rmtree(state["temp_dir"], ignore_errors=True)


# --- one dataset ---------------------------------------------------------------------------------

def _escape(text: str) -> str:
    return html.escape(text or "", quote=False).replace("\n", "  \n")


def render_conversations(conversations: list[Any]) -> str:
    """Conversations as markdown: one block per conversation, one line per turn, roles in bold."""
    blocks = []
    for i, conv in enumerate(conversations, 1):
        messages = conv["messages"] if isinstance(conv, dict) else conv
        cid = conv.get("id") if isinstance(conv, dict) else None
        lines = [f"**Conversation {i}**" + (f" &middot; id `{cid}`" if cid else "")]
        for m in messages:
            role = m["role"]
            lines.append(f"> **{role}**: {_escape(m['content'])}" if role == "system"
                         else f"**{role.capitalize()}**: {_escape(m['content'])}")
        blocks.append("  \n".join(lines))
    return "\n\n---\n\n".join(blocks)


def _stats_table(stats: dict[str, Any]) -> Any:
    keys = [("prompt_chars", "Prompt characters"), ("answer_chars", "Answer characters"),
            ("conversation_chars", "Conversation characters")]
    cols = ["min", "mean", "p50", "p90", "p99", "max"]
    return ui.table(name="ds_stats_table", columns=[ui.table_column(name="what", label="", min_width="190px")] + [
        ui.table_column(name=c, label=c, data_type="number", min_width="50px", max_width="62px") for c in cols
    ], rows=[ui.table_row(name=k, cells=[label] + [str(stats.get(k, {}).get(c, "")) for c in cols])
             for k, label in keys if stats.get(k)])


def histogram_rows(hist: dict[str, Any]) -> list[list[Any]]:
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    return [[f"{edges[i]}-{edges[i + 1] - 1}", int(c)] for i, c in enumerate(counts) if i + 1 < len(edges)]


@on("#dataset/{name:str}")
@guarded
async def dataset_page(q: Q, name: str) -> None:
    clear_page(q, "#datasets")
    d = await q.run(services.dataset_details, name)
    stats = (d["stats"] or {}).get("train", {})
    mapping = ", ".join(f"{k} &larr; `{v}`" for k, v in (d["mapping"] or {}).items())
    used = ", ".join(f"[{n}](#experiment/{n})" for n in d["used_by"]) or "none yet"
    title_card(q, f"Dataset {name}", items=[
        ui.text(f"Format **{d['format']}** &middot; {d['n_train']} train / {d['n_valid']} validation conversations "
                f"&middot; created {d['created']}", name="ds_summary"),
        ui.text(f"Columns: {mapping}  \nUsed by: {used}"),
        ui.buttons([
            ui.button(name="ds_new_experiment", label="New experiment with this dataset", value=name,
                      primary=True, icon="Beaker"),
            ui.button(name="ds_delete", label="Delete", value=name, icon="Delete"),
            ui.button(name="#datasets", label="All datasets"),
        ]),
    ])
    turns = (stats.get("turns_per_conversation") or {}).get("counts") or {}
    add_card(q, "ds_stats", ui.form_card(box=ui.box("grid", order=0, width="calc(50% - 16px)"),
                                         title="Statistics (train split)", items=[
        ui.stats([ui.stat("Conversations", str(stats.get("conversations", d["n_train"]))),
                  ui.stat("With system prompt", str(stats.get("with_system_prompt", 0))),
                  ui.stat("Turns", ", ".join(f"{k}: {v}" for k, v in turns.items()) or "")], justify="start"),
        _stats_table(stats),
    ]))
    hist = histogram_rows(stats.get("length_histogram") or {})
    if hist:
        add_card(q, "ds_histogram", ui.plot_card(
            box=ui.box("grid", order=1, width="calc(50% - 16px)", height="330px"),
            title="Conversation length (characters)", data=data(["length", "count"], len(hist), rows=hist),
            plot=ui.plot([ui.mark(type="interval", x="=length", y="=count", y_min=0, x_title="characters",
                                  y_title="conversations")])))
    add_card(q, "ds_conversations", ui.form_card(box=ui.box("bottom", order=0), title="First conversations", items=[
        ui.text(render_conversations(d["preview"]) or "_Empty._", name="ds_conversations_text"),
    ]))


@on("ds_new_experiment")
@guarded
async def ds_new_experiment(q: Q) -> None:
    q.client.form_request = {"preset": "tiny-sft", "dataset": q.args.ds_new_experiment}
    q.page["meta"].redirect = "#experiments/new"


@on("ds_delete")
@guarded
async def ds_delete(q: Q) -> None:
    name = q.args.ds_delete
    q.client.pending_delete = name
    confirm(q, f"Delete dataset {name}?", f"This removes dataset **{name}** and its files from the workspace. "
            "Experiments that used it keep their results.", button="ds_delete_confirm")


@on("ds_delete_confirm")
@guarded
async def ds_delete_confirm(q: Q) -> None:
    name = q.client.pending_delete
    close_dialog(q)
    if not name:
        return
    await q.run(services.delete_dataset, name)
    q.client.pending_delete = None
    q.client.flash = f"Deleted dataset {name}."
    q.page["meta"].redirect = "#datasets"
