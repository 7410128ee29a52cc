"""The experiment page's Chat and Export tabs. All model work runs in other processes: chat talks to the
experiment's chat service (llm_studio.chat, JSON lines over a pipe), export and push run as
`llm-studio export` subprocesses whose end the tab polls for. The web process only moves text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from h2o_wave import Q, data, on, ui

from app import model_services as services
from app import services as studio
from app.components.errors import guarded
from app.components.layout import add_card

GENERATION_DEFAULTS = {"max_new_tokens": 64, "temperature": 0.0}


def _history(q: Q, name: str) -> list[dict[str, str]]:
    """The conversation with `name`, kept per experiment for this browser client."""
    if q.client.chats is None:
        q.client.chats = {}
    return q.client.chats.setdefault(name, [])


async def render_chat(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    q.client.chat_name = name
    rows = [[m["content"], m["role"] == "user"] for m in _history(q, name)]
    settings = q.client.chat_settings or dict(GENERATION_DEFAULTS)
    info["can_chat"] = await q.run(services.can_chat, name)
    if not info["can_chat"]:
        add_card(q, "exp_chat_wait", ui.form_card(box=ui.box("bottom", order=0), items=[
            ui.message_bar(type="info", text="Chat opens once the run has saved a checkpoint.")]))
        return
    add_card(q, "exp_chat", ui.chatbot_card(box=ui.box("bottom", order=0, height="480px"), name="exp_chatbot",
                                            data=data(fields="content from_user", t="list", rows=rows),
                                            placeholder="Ask the model...", events=["stop"]))
    add_card(q, "exp_chat_settings", ui.form_card(box=ui.box("bottom", order=1), items=[
        ui.inline(items=[
            ui.spinbox(name="chat_max_new_tokens", label="Max new tokens", min=1, max=4096, step=1,
                       value=settings["max_new_tokens"], width="160px"),
            ui.spinbox(name="chat_temperature", label="Temperature (0 = greedy)", min=0, max=2, step=0.1,
                       value=settings["temperature"], width="200px"),
            ui.button(name="chat_clear", label="Clear conversation", icon="Clear"),
        ]),
        ui.text("The model runs in its own process (started on the first message, closed when idle), so the "
                "studio stays responsive whatever its size."),
    ]))


@on("exp_chatbot")
@guarded
async def chat_submit(q: Q) -> None:
    name = q.client.chat_name
    text = str(q.args.exp_chatbot).strip()
    if not name or not text:
        return
    settings = {"max_new_tokens": int(q.args.chat_max_new_tokens or GENERATION_DEFAULTS["max_new_tokens"]),
                "temperature": float(q.args.chat_temperature or 0.0)}
    q.client.chat_settings = settings
    history = _history(q, name)
    history.append({"role": "user", "content": text})
    card = q.page["exp_chat"]
    card.data += [text, True]
    card.data += ["", False]
    card.generating = True
    await q.page.save()
    q.client.chat_stop = False
    answer = await _stream_into_card(q, name, list(history), settings)
    history.append({"role": "assistant", "content": answer})
    card.generating = False
    await q.page.save()


async def _stream_into_card(q: Q, name: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
    """Generate in a worker thread (it only reads a pipe) and show each delta as it arrives."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def work() -> None:
        try:
            for delta in services.chat_stream(name, messages, settings):
                loop.call_soon_threadsafe(queue.put_nowait, delta)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except Exception as e:  # shown in the conversation, the page stays usable
            loop.call_soon_threadsafe(queue.put_nowait, e)

    loop.run_in_executor(None, work)
    text = ""
    card = q.page["exp_chat"]
    while True:
        item = await queue.get()
        if item is None:
            break
        if isinstance(item, Exception):
            text += f"\n\n(error: {item})"
            card.data[-1] = [text, False]
            break
        if q.client.chat_stop:
            continue  # the last tokens before the cancel reached the model: not shown
        text += item
        card.data[-1] = [text, False]
        await q.page.save()
    return text


