"""Experiments: the table (status, progress, metrics, sort and filter, row actions), the new-experiment form,
and the actions shared with the experiment page (stop, resume, clone with changes, delete, queue order).

The form is generated from the config schema (see `app.components.config_form`). Its YAML and CLI
equivalents are one click away, and a YAML file pasted in fills it. Starting queues the run through
`manager.create_and_queue`; the scheduler in this process starts it when a slot is free.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from h2o_wave import Q, on, ui

from app import services
from app.components import config_form, live
from app.components.errors import guarded, user_message
from app.components.layout import add_card, clear_page, close_dialog, confirm, notice, title_card
from app.components.tables import experiment_table, fingerprint
from llm_studio.errors import ConfigError, LLMStudioError

REFRESH_S = 2.0


@lru_cache(maxsize=1)
def fields() -> list[dict[str, Any]]:
    return services.form_fields()


def _field(path: str) -> dict[str, Any]:
    return next(f for f in fields() if f["path"] == path)


async def rerender(q: Q) -> None:
    """Draw the current page again (after an action changed what it shows)."""
    page = q.client.rerender
    if page is not None:
        func, kwargs = page
        await func(q, **kwargs)


# --- the table -----------------------------------------------------------------------------------

@on("#experiments")
@guarded
async def experiments_page(q: Q) -> None:
    clear_page(q, "#experiments")
    q.client.rerender = (experiments_page, {})
    title_card(q, "Experiments", "Queued runs start when a GPU or CPU slot is free. Use the menu at the end of "
                                 "a row to stop, resume, clone with changes, reorder the queue or delete.", items=[
        ui.buttons([ui.button(name="#experiments/new", label="New experiment", primary=True, icon="Add"),
                    ui.button(name="#compare", label="Compare experiments", icon="BarChartVerticalFilter")]),
    ])
    rows = await q.run(services.experiment_rows)
    add_card(q, "exp_list", _list_card(rows))
    q.client.exp_seen = fingerprint(rows)
    live.start(q, _refresh_list, interval=REFRESH_S)


def _list_card(rows: list[dict[str, Any]]) -> Any:
    if not rows:
        items: list[Any] = [ui.text("No experiments yet: start one with **New experiment**.", name="exp_empty")]
    else:
        items = [experiment_table("exp_table", rows, full=True)]
    return ui.form_card(box=ui.box("main", order=1), items=items)


async def _refresh_list(q: Q) -> bool:
    rows = await q.run(services.experiment_rows)
    seen = fingerprint(rows)
    if seen != q.client.exp_seen:
        if bool(rows) != bool(q.client.exp_seen) or len(rows) != len(q.client.exp_seen):
            add_card(q, "exp_list", _list_card(rows))
        else:  # same rows: update them in place, so the table keeps its sort, filter and search
            q.page["exp_list"].items[0].table.rows = experiment_table("exp_table", rows).rows
        q.client.exp_seen = seen
    return True


# --- actions (table menu and experiment page buttons) ------------------------------------------

def _target(q: Q, *names: str) -> str | None:
    for n in names:
        value = q.args[n]
        if value:
            return value
    return None


@on("exp_action_open")
@guarded
async def action_open(q: Q) -> None:
    q.page["meta"].redirect = f"#experiment/{q.args.exp_action_open}"


@on("exp_action_stop")
@on("exp_stop")
@guarded
async def action_stop(q: Q) -> None:
    name = _target(q, "exp_action_stop", "exp_stop")
    status = await q.run(services.stop_experiment, name)
    await rerender(q)
    if status == "stopping":
        notice(q, f"Stopping {name}: it saves a checkpoint and then shows as stopped.", name="exp_notice")
    else:
        notice(q, f"{name} is {status}.", name="exp_notice")


@on("exp_action_resume")
@on("exp_resume")
@guarded
async def action_resume(q: Q) -> None:
    name = _target(q, "exp_action_resume", "exp_resume")
    await q.run(services.resume_experiment, name)
    await rerender(q)
    notice(q, f"{name} is queued to resume from its latest checkpoint.", name="exp_notice")


@on("exp_action_clone")
@on("exp_clone")
@guarded
async def action_clone(q: Q) -> None:
    q.client.form_request = {"clone": _target(q, "exp_action_clone", "exp_clone")}
    q.page["meta"].redirect = "#experiments/new"


@on("exp_action_delete")
@on("exp_delete")
@guarded
async def action_delete(q: Q) -> None:
    name = _target(q, "exp_action_delete", "exp_delete")
    q.client.pending_delete = name
    confirm(q, f"Delete experiment {name}?", f"This stops **{name}** if it runs and removes its folder "
            "(checkpoints, logs, predictions) and its metrics. It cannot be undone.", button="exp_delete_confirm")


@on("exp_delete_confirm")
@guarded
async def action_delete_confirm(q: Q) -> None:
    name = q.client.pending_delete
    close_dialog(q)
    if not name:
        return
    q.client.pending_delete = None
    await q.run(services.delete_experiment, name)
    q.client.flash = f"Deleted experiment {name}."
    if q.client.nav == "#experiments" and q.client.rerender and q.client.rerender[1].get("name") != name:
        await rerender(q)
    else:
        q.page["meta"].redirect = "#experiments"


async def _move(q: Q, name: str, delta: int | None = None, position: int | None = None) -> None:
    await q.run(services.move_experiment, name, delta, position)
    await rerender(q)


@on("exp_action_up")
@guarded
async def action_up(q: Q) -> None:
    await _move(q, q.args.exp_action_up, delta=-1)


@on("exp_action_down")
@guarded
async def action_down(q: Q) -> None:
    await _move(q, q.args.exp_action_down, delta=1)


@on("exp_action_top")
@guarded
async def action_top(q: Q) -> None:
    await _move(q, q.args.exp_action_top, position=1)


# --- the new-experiment form ---------------------------------------------------------------------

def _load_form(request: dict[str, Any] | None) -> dict[str, Any]:
    """The form's starting state (blocking: reads a preset or a saved config)."""
    request = request or {}
    presets = services.presets()
    datasets = services.dataset_names()
    if request.get("clone"):
        parent = request["clone"]
        cfg = services.saved_config(parent)
        taken = set(services.experiment_names())
        name = next(f"{parent}-{i}" for i in range(2, 10_000) if f"{parent}-{i}" not in taken)
        return {"preset": None, "parent": parent, "dataset": cfg.dataset.name, "name": name,
                "values": services.config_values(cfg), "advanced": False, "presets": presets,
                "datasets": datasets, "yaml_text": ""}
    default = services.settings_value("default_preset")  # chosen in Settings, else the offline preset
    preset = request.get("preset") or next((p for p in (default, "tiny-sft") if p in presets),
                                           presets[0] if presets else None)
    cfg = services.preset_config(preset) if preset else services.ExperimentConfig()
    dataset = request.get("dataset") or cfg.dataset.name
    if dataset not in datasets:
        datasets = [*datasets, dataset]
    values = services.config_values(cfg)
    if not values.get("logging.neptune_project"):  # the Settings page's project is the default
        values["logging.neptune_project"] = services.settings_value("neptune_project") or None
    return {"preset": preset, "parent": None, "dataset": dataset,
            "name": services.default_experiment_name(preset or "experiment"), "values": values,
            "advanced": False, "presets": presets, "datasets": datasets, "yaml_text": ""}


