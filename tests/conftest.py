"""Shared fixtures: every test gets its own workspace (LLM_STUDIO_HOME) under tmp, never ./workspace."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from ui_helpers import CHROMIUM, Studio, UserPage, launch_browser

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty LLM_STUDIO_HOME for each test."""
    home = tmp_path / "workspace"
    monkeypatch.setenv("LLM_STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline tiny model, built once per test session (deterministic), shared read-only by tests."""
    from llm_studio.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    build_tiny_model(out)
    return out


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a real `llm-studio` subprocess working in `home`."""
    env = dict(os.environ, LLM_STUDIO_HOME=str(home), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llm_studio.cli", *args]


# --- the studio in a browser: one Wave server and one Chromium per session, for every UI test module ---

HUB_TOKEN = "hf_studioSessionToken0123456789"


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local fake Hugging Face Hub (create repo, upload, commit) the studio's pushes go to."""
    from fake_hub import FakeHub

    fake = FakeHub(tmp_path_factory.mktemp("hub"), token=HUB_TOKEN)
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, hub: Any) -> Iterator[Studio]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (run `make browser`)")
    root = tmp_path_factory.mktemp("studio")
    home = root / "workspace"
    (home / "models").mkdir(parents=True)
    os.symlink(tiny_model_dir, home / "models" / "tiny-llama")  # built once per session
    # the Hub is the fake one: a push from the UI reaches it, anything else gets an answer from 127.0.0.1
    hub_env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HOME": str(root / "hf-home")}
    with Studio(home, log_path=root / "studio.log", extra_env=hub_env) as s:
        yield s


@pytest.fixture(scope="session")
def browser(studio: Studio) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


@pytest.fixture
def ws(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test process works in the studio's workspace (to check and prepare what the studio shows)."""
    monkeypatch.setenv("LLM_STUDIO_HOME", str(studio.home))
    return studio.home


@pytest.fixture
def user(browser: Any, studio: Studio) -> Iterator[UserPage]:
    u = UserPage(browser, studio)
    yield u
    u.close()
