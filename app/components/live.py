"""One background task per browser tab that keeps the current page fresh (live charts, logs, progress).

    live.start(q, tick, interval=1.0)   # tick(q) -> bool: False ends the task; changes are saved after each tick
    live.stop(q)                        # on navigation and when the client disconnects

The task lives in `q.client.live` and uses the `q` of the handler that started it (its own page change
buffer), so a tick never mixes its changes into a handler's. A failing tick is logged and retried; after
several failures in a row the task ends quietly instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from h2o_wave import Q

log = logging.getLogger(__name__)
MAX_FAILURES = 5

Tick = Callable[[Q], Awaitable[bool]]


def start(q: Q, tick: Tick, interval: float = 1.0) -> asyncio.Task:
    stop(q)
    task = asyncio.ensure_future(_loop(q, tick, interval))
    q.client.live = task
    return task


def stop(q: Q) -> None:
    task = q.client.live
    q.client.live = None
    if task is not None and not task.done():
        task.cancel()


def running(q: Q) -> bool:
    task = q.client.live
    return task is not None and not task.done()


async def _loop(q: Q, tick: Tick, interval: float) -> None:
    me = asyncio.current_task()
    failures = 0
    try:
        while True:
            await asyncio.sleep(interval)
            if q.client.live is not me:  # replaced or stopped while we slept
                return
            try:
                more = await tick(q)
                await q.page.save()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a transient store/network error must not kill the page
                failures += 1
                log.exception("live update failed (%d in a row)", failures)
                if failures >= MAX_FAILURES:
                    return
                continue
            if more is False:
                return
    except asyncio.CancelledError:
        pass
    finally:
        if q.client.live is me:
            q.client.live = None
