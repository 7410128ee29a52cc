"""Compare (#compare/NAME,NAME,...): overlaid charts per metric, a metric table and a config diff.

The selection lives in the hash, so a comparison is a link that can be shared or bookmarked.
"""

from __future__ import annotations

from typing import Any

from h2o_wave import Q, on, ui

from app import services
from app.components import charts
from app.components.errors import guarded
from app.components.layout import add_card, clear_page, title_card

MAX_POINTS = 400
ORDER = [m for c in charts.CHARTS for m in c.metrics]


@on("#compare")
@guarded
async def compare_empty(q: Q) -> None:
    await compare_page(q, names="")


@on("#compare/{names:str}")
@guarded
async def compare_page(q: Q, names: str) -> None:
    clear_page(q, "#compare")
    q.client.rerender = None
    all_names = await q.run(services.experiment_names)
    chosen = [n for n in dict.fromkeys(n.strip() for n in names.split(",")) if n in all_names]
    q.client.compare = {"names": chosen, "only_diff": q.client.compare_only_diff is not False}
    title_card(q, "Compare experiments", "Pick two or more experiments: their curves overlaid, final metrics "
                                         "side by side, and how their configs differ.", zone="top", items=[
        ui.inline([
            ui.picker(name="compare_pick", label="Experiments", values=chosen, width="600px",
                      choices=[ui.choice(n, n) for n in all_names]),
            ui.button(name="compare_go", label="Compare", primary=True, icon="BarChartVerticalFilter"),
        ], align="end"),
    ])
    if len(chosen) < 2:
        add_card(q, "compare_hint", ui.form_card(box=ui.box("top", order=1, width="100%"), items=[ui.text(
            "Choose at least two experiments." if all_names else "No experiments yet.", name="compare_hint_text")]))
        return
    d = await q.run(services.compare_data, chosen, MAX_POINTS)
    _metric_table(q, chosen, d["latest"])
    _config_diff(q, chosen, d["configs"], q.client.compare["only_diff"])
    _charts(q, chosen, d["series"])


@on("compare_go")
@guarded
async def compare_go(q: Q) -> None:
    names = q.args.compare_pick or (q.client.compare or {}).get("names") or []
    q.page["meta"].redirect = "#compare/" + ",".join(names)


def _metric_table(q: Q, names: list[str], latest: dict[str, dict[str, float]]) -> None:
    """One row per metric, one column per experiment (a handful of runs side by side read best)."""
    metrics = sorted({m for n in names for m in latest[n]}, key=lambda m: (ORDER.index(m) if m in ORDER else 99, m))
    if not metrics:
        table: Any = ui.text("No metrics logged yet.", name="compare_no_metrics")
    else:
        table = ui.table(name="compare_metrics_table", columns=[
            ui.table_column(name="metric", label="Metric (latest)", min_width="170px"),
            *[ui.table_column(name=f"e{i}", label=n, data_type="number", min_width="100px")
              for i, n in enumerate(names)],
        ], rows=[ui.table_row(name=m, cells=[m] + [services.fmt(latest[n].get(m)) for n in names]) for m in metrics])
    links = " &middot; ".join(f"[{n}](#experiment/{n})" for n in names)
    add_card(q, "compare_metrics", ui.form_card(box=ui.box("top", order=1, width="calc(45% - 16px)"),
                                                title="Metrics", items=[ui.text(links, name="compare_links"), table]))


def config_rows(names: list[str], configs: dict[str, dict[str, Any]], only_diff: bool) -> list[list[str]]:
    paths = sorted({p for n in names for p in configs[n]})
    rows = []
    for p in paths:
        values = [configs[n].get(p) for n in names]
        if only_diff and all(v == values[0] for v in values):
            continue
        rows.append([p] + [services.config_to_yaml_value(v) for v in values])
    return rows


def _config_diff(q: Q, names: list[str], configs: dict[str, dict[str, Any]], only_diff: bool) -> None:
    rows = config_rows(names, configs, only_diff)
    table: Any
    if rows:
        table = ui.table(name="compare_config_table", height="440px" if len(rows) > 9 else None, columns=[
            ui.table_column(name="path", label="Setting", min_width="200px", searchable=True),
            *[ui.table_column(name=f"e{i}", label=n, min_width="130px", cell_overflow="wrap")
              for i, n in enumerate(names)],
        ], rows=[ui.table_row(name=r[0], cells=r) for r in rows])
    else:
        table = ui.text("The configs are identical.", name="compare_config_same")
    toggle = ui.toggle(name="compare_only_diff", label="Only differences", value=only_diff, trigger=True)
    add_card(q, "compare_config", ui.form_card(box=ui.box("top", order=2, width="calc(55% - 16px)"), title="Config",
                                               items=[toggle, table]))


@on("compare_only_diff")
@guarded
async def compare_only_diff(q: Q) -> None:
    state = q.client.compare or {}
    q.client.compare_only_diff = bool(q.args.compare_only_diff)
    names = state.get("names") or []
    if len(names) >= 2:
        state["only_diff"] = q.client.compare_only_diff
        configs = await q.run(services.compare_configs, names)
        _config_diff(q, names, configs, state["only_diff"])


def _charts(q: Q, names: list[str], series: dict[str, dict[str, list]]) -> None:
    present = {m for n in names for m in series[n] if series[n][m]}
    order = 0
    for chart in charts.CHARTS:
        for metric in chart.metrics:
            if metric not in present:
                continue
            rows = [r for n in names for p in series[n].get(metric, []) if (r := charts.row(n, p))]
            add_card(q, f"compare_chart_{metric.replace('/', '_')}", charts.plot_card(
                ui.box("grid", order=order, width="calc(50% - 16px)", height="300px"), metric, rows,
                metric.split("/")[-1], chart.points))
            order += 1