@on("#experiments/new")
@guarded
async def new_experiment_page(q: Q) -> None:
    clear_page(q, "#experiments")
    q.client.rerender = None
    request, q.client.form_request = q.client.form_request, None
    q.client.form = await q.run(_load_form, request)
    _render_form(q)


def _render_form(q: Q, problems: list[str] | None = None) -> None:
    f = q.client.form
    parent = f["parent"]
    title = f"Clone {parent} with changes" if parent else "New experiment"
    subtitle = (f"Starts from the saved config of **{parent}**; change what you want to try." if parent else
                "Pick a dataset and a preset, adjust the settings, start. Hover a setting for its help.")
    head: list[Any] = []
    if problems:
        head.append(ui.message_bar(type="error", name="new_problems",
                                   text="Fix these settings: " + "; ".join(problems)))
    preset_choices = [ui.choice(p, p) for p in f["presets"]]
    head += [
        ui.inline([
            *([ui.dropdown(name="new_preset", label="Preset", value=f["preset"], choices=preset_choices,
                           trigger=True, width="220px",
                           tooltip="A ready-made config from experiments/*.yaml; choosing one resets the form.")]
              if not parent else []),
            ui.dropdown(name="new_dataset", label="Dataset", value=f["dataset"], width="220px",
                        choices=[ui.choice(d, d) for d in f["datasets"]], tooltip=_field("dataset.name")["help"]),
            ui.textbox(name="new_name", label="Experiment name", value=f["name"], width="320px",
                       tooltip="Letters, digits, '.', '-' and '_'."),
        ]),
        config_form.widget(_field("description"), f["values"].get("description", ""), True, False),
        ui.toggle(name="new_advanced", label="Show advanced settings", value=f["advanced"], trigger=True),
        ui.buttons([
            ui.button(name="new_start", label="Start", primary=True, icon="Play"),
            ui.button(name="new_show_yaml", label="Show YAML and CLI", icon="Code"),
            ui.button(name="#experiments", label="Cancel"),
        ]),
    ]
    add_card(q, "new_head", ui.form_card(box=ui.box("main", order=0), title=title, items=[ui.text(subtitle), *head]))
    for name, card in config_form.section_cards(fields(), f["values"], f["advanced"]):
        add_card(q, name, card)
    _render_yaml_card(q)


def _render_yaml_card(q: Q) -> None:
    f = q.client.form
    add_card(q, "new_yaml", ui.form_card(box=ui.box("bottom", order=0), title="Import YAML", items=[
        ui.textbox(name="new_yaml_text", label="Paste a config (YAML) to fill the form", multiline=True,
                   height="150px", value=f.get("yaml_text", "")),
        ui.buttons([ui.button(name="new_load_yaml", label="Load YAML into the form", icon="Upload")]),
    ]))


