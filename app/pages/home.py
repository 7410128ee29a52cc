"""Home page: what is in the workspace and how to start (a first-run guide when it is empty)."""

from __future__ import annotations

from h2o_wave import Q, on, ui

from llm_studio.store import Store


def clear_cards(q: Q) -> None:
    for name in q.client.cards or ():
        del q.page[name]
    q.client.cards = set()


def add_card(q: Q, name: str, card: object) -> None:
    q.page[name] = card
    q.client.cards.add(name)


def workspace_counts() -> dict[str, int]:
    store = Store()
    experiments = store.list_experiments()
    return {
        "datasets": len(store.list_datasets()),
        "experiments": len(experiments),
        "running": sum(e.status == "running" for e in experiments),
    }


@on("#home")
async def show_home(q: Q) -> None:
    clear_cards(q)
    counts = await q.run(workspace_counts)
    items = [ui.stat(label=label.capitalize(), value=str(value)) for label, value in counts.items()]
    add_card(q, "home_stats", ui.form_card(box="content", items=[ui.stats(items=items, justify="start")]))
    if counts["datasets"] == 0 and counts["experiments"] == 0:
        add_card(q, "home_guide", ui.form_card(box="content", items=[
            ui.text_l("Welcome to LLM Studio"),
            ui.text("Start with the built-in sample dataset and the tiny offline model: no GPU or internet "
                    "needed. From the command line: `llm-studio train experiments/tiny-sft.yaml`."),
        ]))
