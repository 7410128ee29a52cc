"""Settings in the studio: tokens kept in a private file and never shown back in full, values checked with
a reason, the theme applied at once and kept, the preset new experiments start from. The first tests
need no browser; the others drive real Chromium against the session's studio (fixtures in conftest.py)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from ui_helpers import UserPage, needs_browser, wait_for


def test_secrets_are_private_masked_and_never_in_the_store(workspace: Path) -> None:
    from llm_studio import settings
    from llm_studio.store import Store

    settings.set_secret("hf_token", "hf_abcdefghijklmnop3f2a")
    path = workspace / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.get_secret("hf_token") == "hf_abcdefghijklmnop3f2a"
    assert settings.masked(settings.get_secret("hf_token")) == "hf_…3f2a"
    assert settings.secret_env() == {"HF_TOKEN": "hf_abcdefghijklmnop3f2a"}
    settings.set_value("cpu_slots", 2)
    assert Store().get_setting("cpu_slots") == 2  # the scheduler reads this one
    assert "hf_abc" not in (workspace / "llm_studio.db").read_bytes().decode("latin-1")
    settings.set_secret("hf_token", None)
    assert settings.get_secret("hf_token") is None and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settings_refuse_bad_values_with_a_reason(workspace: Path) -> None:
    from llm_studio import settings
    from llm_studio.errors import LLMStudioError

    for key, value, words in [("cpu_slots", 0, "1 to"), ("cpu_slots", "two", "whole number"),
                              ("theme", "pink", "light, dark"), ("neptune_project", "no-slash", "workspace/project"),
                              ("default_preset", "../etc", "not allowed")]:
        with pytest.raises(LLMStudioError, match=words):
            settings.set_value(key, value)
    with pytest.raises(LLMStudioError, match="spaces"):
        settings.set_secret("neptune_api_token", "two words")
    assert settings.masked("short") == "…rt" and settings.masked(None) == ""


@needs_browser
@pytest.mark.browser
def test_settings_keep_tokens_masked_in_a_private_file(user: UserPage, ws: Path) -> None:
    from llm_studio.store import Store

    token = "hf_FakeTokenForTheUiTest9d1c"
    user.open("#settings")
    user.page.fill("[data-test=settings_hf_token]", token)
    user.page.fill("[data-test=settings_cpu_slots]", "2")
    user.click("settings_save")
    user.see("settings_saved", "Settings saved")
    user.see("settings_hf_token_state", "hf_…9d1c")
    assert token not in user.page.content(), "the full token must never come back to the browser"
    assert not any(token in str(m) for m in user.frames.messages)
    assert stat.S_IMODE((ws / "secrets.json").stat().st_mode) == 0o600
    assert Store(ws / "llm_studio.db").get_setting("cpu_slots") == 2
    user.click("settings_clear_secret")
    user.see("settings_hf_token_state", "Not set")

    # the preset new experiments start from
    user.page.click("[data-test=settings_default_preset]")
    user.page.click("role=option[name='qwen2.5-0.5b-lora']")
    user.click("settings_save")
    user.see("settings_saved", "Settings saved")
    user.open("#experiments/new")
    user.see("new_preset", "qwen2.5-0.5b-lora")
    assert user.value("cfg_model__backbone") == "Qwen/Qwen2.5-0.5B-Instruct"
    user.open("#settings")
    user.page.click("[data-test=settings_default_preset]")
    user.page.click("role=option[name='tiny-sft']")
    user.page.fill("[data-test=settings_cpu_slots]", "1")
    user.click("settings_save")
    user.el("settings_saved")
    user.no_error_shown()


@needs_browser
@pytest.mark.browser
def test_the_dark_theme_applies_at_once_and_stays_for_the_next_visit(user: UserPage, ws: Path, browser: Any,
                                                                      studio: Any) -> None:
    # the colour the navigation card is drawn on (the first ancestor-or-self with a background)
    background = ("() => { for (let e = document.querySelector('[data-test=nav]'); e; e = e.parentElement) {"
                  " const c = getComputedStyle(e).backgroundColor;"
                  " if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; }")

    def dark(rgb: str) -> bool:
        return sum(int(v) for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]) < 3 * 100

    user.open("#settings")
    assert not dark(user.page.evaluate(background))
    user.page.click("[data-test=settings_theme] >> text=Dark")
    user.click("settings_save")
    user.see("settings_saved", "Settings saved")
    wait_for(lambda: dark(user.page.evaluate(background)), 10, "the page to turn dark")
    later = UserPage(browser, studio).open("#home")  # a new tab: the saved theme
    try:
        wait_for(lambda: dark(later.page.evaluate(background)), 10, "the new tab to open dark")
    finally:
        later.close()
    user.page.click("[data-test=settings_theme] >> text=Light")
    user.click("settings_save")
    wait_for(lambda: not dark(user.page.evaluate(background)), 10, "the page to turn light again")
    user.no_error_shown()
