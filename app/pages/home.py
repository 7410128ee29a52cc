"""Home: what is in the workspace, what runs now, the machine's load, and a first-run guide when empty."""

from __future__ import annotations

from typing import Any

from h2o_wave import Q, on, ui

from app import services
from app.components import live
from app.components.errors import guarded
from app.components.layout import add_card, clear_page
from app.components.tables import experiment_table, fingerprint

REFRESH_S = 2.0


def _machine_stats(stats: dict[str, Any]) -> list[Any]:
    items = [
        ui.stat(label="CPU", value=f"{stats['cpu_percent']:.0f}%", caption=f"{stats['cpu_count']} cores",
                icon="Processing", name="home_cpu"),
        ui.stat(label="Memory", value=f"{stats['memory_used_gb']:.1f} GB",
                caption=f"of {stats['memory_total_gb']:.0f} GB ({stats['memory_percent']:.0f}%)", icon="Memo",
                name="home_memory"),
        ui.stat(label="Disk free", value=f"{stats['disk_free_gb']:.0f} GB",
                caption=f"of {stats['disk_total_gb']:.0f} GB",
                icon="HardDriveGroup", name="home_disk"),
    ]
    for g in stats["gpus"]:
        items.append(ui.stat(label=f"GPU {g['index']}", value=f"{g['util_percent']:.0f}%",
                             caption=f"{g['memory_used_gb']:.1f} / {g['memory_total_gb']:.0f} GB, {g['name']}",
                             icon="Game", name=f"home_gpu{g['index']}"))
    if not stats["gpus"]:
        items.append(ui.stat(label="GPU", value="none", caption="CPU training", icon="Game", name="home_gpu"))
    return items


def _machine_card(stats: dict[str, Any]) -> Any:
    return ui.form_card(box=ui.box("top", order=1, width="calc(55% - 16px)"), title="This machine",
                        items=[ui.stats(_machine_stats(stats), justify="between")])


def _workspace_card(overview: dict[str, Any]) -> Any:
    c = overview["status_counts"]
    return ui.form_card(box=ui.box("top", order=0, width="calc(45% - 16px)"), title="Workspace", items=[
        ui.stats([
            ui.stat(label="Datasets", value=str(overview["datasets"]), icon="Database", name="home_datasets"),
            ui.stat(label="Experiments", value=str(overview["experiments"]), icon="TestBeaker",
                    name="home_experiments"),
            ui.stat(label="Running", value=str(c["running"] + c["stopping"]), icon="Play", name="home_running"),
            ui.stat(label="Queued", value=str(c["queued"]), icon="BuildQueue", name="home_queued"),
        ], justify="between"),
    ])


def _guide_card() -> Any:
    return ui.form_card(box=ui.box("main", order=0), title="Welcome to LLM Studio", items=[
        ui.text("Your workspace is empty. Everything works offline on a laptop: the studio ships a small "
                "question-answer dataset (**sample-qa**) and a tiny Llama-style model built on this machine."),
        ui.text("1. Register the sample dataset and open the experiment form prefilled with the **tiny-sft** "
                "preset.  \n2. Press **Start**: the run is queued and trains in its own process.  \n"
                "3. Watch loss and validation metrics update live; compare runs; read the predictions."),
        ui.buttons([ui.button(name="home_try_sample", label="Try the sample", primary=True, icon="Rocket"),
                    ui.button(name="#datasets", label="Import my own data", icon="Upload")]),
        ui.text_s("From a terminal: `llm-studio experiments start experiments/tiny-sft.yaml --set "
                  "training.max_steps=30`"),
    ])


def _active_card(rows: list[dict[str, Any]]) -> Any:
    items: list[Any]
    if rows:
        items = [experiment_table("home_active_table", rows, full=False)]
    else:
        items = [ui.text("Nothing is running or queued.", name="home_idle")]
    return ui.form_card(box=ui.box("main", order=1), title="Running and queued", items=items)


def _recent_card(rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> Any:
    items: list[Any] = [experiment_table("home_recent_table", rows, full=False)] if rows else [
        ui.text("No experiments yet.")]
    if events:
        lines = "\n".join(f"- {e['time']}: **{e['experiment'] or 'studio'}** {e['message']}" for e in events)
        items += [ui.separator("Recent events"), ui.text(lines, name="home_events")]
    return ui.form_card(box=ui.box("bottom", order=0), title="Recent experiments", items=items)


async def _load(q: Q) -> tuple[dict[str, Any], dict[str, Any]]:
    overview = await q.run(services.workspace_overview)
    stats = await q.run(services.system_stats)
    return overview, stats


@on("#home")
@guarded
async def home_page(q: Q) -> None:
    clear_page(q, "#home")
    overview, stats = await _load(q)
    add_card(q, "home_workspace", _workspace_card(overview))
    add_card(q, "home_machine", _machine_card(stats))
    if overview["datasets"] == 0 and overview["experiments"] == 0:
        add_card(q, "home_guide", _guide_card())
    add_card(q, "home_active", _active_card(overview["active"]))
    add_card(q, "home_recent", _recent_card(overview["recent"], overview["events"]))
    q.client.home_seen = (fingerprint(overview["active"]), fingerprint(overview["recent"]),
                          overview["datasets"], overview["experiments"])
    live.start(q, _refresh, interval=REFRESH_S)


async def _refresh(q: Q) -> bool:
    """Every few seconds: machine load always; counts and tables only when something changed."""
    overview, stats = await _load(q)
    for i, stat in enumerate(_machine_stats(stats)):  # in place: the card is not redrawn
        q.page["home_machine"].items[0].stats.items[i].value = stat.value
        q.page["home_machine"].items[0].stats.items[i].caption = stat.caption
    seen = (fingerprint(overview["active"]), fingerprint(overview["recent"]), overview["datasets"],
            overview["experiments"])
    if seen != q.client.home_seen:
        q.client.home_seen = seen
        add_card(q, "home_workspace", _workspace_card(overview))
        add_card(q, "home_active", _active_card(overview["active"]))
        add_card(q, "home_recent", _recent_card(overview["recent"], overview["events"]))
        if overview["datasets"] or overview["experiments"]:
            if "home_guide" in q.client.cards:
                del q.page["home_guide"]
                q.client.cards.discard("home_guide")
    return True


@on("home_try_sample")
@guarded
async def try_sample(q: Q) -> None:
    """Register sample-qa, then open the new-experiment form prefilled with the tiny preset."""
    dataset = await q.run(services.start_sample)
    q.client.form_request = {"preset": "tiny-sft", "dataset": dataset}
    q.page["meta"].redirect = "#experiments/new"
