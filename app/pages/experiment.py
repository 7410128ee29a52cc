"""One experiment (#experiment/NAME[/TAB]): status and actions, then tabs: Charts, Logs, Predictions, Config,
Summary, Chat and Export.

Live updates: while the run is queued or active, a per-client task (app.components.live) polls the store
about once a second. It appends new metric points to the charts' list buffers (`card.data += row`: only
the new rows travel, the cards are never rebuilt), tails the log on the Logs tab and redraws the small
header card when status or progress changed. A (re)load rebuilds the charts from the store's downsampled
history, so nothing depends on the browser having watched the run.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from h2o_wave import Q, on, ui

from app import services
from app.components import charts, live
from app.pages.chat_export import render_chat, render_export
from app.components.errors import guarded
from app.components.layout import add_card, clear_page, remove_card, status_tag

TABS = [("charts", "Charts"), ("logs", "Logs"), ("predictions", "Predictions"), ("config", "Config"),
        ("summary", "Summary"), ("chat", "Chat"), ("export", "Export")]
USAGE = (Path(__file__).resolve().parents[1] / "components" / "usage.md").read_text(encoding="utf-8")
POLL_S = 1.0
HISTORY_POINTS = 1000      # per metric on (re)load; the store downsamples longer series evenly
TAIL_TICKS_AFTER_END = 3
MAX_LIVE_ROWS = 4000       # a chart past this many rows is redrawn once from the downsampled history   # keep polling briefly after the run ends: its last points land with the status


@on("#experiment/{name:str}")
@guarded
async def experiment_default(q: Q, name: str) -> None:
    await experiment_page(q, name=name, tab="charts")


@on("#experiment/{name:str}/{tab:str}")
@guarded
async def experiment_page(q: Q, name: str, tab: str = "charts") -> None:
    clear_page(q, "#experiments")
    tab = tab if tab in dict(TABS) else "charts"
    q.client.rerender = (experiment_page, {"name": name, "tab": tab})
    info = await q.run(services.experiment_info, name)
    add_card(q, "exp_header", header_card(info))
    add_card(q, "exp_tabs", ui.tab_card(box=ui.box("main", order=0), name="exp_tabs",
                                        value=f"#experiment/{name}/{tab}",
                                        items=[ui.tab(name=f"#experiment/{name}/{t}", label=label)
                                               for t, label in TABS]))
    state: dict[str, Any] = {"name": name, "tab": tab, "fingerprint": info["fingerprint"], "cursor": 0,
                             "seen": {}, "counts": {}, "logs": None, "after_end": 0}
    await TAB_RENDERERS[tab](q, name, info, state)
    if info["status"] in services.ACTIVE:
        live.start(q, lambda q: _tick(q, state), interval=POLL_S)


# --- header --------------------------------------------------------------------------------------

def progress_text(info: dict[str, Any]) -> tuple[str, str, float | None]:
    status, step, total = info["status"], info["step"], info["total_steps"]
    steps = f"step {step} of {total}" if total else f"step {step}"
    if status == "queued":
        where = f" (position {info['queue']} in the queue)" if info["queue"] else ""
        return f"Queued{where}", "waiting for a free slot", 0.0
    if status == "running":
        return f"Running: {steps}", f"about {info['eta']} left" if info["eta"] else "", (
            info["progress"] if total else None)
    if status == "stopping":
        return f"Stopping: {steps}", "saving a checkpoint", info["progress"] if total else None
    ended = f"ended {info['ended_ago']}" if info.get("ended_ago") else ""
    return f"{status.capitalize()}: {steps}", ended or status, info["progress"]


def header_card(info: dict[str, Any]) -> Any:
    name, status = info["name"], info["status"]
    label, caption, value = progress_text(info)
    items: list[Any] = [
        ui.inline([ui.text_xl(name, name="exp_title"), status_tag(status)], align="center"),
        ui.progress(label=label, caption=caption, value=value, name="exp_progress"),
    ]
    if info["error"] and status in ("failed", "interrupted", "broken"):
        items.append(ui.message_bar(type="error", name="exp_error",
                                    text=info["error"].splitlines()[0] if info["error"] else ""))
        if "\n" in info["error"]:
            items.append(ui.expander(name="exp_error_details", label="Last log lines", items=[
                ui.text("```\n" + info["error"] + "\n```")]))
    meta = [f"dataset [{info['dataset']}](#dataset/{info['dataset']})" if info["dataset"] else "",
            f"cloned from [{info['parent']}](#experiment/{info['parent']})" if info["parent"] else "",
            f"created {info['created']}", f"train loss {info['train_loss']}" if info["train_loss"] else "",
            f"validation loss {info['val_loss']}" if info["val_loss"] else ""]
    items.append(ui.text(" &middot; ".join(m for m in meta if m), name="exp_meta"))
    buttons = []
    if status in ("running", "stopping"):
        buttons.append(ui.button(name="exp_stop", label="Stop", value=name, icon="Stop", disabled=status == "stopping"))
    if status == "queued":
        buttons.append(ui.button(name="exp_stop", label="Cancel", value=name, icon="Cancel"))
    if status in ("stopped", "interrupted", "failed", "finished"):
        buttons.append(ui.button(name="exp_resume", label="Resume", value=name, icon="Play",
                                 primary=status in ("stopped", "interrupted")))
    buttons += [
        ui.button(name="exp_clone", label="Clone with changes", value=name, icon="Copy"),
        ui.button(name=f"#compare/{name}", label="Compare", icon="BarChartVerticalFilter"),
        ui.button(name="exp_delete", label="Delete", value=name, icon="Delete"),
    ]
    items.append(ui.buttons(buttons))
    return ui.form_card(box=ui.box("top", order=0, width="100%"), items=items)


# --- tabs ----------------------------------------------------------------------------------------

async def render_charts(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    series, cursor = await q.run(services.metric_history, name, charts.CHART_METRICS, HISTORY_POINTS)
    state["cursor"] = cursor
    state["seen"] = {m: max((p.id or 0 for p in pts), default=0) for m, pts in series.items()}
    for i, chart in enumerate(charts.CHARTS):
        rows = charts.history_rows(chart, series)
        card = charts.card_name(chart)
        state["counts"][card] = len(rows)
        add_card(q, card, charts.plot_card(ui.box("grid", order=i, width="calc(33.3% - 16px)", height="270px"),
                                           chart.title, rows, chart.y_title, chart.points))
    if not any(series.values()):
        add_card(q, "exp_charts_empty", ui.form_card(box=ui.box("bottom", order=0), items=[ui.text(
            "No metrics yet: points appear here as the run logs them, without reloading.", name="exp_no_metrics")]))


async def render_logs(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    text = await q.run(services.experiment_logs, name)
    state["logs"] = text
    add_card(q, "exp_logs", ui.form_card(box=ui.box("bottom", order=0), title="train.log (last 300 lines, live)",
                                         items=[ui.markup(log_html(text), name="exp_logs_text")]))


def log_html(text: str | None) -> str:
    return ('<pre style="white-space: pre-wrap; word-break: break-word; font-size: 12px; margin: 0">'
            f"{html.escape(text or '(no log yet)')}</pre>")


def _code(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text.replace('```', chr(39) * 3)}\n```"


async def render_predictions(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    p = await q.run(services.predictions, name)
    if not p["rows"]:
        add_card(q, "exp_predictions", ui.form_card(box=ui.box("bottom", order=0), title="Validation predictions",
                                                    items=[ui.text("No predictions yet: they are written at each "
                                                                   "evaluation.", name="exp_no_predictions")]))
        return
    first = [c for c in ("prompt", "target", "prediction") if c in p["columns"]]
    rest = [c for c in p["columns"] if c not in first]
    cols = first + rest
    columns = [ui.table_column(name=f"c{i}", label=c, min_width="260px" if c in first else "90px",
                               cell_overflow="wrap" if c in first else None, sortable=c not in first,
                               searchable=c in first, data_type=None if c in first else "number")
               for i, c in enumerate(cols)]
    rows = [ui.table_row(name=str(i), cells=[services.fmt(r.get(c)) if not isinstance(r.get(c), str)
                                             else r.get(c) for c in cols]) for i, r in enumerate(p["rows"])]
    shown = f"{len(p['rows'])} of {p['total']}" if p["total"] > len(p["rows"]) else str(p["total"])
    add_card(q, "exp_predictions", ui.form_card(box=ui.box("bottom", order=0),
                                                title=f"Validation predictions ({shown} rows, latest evaluation)",
                                                items=[ui.table(name="exp_predictions_table", columns=columns,
                                                                rows=rows, height="600px")]))


async def render_config(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    text = await q.run(services.saved_config_yaml, name)
    add_card(q, "exp_config", ui.form_card(box=ui.box("bottom", order=0), title="config.yaml", items=[
        ui.text(f"The config this run used, saved in `{info['folder']}/config.yaml` when it was queued "
                "(not the current form)."),
        ui.text(_code(text, "yaml"), name="exp_config_text"),
    ]))


def usage_snippet(name: str) -> str:
    """How to use the run's model outside the studio (a template beside the components, read once)."""
    return USAGE.format(name=name)


