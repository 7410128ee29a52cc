"""Experiment tables (home page, experiments page): status tags, progress bars, key metrics, row actions."""

from __future__ import annotations

from typing import Any

from h2o_wave import ui

from app.components.layout import status_tags

ACTIONS = [
    ("exp_action_open", "Open", "OpenInNewWindow"),
    ("exp_action_stop", "Stop", "Stop"),
    ("exp_action_resume", "Resume", "Play"),
    ("exp_action_clone", "Clone with changes", "Copy"),
    ("exp_action_up", "Move up in queue", "Up"),
    ("exp_action_down", "Move down in queue", "Down"),
    ("exp_action_top", "Move to top of queue", "DoubleChevronUp"),
    ("exp_action_delete", "Delete", "Delete"),
]


MENU = [ui.command(name=n, label=label, icon=icon) for n, label, icon in ACTIONS]


def link(name: str) -> str:
    return f"[{name}](#experiment/{name})"


def experiment_table(name: str, rows: list[dict[str, Any]], *, full: bool = True, height: str | None = None) -> Any:
    """A table of experiments; `full` adds sorting, filters, metrics and the actions menu."""
    columns = [
        ui.table_column(name="name", label="Experiment", min_width="140px", max_width="180px", sortable=full,
                        searchable=full, cell_type=ui.markdown_table_cell_type(target="")),
        ui.table_column(name="status", label="Status", min_width="85px", max_width="90px", filterable=full,
                        sortable=full, cell_type=ui.tag_table_cell_type(name="status_tag", tags=status_tags())),
        ui.table_column(name="progress", label="Progress", min_width="76px", max_width="80px", sortable=full,
                        cell_type=ui.progress_table_cell_type(color="$teal")),
        ui.table_column(name="steps", label="Steps", min_width="80px", max_width="95px"),
    ]
    if full:
        columns += [
            ui.table_column(name="train_loss", label="Train loss", data_type="number", sortable=True,
                            min_width="82px", max_width="85px"),
            ui.table_column(name="val_loss", label="Val loss", data_type="number", sortable=True, min_width="65px",
                            max_width="75px"),
            ui.table_column(name="exact_match", label="Exact match", data_type="number", sortable=True,
                            min_width="95px", max_width="100px"),
            ui.table_column(name="dataset", label="Dataset", filterable=True, sortable=True, min_width="90px",
                            max_width="120px"),
            ui.table_column(name="created", label="Created", sortable=True, min_width="90px", max_width="100px"),
            ui.table_column(name="actions", label="Actions", min_width="55px", max_width="60px",
                            cell_type=ui.menu_table_cell_type(name="exp_actions", commands=MENU)),
        ]
    else:
        columns += [
            ui.table_column(name="eta", label="ETA"),
            ui.table_column(name="train_loss", label="Train loss"),
            ui.table_column(name="created_ago", label="Created"),
        ]
    table_rows = []
    for r in rows:
        steps = f"#{r['queue']} in queue" if r["queue"] else r["steps"]
        cells = [link(r["name"]), r["status"], str(r["progress"]), steps]
        if full:
            cells += [r["train_loss"], r["val_loss"], r["exact_match"], r["dataset"], r["created"], ""]
        else:
            cells += [r["eta"], r["train_loss"], r["created_ago"]]
        table_rows.append(ui.table_row(name=r["name"], cells=cells))
    return ui.table(name=name, columns=columns, rows=table_rows, height=height, resettable=full,
                    downloadable=False)


def fingerprint(rows: list[dict[str, Any]]) -> tuple:
    """What a refresh compares: a table is redrawn only when one of these changed."""
    return tuple((r["name"], r["status"], r["steps"], r["train_loss"], r["val_loss"], r["queue"]) for r in rows)