@on("exp_chatbot.stop")
async def chat_stop(q: Q) -> None:
    q.client.chat_stop = True
    if q.client.chat_name:
        await q.run(services.chat_cancel, q.client.chat_name)  # the model stops generating, not only the display
    q.page["exp_chat"].generating = False
    await q.page.save()


@on("chat_clear")
@guarded
async def chat_clear(q: Q) -> None:
    name = q.client.chat_name
    if name:
        q.client.chats[name] = []
        q.page["exp_chat"].data = data(fields="content from_user", t="list", rows=[])
        await q.page.save()


# --- export --------------------------------------------------------------------------------------

async def render_export(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    q.client.export_name = name
    job = await q.run(services.export_status, name)
    info["can_chat"] = await q.run(services.can_chat, name)
    adapter = await q.run(services.has_adapter, name)
    busy = not info.get("can_chat") or job["running"]
    buttons = [ui.button(name="export_zip", label="Export as zip", primary=True, icon="Download", disabled=busy)]
    if adapter:
        buttons.append(ui.button(name="export_adapter_zip", label="Adapter only (zip)", icon="Download",
                                 disabled=busy, caption="The adapter alone, a few MB: load it on the base with peft"))
    items: list[Any] = [
        ui.text("A merged model (safetensors, tokenizer with its chat template, generation config and a model "
                "card), exported by its own process." + (" Or the adapter alone, without merging." if adapter else "")),
        ui.buttons(buttons),
        ui.separator("Push to Hugging Face"),
        ui.textbox(name="push_repo", label="Repository (owner/name)", placeholder="my-org/my-model"),
        ui.textbox(name="push_license", label="License (optional)",
                   placeholder="apache-2.0; empty: the base model's license, else 'other'"),
        ui.checkbox(name="push_private", label="Private repository", value=True),
        ui.button(name="export_push", label="Push to Hugging Face", icon="CloudUpload",
                  disabled=not info.get("can_chat") or job["running"]),
        ui.text("The token comes from Settings (or HF_TOKEN) and is never shown or saved in the experiment."),
    ]
    if job["running"]:
        items.insert(0, ui.progress(label=f"{job['action']} running...", name="export_progress"))
    elif job["error"]:
        items.insert(0, ui.message_bar(type="error", text=job["error"], name="export_error"))
    elif job["result"]:
        items.insert(0, ui.message_bar(type="success", text=job["result"], name="export_result"))
    if job.get("zip") and not job["running"]:
        url = (await q.site.upload([job["zip"]]))[0]
        items.insert(1, ui.link(label=f"Download {Path(job['zip']).name}", path=url, download=True,
                                name="export_download"))
    add_card(q, "exp_export", ui.form_card(box=ui.box("bottom", order=0), title="Export", items=items))
    if job["running"]:
        await q.page.save()
        await _wait_for_export(q, name, info, state)


async def _wait_for_export(q: Q, name: str, info: dict[str, Any], state: dict[str, Any]) -> None:
    while (await q.run(services.export_status, name))["running"]:
        await asyncio.sleep(1.0)
        if q.client.export_name != name:
            return
    await render_export(q, name, info, state)


async def _start_export(q: Q, **request: Any) -> None:
    """Start the export process (zip, adapter zip or push) and show its progress on the Export tab."""
    name = q.client.export_name
    await q.run(services.start_export, name, **request)
    info = await q.run(studio.experiment_info, name)
    await render_export(q, name, info, {})


@on("export_zip")
@guarded
async def export_zip(q: Q) -> None:
    await _start_export(q)


@on("export_adapter_zip")
@guarded
async def export_adapter_zip(q: Q) -> None:
    await _start_export(q, adapter_only=True)


@on("export_push")
@guarded
async def export_push(q: Q) -> None:
    await _start_export(q, push_repo=str(q.args.push_repo or ""), private=bool(q.args.push_private),
                        license=str(q.args.push_license or "").strip() or None)