async def render_summary(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    s = info.get("summary") or {}
    events = await q.run(_events, name)
    items: list[Any] = []
    if s:
        stats = [("Status", s.get("status", info["status"])), ("Steps", s.get("global_step")),
                 ("Epochs", s.get("epochs")), ("Train time", services.duration(s.get("train_seconds"))),
                 ("Tokens/s", s.get("tokens_per_s")), ("Best step", s.get("best_step"))]
        items.append(ui.stats([ui.stat(label=k, value=str(v if v is not None else "")) for k, v in stats],
                              justify="start", name="exp_summary_stats"))
        final, best = s.get("final_metrics") or {}, s.get("best_metrics") or {}
        keys = sorted(set(final) | set(best))
        if keys:
            items.append(ui.table(name="exp_summary_metrics", columns=[
                ui.table_column(name="metric", label="Metric", min_width="220px"),
                ui.table_column(name="final", label="Final", data_type="number"),
                ui.table_column(name="best", label="Best", data_type="number"),
            ], rows=[ui.table_row(name=k, cells=[k, services.fmt(final.get(k)), services.fmt(best.get(k))])
                     for k in keys]))
        if s.get("best_checkpoint"):
            items.append(ui.text(f"Best checkpoint: `{s['best_checkpoint']}` &middot; last: "
                                 f"`{s.get('last_checkpoint') or ''}`"))
        with_raw = json.dumps(s, indent=2, default=str)
        items.append(ui.expander(name="exp_summary_raw", label="summary.json",
                                 items=[ui.text(_code(with_raw, "json"))]))
    else:
        items.append(ui.text("The summary is written when the run ends.", name="exp_no_summary"))
    add_card(q, "exp_summary", ui.form_card(box=ui.box("bottom", order=0), title="Summary", items=items))
    add_card(q, "exp_usage", ui.form_card(box=ui.box("bottom", order=1), title="Use the model", items=[
        ui.text(usage_snippet(name), name="exp_usage_text")]))
    if events:
        add_card(q, "exp_events", ui.form_card(box=ui.box("bottom", order=2), title="Events", items=[ui.text(
            "\n".join(f"- {e['time']} **{e['level']}** {e['message']}" for e in events), name="exp_events_text")]))


def _events(name: str) -> list[dict[str, Any]]:
    return [{"time": e.time.strftime("%Y-%m-%d %H:%M:%S"), "level": e.level, "message": e.message}
            for e in services.store().list_events(name, limit=50)]


TAB_RENDERERS = {"charts": render_charts, "logs": render_logs, "predictions": render_predictions,
                 "config": render_config, "summary": render_summary, "chat": render_chat, "export": render_export}


# --- live ----------------------------------------------------------------------------------------

async def _tick(q: Q, state: dict[str, Any]) -> bool:
    """One poll: header on change, new chart points appended, the log tail on the Logs tab."""
    tab = state["tab"]
    polled = await q.run(services.poll_experiment, state["name"],
                         charts.CHART_METRICS if tab == "charts" else [], state["cursor"], tab == "logs")
    info = polled["info"]
    if info["fingerprint"] != state["fingerprint"]:
        if info["status"] != state["fingerprint"][0]:
            remove_card(q, "notice")  # "Queued x" / "Stopping x": the header says what happened since
        state["fingerprint"] = info["fingerprint"]
        q.page["exp_header"] = header_card(info)
    points = polled["points"]
    if points:
        state["cursor"] = max(state["cursor"], max(p.id or 0 for p in points))
        if charts.append_points(q, points, state["seen"], state["counts"]) and "exp_charts_empty" in q.client.cards:
            del q.page["exp_charts_empty"]
            q.client.cards.discard("exp_charts_empty")
        if max(state["counts"].values(), default=0) > MAX_LIVE_ROWS:  # hours of watching: keep the browser light
            await render_charts(q, state["name"], info, state)
    if polled["logs"] is not None and polled["logs"] != state["logs"]:
        state["logs"] = polled["logs"]
        q.page["exp_logs"].items[0].markup.content = log_html(polled["logs"])
    if info["status"] in services.ACTIVE:
        state["after_end"] = 0
        return True
    state["after_end"] += 1
    if state["after_end"] == 1 and tab == "summary":
        await render_summary(q, state["name"], info, state)  # the summary exists now
    return state["after_end"] < TAIL_TICKS_AFTER_END
