"""The studio's H2O Wave entry point: one layout per client, then routing by hash (#home, #datasets, ...).

    make wave                                   # http://127.0.0.1:10101 (H2O_WAVE_LISTEN / H2O_WAVE_ADDRESS)
    .venv/bin/wave run --no-reload app.main     # the same, by hand

Thin by design: pages read and call `llm_studio` (never torch, never SQL) through `app.services`, always
via `await q.run(...)`; training runs in worker processes started by the scheduler, which this process
hosts as an asyncio task (one scheduler per workspace: a file lock makes a second one idle).
"""

from __future__ import annotations

import asyncio
import logging

from h2o_wave import Q, app, main, on, run_on  # noqa: F401 - `main` is the ASGI app wave serves

from app import services
from app.components import layout, live
from app.components.errors import guarded, show_crash
from app.pages import compare, datasets, experiment, experiments, home, settings  # noqa: F401 - @on handlers

log = logging.getLogger(__name__)
_scheduler: asyncio.Task | None = None


async def on_startup() -> None:
    """Open (and migrate) the store, then run the scheduler in this process."""
    global _scheduler
    from llm_studio.runner.scheduler import Scheduler

    await asyncio.to_thread(services.store)
    scheduler = await asyncio.to_thread(Scheduler, services.store())
    _scheduler = asyncio.ensure_future(scheduler.run_async())
    await asyncio.to_thread(services.system_stats)  # primes psutil's CPU counter


async def on_shutdown() -> None:
    if _scheduler is not None:
        _scheduler.cancel()
        try:
            await _scheduler
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down either way
            pass


@on("@system.client_disconnect")
async def client_disconnected(q: Q) -> None:
    live.stop(q)


@on("error_dismiss")
@guarded
async def dismiss_error(q: Q) -> None:
    layout.clear_notice(q)


@on("dialog_cancel")
@guarded
async def cancel_dialog(q: Q) -> None:
    layout.close_dialog(q)


@app("/", on_startup=on_startup, on_shutdown=on_shutdown)
async def serve(q: Q) -> None:
    try:
        if not q.client.initialized:
            try:
                theme = await q.run(services.theme)
            except Exception:  # noqa: BLE001 - an unreadable store is reported by the page itself
                theme = "light"
            layout.init_client(q, theme)
        if q.events["@system"]:
            await run_on(q)
            return  # the browser is gone: nothing to draw
        if not await run_on(q):
            await home.home_page(q)  # first load without a hash, or an unknown route
    except Exception:  # noqa: BLE001 - last resort; handlers are guarded themselves
        show_crash(q, "the studio")
    # Wave shows a busy overlay until the page changes: always send at least one (harmless) change
    q.page["header"].subtitle = layout.SUBTITLE
    await q.page.save()
