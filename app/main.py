"""The studio's H2O Wave entry point: one layout per client, then routing by hash (#home, #datasets, ...).

Thin by design: pages read and call `llm_studio` (never torch, never SQL); work that takes time runs in
worker processes. Start with `make wave` (or `wave run --no-reload app.main`).
"""

from __future__ import annotations

from h2o_wave import Q, app, main, on, run_on, ui  # noqa: F401 - `main` is the ASGI app wave serves

from app.pages import home  # noqa: F401 - registers the page's @on handlers

NAV = [("#home", "Home", "Home")]


def init_client(q: Q) -> None:
    q.page["meta"] = ui.meta_card(box="", title="LLM Studio", theme="h2o-dark", layouts=[
        ui.layout(breakpoint="xs", zones=[
            ui.zone("header"),
            ui.zone("body", direction=ui.ZoneDirection.ROW, zones=[
                ui.zone("nav", size="220px"),
                ui.zone("content", direction=ui.ZoneDirection.COLUMN),
            ]),
        ])
    ])
    q.page["header"] = ui.header_card(box="header", title="LLM Studio", subtitle="Fine-tune LLMs without code",
                                      icon="Robot")
    q.page["nav"] = ui.nav_card(box="nav", value="#home", items=[
        ui.nav_group("Studio", items=[ui.nav_item(name=name, label=label, icon=icon) for name, label, icon in NAV])
    ])
    q.client.cards = set()
    q.client.initialized = True


@app("/")
async def serve(q: Q) -> None:
    if not q.client.initialized:
        init_client(q)
    if not await run_on(q):
        await home.show_home(q)
    await q.page.save()
