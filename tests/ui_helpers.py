"""A real studio for browser tests and screenshots: the Wave server + app in a subprocess, Chromium via Playwright.

    with Studio(home) as studio:            # `wave run --no-reload app.main` on free ports, LLM_STUDIO_HOME=home
        page = new_page(browser, studio.url)

`WaveFrames` records what the Wave server sends the browser over its websocket: the page's cards and
every later change. Tests read plot data from it (the charts draw on a canvas, so the DOM has no points).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from polling import wait_for  # noqa: F401 - the UI tests import it from here

REPO = Path(__file__).resolve().parents[1]
UI_TIMEOUT_MS = 30_000
SHOTS = os.environ.get("LLM_STUDIO_SCREENSHOTS")  # a folder: save a screenshot of each page there
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


needs_browser = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                   reason=f"Chromium not found at {CHROMIUM} (run `make browser`)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Studio:
    """The studio as a user starts it, on free ports, in its own process group (killed as a whole)."""

    def __init__(self, home: Path, log_path: Path | None = None, extra_env: dict[str, str] | None = None):
        self.home = Path(home)
        self.port, self.app_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or self.home.parent / "studio.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Studio":
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, LLM_STUDIO_HOME=str(self.home), H2O_WAVE_LISTEN=f"127.0.0.1:{self.port}",
                   H2O_WAVE_ADDRESS=self.url, H2O_WAVE_APP_ADDRESS=f"http://127.0.0.1:{self.app_port}",
                   H2O_WAVE_NO_LOG="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        env.update(self.extra_env)  # may turn the Hub back on (pointed at a fake one)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "wave"), "run", "--no-reload", "app.main"],
                                     cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the studio exited with {self.proc.returncode}:\n{self.log()}")
            if self._answers():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the studio did not answer within {timeout:.0f} s:\n{self.log()}")

    def _answers(self) -> bool:
        """True once the app is registered with the Wave server (the page is served and the app answers)."""
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                if r.status != 200:
                    return False
            with urllib.request.urlopen(f"http://127.0.0.1:{self.app_port}/", timeout=2):
                pass
        except urllib.error.HTTPError:
            return True  # the app answers (with an error for a bare GET): it is up
        except OSError:
            return False
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "Studio":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class WaveFrames:
    """The websocket messages from the Wave server to one browser page, decoded."""

    def __init__(self, page: Any):
        self.messages: list[dict[str, Any]] = []
        self.received_at: list[float] = []  # unix time each message reached this process (the benchmark's clock)
        page.on("websocket", lambda ws: ws.on("framereceived", self._received))

    def _received(self, payload: Any) -> None:
        now = time.time()
        try:
            self.messages.append(json.loads(payload if isinstance(payload, str) else payload.decode()))
            self.received_at.append(now)
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass

    def append_arrivals(self, card: str) -> dict[tuple[Any, ...], float]:
        """When each row appended to a plot card's data arrived, by the row's first two fields (series, x)."""
        key = f"{card} data __append__"
        out: dict[tuple[Any, ...], float] = {}
        for at, m in zip(self.received_at, self.messages):
            for op in m.get("d", []) or []:
                if op.get("k") == key and isinstance(op.get("v"), list):
                    out.setdefault((op["v"][0], op["v"][1]), at)
        return out

    def card_puts(self, card: str) -> int:
        """How many times the whole card was (re)sent."""
        return sum(1 for m in self.messages for op in m.get("d", []) or [] if op.get("k") == card and "d" in op)

    def plot_rows(self, card: str) -> list[list[Any]]:
        """The rows of a plot card's data buffer as the browser has them: last full put + appends since."""
        rows: list[list[Any]] = []
        for m in self.messages:
            for op in m.get("d", []) or []:
                key = op.get("k")
                if key == card and "d" in op:  # the card itself, with its buffers in "b"
                    rows = []
                    buffers = op.get("b") or []
                    for b in buffers:
                        for kind in ("l", "c", "f"):
                            if kind in b and b[kind].get("d"):
                                rows = list(b[kind]["d"])
                elif key == f"{card} data __append__":
                    rows.append(op.get("v"))
                elif key == card and "d" not in op and "v" not in op:  # the card was deleted
                    rows = []
        return rows


class UserPage:
    """A browser tab on the studio, with the Wave traffic recorded and page errors collected."""

    def __init__(self, browser: Any, studio: Studio):
        self.page = browser.new_page(viewport={"width": 1440, "height": 1000})
        self.page.set_default_timeout(UI_TIMEOUT_MS)
        self.frames = WaveFrames(self.page)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = studio.url

    def open(self, hash_: str) -> "UserPage":
        self.page.goto(f"{self.url}/{hash_}")
        self.page.wait_for_selector("[data-test=nav]")
        return self

    def el(self, name: str, state: str = "visible") -> Any:
        """The element named `name` ("a|b": whichever of the two shows first)."""
        selector = ", ".join(f"[data-test={n}]" for n in name.split("|"))
        return self.page.wait_for_selector(selector, state=state)

    def text(self, name: str) -> str:
        return self.el(name).inner_text()

    def see(self, name: str, *texts: str, timeout_s: float = UI_TIMEOUT_MS / 1000) -> str:
        """Wait until the element shows every text (pages update asynchronously), then return its text."""
        locator = self.page.locator(f"[data-test={name}]").first
        from playwright.sync_api import expect

        for t in texts:
            expect(locator).to_contain_text(t, timeout=timeout_s * 1000)
        return locator.inner_text()

    def value(self, name: str) -> str:
        """The value of an input (text box, spin box, read-only text area)."""
        return self.el(name).input_value()

    def click(self, name: str) -> None:
        self.page.click(f"[data-test={name}]")

    def nav(self, label: str) -> None:
        self.page.click(f"[data-test=nav] >> text={label}")

    def no_error_shown(self) -> None:
        assert self.page.query_selector("[data-test=error_card]") is None, self.page.inner_text("body")[:2000]
        assert not self.errors, self.errors

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            time.sleep(1.0)  # let charts finish drawing
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.page.close()
