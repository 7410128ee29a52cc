"""Settings: Hugging Face token, Neptune project and token, CPU slots for the scheduler, theme.

Tokens go to $LLM_STUDIO_HOME/secrets.json (mode 0600) through `llm_studio.settings`; the page only ever
shows them masked ('hf_…3f2a') and an empty box keeps the saved token. Plain settings go to the store.
"""

from __future__ import annotations

from typing import Any

from h2o_wave import Q, on, ui

from app import services
from app.components.errors import guarded
from app.components.layout import THEMES, add_card, clear_page, notice, title_card
from llm_studio.settings import SECRETS

SECRET_LABELS = {"hf_token": "Hugging Face token", "neptune_api_token": "Neptune API token"}


def _secret_caption(info: dict[str, Any], key: str) -> str:
    if info["source"] == "environment":
        return f"Set by the environment variable {SECRETS[key]} ({info['masked']}); it wins over a saved token."
    if info["masked"]:
        return f"Saved: {info['masked']}. Leave the box empty to keep it."
    return "Not set."


def _secret_items(key: str, info: dict[str, Any]) -> list[Any]:
    items: list[Any] = [
        ui.textbox(name=f"settings_{key}", label=SECRET_LABELS[key], password=True, value="",
                   placeholder=info["masked"] or "paste a token", width="420px"),
        ui.text_s(_secret_caption(info, key), name=f"settings_{key}_state"),
    ]
    if info["source"] == "settings":
        items.append(ui.button(name="settings_clear_secret", value=key, label=f"Forget the saved {SECRET_LABELS[key]}",
                               icon="Delete"))
    return items


@on("#settings")
@guarded
async def settings_page(q: Q) -> None:
    clear_page(q, "#settings")
    q.client.rerender = (settings_page, {})
    state = await q.run(services.settings_state)
    values, secrets = state["values"], state["secrets"]
    title_card(q, "Settings", "Tokens are kept in secrets.json in the workspace (readable only by you), never in "
                              "configs or logs.")
    add_card(q, "settings_tokens", ui.form_card(box=ui.box("main", order=1), title="Tokens", items=[
        *_secret_items("hf_token", secrets["hf_token"]),
        ui.textbox(name="settings_neptune_project", label="Neptune project", value=values["neptune_project"],
                   placeholder="workspace/project", width="420px",
                   tooltip="The default for new experiments' logging.neptune_project; empty turns Neptune off."),
        *_secret_items("neptune_api_token", secrets["neptune_api_token"]),
    ]))
    add_card(q, "settings_studio", ui.form_card(box=ui.box("main", order=2), title="Studio", items=[
        ui.spinbox(name="settings_cpu_slots", label="CPU slots", value=values["cpu_slots"], min=1, max=256, step=1,
                   width="200px", tooltip="How many CPU-only runs may train at once; they split the cores "
                                          "evenly. Runs on GPUs take GPUs, not slots. LLM_STUDIO_CPU_SLOTS in "
                                          "the environment wins."),
        ui.choice_group(name="settings_theme", label="Theme", value=values["theme"], inline=True,
                        choices=[ui.choice("light", "Light"), ui.choice("dark", "Dark")]),
        ui.dropdown(name="settings_default_preset", label="Preset for new experiments", width="320px",
                    value=values["default_preset"] or "tiny-sft",
                    choices=[ui.choice(p, p) for p in state["presets"]],
                    tooltip="The config the New experiment form starts from (any preset can still be picked there)."),
        ui.buttons([ui.button(name="settings_save", label="Save", primary=True, icon="Save")]),
    ]))


@on("settings_save")
@guarded
async def settings_save(q: Q) -> None:
    values: dict[str, Any] = {}
    if q.args.settings_cpu_slots is not None:
        values["cpu_slots"] = q.args.settings_cpu_slots
    if q.args.settings_theme is not None:
        values["theme"] = q.args.settings_theme
    if q.args.settings_neptune_project is not None:
        values["neptune_project"] = q.args.settings_neptune_project
    if q.args.settings_default_preset is not None:
        values["default_preset"] = q.args.settings_default_preset
    secrets = {key: q.args[f"settings_{key}"].strip() for key in SECRETS if (q.args[f"settings_{key}"] or "").strip()}
    await q.run(services.save_settings, values, secrets)
    if "theme" in values and values["theme"] != q.client.theme:
        q.client.theme = values["theme"]
        q.page["meta"].theme = THEMES[values["theme"]]
    await settings_page(q)
    notice(q, "Settings saved.", type="success", name="settings_saved")


@on("settings_clear_secret")
@guarded
async def settings_clear_secret(q: Q) -> None:
    key = q.args.settings_clear_secret
    await q.run(services.save_settings, {}, {key: None})
    await settings_page(q)
    notice(q, f"Forgot the saved {SECRET_LABELS.get(key, key)}.", type="success", name="settings_saved")
