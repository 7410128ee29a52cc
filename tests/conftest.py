"""Shared fixtures: every test gets its own workspace (LLM_STUDIO_HOME) under tmp, never ./workspace."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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