def _show_yaml_dialog(q: Q, yaml_text: str, cli: str) -> None:
    q.page["meta"].dialog = ui.dialog(title="The form as YAML and as a command", name="yaml_dialog", width="860px",
                                      closable=True, events=["dismissed"], items=[
        ui.copyable_text(name="new_cli_out", label="Equivalent command", value=cli, multiline=True,
                         height=f"{min(10, cli.count(chr(10)) + 1) * 20 + 24}px"),
        ui.copyable_text(name="new_yaml_out", label="config.yaml (run it with llm-studio train FILE)",
                         value=yaml_text, multiline=True, height="300px"),
        ui.buttons([ui.button(name="dialog_cancel", label="Close", primary=True)]),
    ])


@on("yaml_dialog.dismissed")
@guarded
async def yaml_dialog_dismissed(q: Q) -> None:
    close_dialog(q)


def _collect(q: Q) -> dict[str, Any]:
    f = q.client.form
    if q.args.new_name is not None:
        f["name"] = q.args.new_name.strip()
    if q.args.new_dataset is not None:
        f["dataset"] = q.args.new_dataset
    if q.args.new_yaml_text is not None:
        f["yaml_text"] = q.args.new_yaml_text
    if q.args.new_advanced is not None:
        f["advanced"] = bool(q.args.new_advanced)
    config_form.collect(q, fields(), f["values"])
    return f


def _config(f: dict[str, Any]) -> services.ExperimentConfig:
    return services.build_config({**f["values"], "dataset.name": f["dataset"]})


def _problems(e: ConfigError) -> list[str]:
    labels = {fl["path"]: fl.get("label") or fl["path"] for fl in fields()}
    return [f"{labels.get(path, path)} ({path}): {reason}" for path, reason in e.problems]


async def _form_ready(q: Q) -> bool:
    if q.client.form is None:  # e.g. the studio restarted: start the form again
        await new_experiment_page(q)
        return False
    return True


@on("new_preset")
@guarded
async def new_preset(q: Q) -> None:
    if not await _form_ready(q):
        return
    f = _collect(q)
    cfg = await q.run(services.preset_config, q.args.new_preset)
    f.update(preset=q.args.new_preset, values=services.config_values(cfg))
    _render_form(q)


@on("new_advanced")
@guarded
async def new_advanced(q: Q) -> None:
    if await _form_ready(q):
        _collect(q)
        _render_form(q)


@on("cfg_{field:str}")
@guarded
async def new_field_changed(q: Q, field: str) -> None:
    """A field others depend on changed (e.g. adapter type): redraw to show or hide them."""
    if q.client.form is not None and q.client.nav == "#experiments" and "new_head" in (q.client.cards or ()):
        _collect(q)
        _render_form(q)


@on("new_show_yaml")
@guarded
async def new_show_yaml(q: Q) -> None:
    if not await _form_ready(q):
        return
    f = _collect(q)
    try:
        cfg = _config(f)
    except ConfigError as e:
        _render_form(q, _problems(e))
        return
    cli = await q.run(services.cli_command, f["preset"], cfg, f["name"])
    if f["parent"]:
        cli = (f"llm-studio experiments clone {f['parent']} --name {f['name']}" +
               "".join(f" \\\n  --set {p}={services.config_to_yaml_value(b)}"
                       for p, (_, b) in (await q.run(_diff_to_parent, f["parent"], cfg)).items()))
    _show_yaml_dialog(q, services.config_to_yaml(cfg), cli)


def _diff_to_parent(parent: str, cfg: services.ExperimentConfig) -> dict[str, Any]:
    return services.config_diff(services.saved_config(parent), cfg)


@on("new_load_yaml")
@guarded
async def new_load_yaml(q: Q) -> None:
    if not await _form_ready(q):
        return
    f = _collect(q)
    text = f.get("yaml_text") or ""
    if not text.strip():
        _render_form(q, ["paste a YAML config into the YAML box first"])
        return
    try:
        cfg = services.config_from_yaml(text, source="the pasted YAML")
    except ConfigError as e:
        _render_form(q, _problems(e))
        return
    f.update(values=services.config_values(cfg), dataset=cfg.dataset.name)
    if cfg.dataset.name not in f["datasets"]:
        f["datasets"] = [*f["datasets"], cfg.dataset.name]
    _render_form(q)
    notice(q, "Loaded the YAML into the form.", type="success", name="new_yaml_loaded")


@on("new_start")
@guarded
async def new_start(q: Q) -> None:
    if not await _form_ready(q):
        return
    f = _collect(q)
    try:
        cfg = _config(f)
        name = await q.run(services.start_experiment, cfg, f["name"], f["parent"])
    except ConfigError as e:
        _render_form(q, _problems(e))
        return
    except LLMStudioError as e:  # name taken, unknown dataset, ...
        _render_form(q, [user_message(e)])
        return
    q.client.form = None
    q.client.flash = f"Queued {name}. It starts when a slot is free; charts update live."
    q.page["meta"].redirect = f"#experiment/{name}"
