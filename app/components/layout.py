"""The frame every page shares: the layout zones, the navigation, the notice area and card bookkeeping.

Zones of the content column, top to bottom: `notice` (messages and error cards), `top` (a row of summary
cards), `main` (forms, tables, tabs), `grid` (a wrapping row: charts), `bottom` (everything below).
A page adds its cards with `add_card`, so `clear_page` can remove exactly them on navigation.
"""

from __future__ import annotations

from typing import Any

from h2o_wave import Q, ui

from app.components import live

NAV: list[tuple[str, str, str]] = [
    ("#home", "Home", "Home"),
    ("#datasets", "Datasets", "Database"),
    ("#experiments", "Experiments", "TestBeaker"),
    ("#compare", "Compare", "BarChartVerticalFilter"),
    ("#settings", "Settings", "Settings"),
]
THEMES = {"light": "default", "dark": "h2o-dark"}
SUBTITLE = "Fine-tune LLMs without code"


def meta_card(theme: str) -> Any:
    return ui.meta_card(
        box="", title="LLM Studio", theme=THEMES.get(theme, "default"),
        layouts=[ui.layout(breakpoint="xs", min_height="100vh", zones=[
            ui.zone("header"),
            ui.zone("body", direction=ui.ZoneDirection.ROW, zones=[
                ui.zone("nav", size="200px"),
                ui.zone("content", direction=ui.ZoneDirection.COLUMN, zones=[
                    ui.zone("notice"),
                    ui.zone("top", direction=ui.ZoneDirection.ROW, wrap="stretch"),
                    ui.zone("main"),
                    ui.zone("grid", direction=ui.ZoneDirection.ROW, wrap="start"),
                    ui.zone("bottom"),
                ]),
            ]),
        ])],
    )


def init_client(q: Q, theme: str) -> None:
    """The cards every page keeps: meta (layout, theme, dialogs), header, navigation."""
    q.page["meta"] = meta_card(theme)
    q.page["header"] = ui.header_card(box="header", title="LLM Studio", subtitle=SUBTITLE, icon="Robot")
    q.page["nav"] = nav_card("#home")
    q.client.nav = "#home"
    q.client.cards = set()
    q.client.theme = theme
    q.client.initialized = True


def nav_card(value: str) -> Any:
    return ui.nav_card(box="nav", value=value, items=[
        ui.nav_group("Studio", items=[ui.nav_item(name=name, label=label, icon=icon) for name, label, icon in NAV])
    ])


def clear_page(q: Q, nav: str) -> None:
    """Leave the current page: stop its live task, remove its cards and dialog, mark `nav` as current."""
    live.stop(q)
    for name in q.client.cards or ():
        del q.page[name]
    q.client.cards = set()
    q.page["meta"].dialog = None
    q.page["meta"].redirect = None  # a redirect already happened; leaving it set could repeat it
    if nav != q.client.nav:
        # Redraw the navigation rather than set its value: a changed value makes Wave's nav card navigate
        # to it, which would leave sub-pages (#experiment/x highlights Experiments) for their section.
        q.page["nav"] = nav_card(nav)
        q.client.nav = nav
    if q.client.flash:  # a message from the handler that redirected here ("Imported dataset x.")
        notice(q, q.client.flash, type="success", name="flash")
        q.client.flash = None


def add_card(q: Q, name: str, card: Any) -> None:
    q.page[name] = card
    q.client.cards.add(name)


def remove_card(q: Q, name: str) -> None:
    if name in (q.client.cards or ()):
        del q.page[name]
        q.client.cards.discard(name)


def notice(q: Q, text: str, type: str = "info", name: str = "notice") -> None:
    """A message bar at the top of the page (replaces the previous one)."""
    add_card(q, "notice", ui.form_card(box="notice", items=[ui.message_bar(type=type, text=text, name=name)]))


def clear_notice(q: Q) -> None:
    remove_card(q, "notice")


def title_card(q: Q, title: str, subtitle: str = "", items: list | None = None, zone: str = "main",
               name: str = "page_title") -> None:
    box = ui.box(zone, order=0, width="100%") if zone == "top" else ui.box(zone, order=0)
    add_card(q, name, ui.form_card(box=box, items=[
        ui.text_xl(title, name=f"{name}_text"),
        *([ui.text(subtitle)] if subtitle else []),
        *(items or []),
    ]))


def confirm(q: Q, title: str, text: str, button: str, cancel: str = "dialog_cancel") -> None:
    """A blocking confirmation dialog; `button` is the name of the confirming button."""
    q.page["meta"].dialog = ui.dialog(title=title, name="confirm_dialog", blocking=True, items=[
        ui.text(text),
        ui.buttons([ui.button(name=button, label="Delete", primary=True),
                    ui.button(name=cancel, label="Cancel")]),
    ])


def close_dialog(q: Q) -> None:
    q.page["meta"].dialog = None


STATUS_COLORS = {  # plain colours, not theme variables: a status must look the same in every theme
    "queued": "#2f6fdb", "running": "#00897b", "stopping": "#ef6c00", "stopped": "#757575", "finished": "#2e7d32",
    "failed": "#c62828", "interrupted": "#f9a825", "broken": "#c62828",
}


def status_tags() -> list:
    return [ui.tag(label=s, color=c, label_color="#ffffff") for s, c in STATUS_COLORS.items()]


def status_tag(status: str) -> Any:
    return ui.tags([ui.tag(label=status, color=STATUS_COLORS.get(status, "#757575"), label_color="#ffffff")])
