"""Errors at the UI edge: a user error is a clear message on the page; anything else a friendly error card.

Every handler is wrapped:

    @on("#datasets")
    @guarded
    async def datasets_page(q: Q) -> None: ...

`LLMStudioError` (a bad config, a bad dataset row, a name taken, a run in the wrong state) shows as a
message bar naming what to fix; an unexpected exception shows an error card with the traceback folded
in an expander and a way back home. The page is never left blank or frozen, and the log keeps the
traceback.
"""

from __future__ import annotations

import functools
import logging
import traceback
from typing import Any, Awaitable, Callable

from h2o_wave import Q, ui

from app.components.layout import add_card, notice
from llm_studio.errors import ConfigError, LLMStudioError

log = logging.getLogger(__name__)


def user_message(e: LLMStudioError) -> str:
    if isinstance(e, ConfigError):
        return "The config has problems: " + "; ".join(f"{path}: {reason}" for path, reason in e.problems)
    return str(e).strip().replace("\n", " ")


def show_user_error(q: Q, e: LLMStudioError) -> None:
    notice(q, user_message(e), type="error", name="error_message")


def show_crash(q: Q, where: str) -> None:
    """The friendly error card: what happened in a line, the traceback folded away, a way home."""
    details = traceback.format_exc()
    log.error("unexpected error in %s\n%s", where, details)
    fenced = "```\n" + details.replace("```", "'''") + "\n```"
    add_card(q, "notice", ui.form_card(box="notice", items=[
        ui.message_bar(type="error", name="error_card",
                       text=f"Something went wrong in {where}. The studio is still running: try again, "
                            "or go back to the home page. The details below help when reporting it."),
        ui.expander(name="error_details", label="Details", expanded=False, items=[
            ui.text(fenced, name="error_traceback"),
        ]),
        ui.buttons([ui.button(name="#home", label="Home", icon="Home"),
                    ui.button(name="error_dismiss", label="Dismiss")]),
    ]))


def guarded(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a handler so no exception escapes it (signature kept, so `run_on` passes the same arguments)."""

    @functools.wraps(func)
    async def wrapper(q: Q, *args: Any, **kwargs: Any) -> Any:
        try:
            return await func(q, *args, **kwargs)
        except LLMStudioError as e:
            show_user_error(q, e)
        except Exception:  # noqa: BLE001 - the UI edge: shown to the user, logged with the traceback
            show_crash(q, func.__name__.replace("_", " "))
        return None

    return wrapper
