"""Metric charts: plot cards backed by list data buffers that live updates append to.

A chart's data has the fields (series, step, value). The page builds each card once from the store's
(downsampled) history; afterwards `append_points` adds rows with `card.data += [row]`, which sends only
the new rows to the browser: the card is never rebuilt while a run trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from h2o_wave import Q, data, ui

from llm_studio.store import MetricPoint

FIELDS = ["series", "step", "value"]
COLORS = "$blue $orange $green $red $purple $teal $amber $pink $cyan $brown"


@dataclass(frozen=True)
class Chart:
    key: str                 # card name suffix and data-test name
    title: str
    metrics: tuple[str, ...]
    y_title: str = ""
    points: bool = False     # draw points too (sparse series such as validation metrics)


CHARTS: tuple[Chart, ...] = (
    Chart("loss", "Loss", ("train/loss", "validation/loss"), "loss", points=True),
    Chart("perplexity", "Validation perplexity", ("validation/perplexity",), "perplexity", points=True),
    Chart("exact_match", "Validation exact match", ("validation/exact_match",), "exact match", points=True),
    Chart("bleu", "Validation BLEU", ("validation/bleu",), "BLEU", points=True),
    Chart("lr", "Learning rate", ("train/lr",), "learning rate"),
    Chart("tokens", "Tokens per second", ("train/tokens_per_s",), "tokens/s"),
    Chart("grad_norm", "Gradient norm", ("train/grad_norm",), "norm"),
    Chart("memory", "Memory (MB)", ("train/memory_mb",), "MB"),
    Chart("padding", "Padding fraction", ("train/pad_fraction",), "fraction"),
)
CHART_METRICS: list[str] = [m for c in CHARTS for m in c.metrics]
CHART_OF: dict[str, Chart] = {m: c for c in CHARTS for m in c.metrics}


def series_label(metric: str) -> str:
    """'train/loss' -> 'train', 'validation/loss' -> 'validation' (the legend of the loss chart)."""
    return metric.split("/", 1)[0]


def row(series: str, p: MetricPoint) -> list[Any] | None:
    if p.value is None or not math.isfinite(p.value):
        return None  # NaN / inf cannot be drawn (or serialised)
    return [series, int(p.step), float(f"{p.value:.6g}")]


def plot(chart_title: str, y_title: str, points: bool, color_by_series: bool = True) -> Any:
    color = "=series" if color_by_series else None
    color_range = COLORS if color_by_series else None
    marks = [ui.mark(type="line", x="=step", y="=value", color=color, color_range=color_range, x_title="step",
                     y_title=y_title, y_nice=True, curve="none")]
    if points:
        marks.append(ui.mark(type="point", x="=step", y="=value", color=color, color_range=color_range, size=3))
    return ui.plot(marks)


def plot_card(box: str, title: str, rows: list[list[Any]], y_title: str = "", points: bool = False) -> Any:
    # t="list": a growable buffer; `card.data += [row]` appends without resending the rest
    return ui.plot_card(box=box, title=title, data=data(FIELDS, t="list", rows=rows or None),
                        plot=plot(title, y_title, points), animate=False)


def history_rows(chart: Chart, series: dict[str, list[MetricPoint]], label=series_label) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for metric in chart.metrics:
        for p in series.get(metric, []):
            r = row(label(metric), p)
            if r:
                rows.append(r)
    return rows


def card_name(chart: Chart) -> str:
    return f"chart_{chart.key}"


def append_points(q: Q, points: Iterable[MetricPoint], seen: dict[str, int], counts: dict[str, int]) -> int:
    """Append new points to their charts' buffers; skip ids already drawn. Returns the rows appended.

    `seen[metric]` is the last id drawn per metric (from the history), `counts[card]` rows per card.
    """
    added = 0
    for p in points:
        chart = CHART_OF.get(p.name)
        if chart is None or (p.id is not None and p.id <= seen.get(p.name, 0)):
            continue
        r = row(series_label(p.name), p)
        if r is None:
            continue
        name = card_name(chart)
        q.page[name].data += r
        counts[name] = counts.get(name, 0) + 1
        if p.id is not None:
            seen[p.name] = p.id
        added += 1
    return added
