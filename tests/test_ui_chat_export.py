"""The experiment page's Chat and Export tabs in real Chromium against the real studio (fixtures shared
with test_ui.py): a streamed answer from the experiment's chat process, and a zip download of the export."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, cli, cli_env
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
