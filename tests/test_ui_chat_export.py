"""The experiment page's Chat and Export tabs in real Chromium against the real studio (fixtures shared
with test_ui.py): a streamed answer from the experiment's chat process, a zip download of the export, and
a push to a (fake, local) Hub."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import HUB_TOKEN, REPO, cli, cli_env
from ui_helpers import UserPage, needs_browser, wait_for

pytestmark = [needs_browser, pytest.mark.browser]


@pytest.fixture
def trained(ws: Path) -> str:
    """A short finished run of the offline preset in the studio's workspace."""
    name = "chatty"
    if not (ws / "experiments" / name / "summary.json").exists():
        done = subprocess.run(cli("train", str(REPO / "experiments" / "tiny-sft.yaml"), "--name", name,
                                  "--set", "training.max_steps=300", "--set", "evaluation.num_predictions=4"),
                              env=cli_env(ws), cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return name


def test_chat_tab_streams_an_answer_from_the_trained_model(user: UserPage, trained: str) -> None:
    user.open(f"#experiment/{trained}/chat")
    user.el("exp_chatbot")
    box = user.page.locator("[placeholder='Ask the model...']").first
    box.fill("What is the capital of France?")
    box.press("Enter")
    # the user's message, then the model's answer grows into the conversation
    def answer() -> str:
        body = user.page.inner_text("body")
        if "What is the capital of France?" not in body:
            return ""
        return body.split("What is the capital of France?")[-1].split("Max new tokens")[0] \
            .replace("Stop generating", "").strip()

    assert wait_for(answer, 180, "an answer from the chat process")
    wait_for(lambda: "Stop generating" not in user.page.inner_text("body"), 60, "the answer to end")
    user.no_error_shown()


def test_export_tab_produces_a_downloadable_zip(user: UserPage, trained: str) -> None:
    user.open(f"#experiment/{trained}/export")
    user.click("export_zip")
    link = wait_for(lambda: user.page.query_selector("[data-test=export_download]"), 180, "the download link")
    href = link.get_attribute("href")
    body = user.page.request.get(href if href.startswith("http") else f"{user.url}{href}").body()
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert any(n.endswith("model.safetensors") for n in names), names
    assert any(n.endswith("README.md") for n in names), names

    user.click("export_adapter_zip")  # the adapter alone: no merge, a few files
    link = wait_for(lambda: (e := user.page.query_selector("[data-test=export_download]"))
                    and "adapter" in e.inner_text() and e, 180, "the adapter download link")
    body = user.page.request.get(f"{user.url}{link.get_attribute('href')}").body()
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names, names
    user.no_error_shown()


def test_push_sends_the_model_with_its_license_to_the_hub_and_never_shows_the_token(
        user: UserPage, trained: str, hub: Any, ws: Path) -> None:
    from llm_studio import settings

    settings.set_secret("hf_token", HUB_TOKEN)  # as saved on the Settings page
    try:
        user.open(f"#experiment/{trained}/export")
        user.page.fill("[data-test=push_repo]", "me/ui-push")
        user.page.fill("[data-test=push_license]", "apache-2.0")
        user.click("export_push")
        def outcome() -> str | None:  # the push's own result (an earlier test's export result may show first)
            error = user.page.query_selector("[data-test=export_error]")
            done = user.page.query_selector("[data-test=export_result]")
            text = (error or done).inner_text() if (error or done) else ""
            return text if error or text.startswith("pushed") else None

        result = wait_for(outcome, 240, "the push result")
        assert result.startswith("pushed") and trained in result and "me/ui-push" in result  # quotes: typographic
        files = hub.files("me/ui-push")
        assert "model.safetensors" in files and "tokenizer.json" in files
        card = yaml.safe_load(files["README.md"].decode().split("---")[1])
        assert card["license"] == "apache-2.0"
        assert hub.repos["me/ui-push"]["private"] is True  # the checkbox's default
        assert HUB_TOKEN not in user.page.content()
        user.no_error_shown()
    finally:
        settings.set_secret("hf_token", None)
