"""Talk to an experiment's chat service from Python (the CLI and, later, the UI use this).

    with ChatClient("my-run") as chat:
        for delta in chat.stream([{"role": "user", "content": "Hi"}], max_new_tokens=32):
            print(delta, end="", flush=True)
        chat.last_stats   # {"tokens": 12, "tokens_per_s": 80.5}

The service process is started on the first request and restarted if it has exited (idle timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Iterator

from llm_studio.errors import LLMStudioError


class ChatError(LLMStudioError):
    """The chat service refused a request or could not start."""


class ChatClient:
    def __init__(self, name: str, *, checkpoint: str = "best", idle_timeout: float = 600.0, threads: int = 0,
                 env: dict[str, str] | None = None, device: str = "auto"):
        self.name, self.checkpoint, self.idle_timeout, self.threads = name, checkpoint, idle_timeout, threads
        self.device = device
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.last_stats: dict[str, Any] = {}

    # --- process ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        from llm_studio.settings import secret_env

        env = dict(os.environ, **secret_env(), **(self.env or {}))
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        cmd = [sys.executable, "-m", "llm_studio.chat.service", self.name, "--checkpoint", self.checkpoint,
               "--idle-timeout", str(self.idle_timeout), "--threads", str(self.threads),
               "--device", self.device]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1, env=env)
        first = self._read()
        if "error" in first:
            self.close()
            raise ChatError(first["error"])
        self.info = first

    def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            raise ChatError(f"the chat service for {self.name!r} exited (code {code})")
        try:
            return json.loads(line)
        except ValueError:
            return {"error": f"unexpected output from the chat service: {line[:200]!r}"}

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- requests --------------------------------------------------------------------------------
    def stream(self, messages: list[dict[str, str]], **settings: Any) -> Iterator[str]:
        """Yield the answer's text deltas as the service generates them."""
        self.start()
        assert self.proc is not None and self.proc.stdin is not None
        request = {"messages": messages, **{k: v for k, v in settings.items() if v is not None}}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):  # it exited (idle) between our check and the write: once more
            self.proc = None
            self.start()
            self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        while True:
            reply = self._read()
            if "delta" in reply:
                yield reply["delta"]
            elif reply.get("done"):
                self.last_stats = {k: reply.get(k) for k in ("tokens", "tokens_per_s", "cancelled")}
                return
            elif "error" in reply:
                raise ChatError(reply["error"])

    def cancel(self) -> None:
        """Stop the answer being streamed (from another thread): the stream ends after the current token."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return
        try:
            proc.stdin.write(json.dumps({"cancel": True}) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):  # it ended meanwhile: nothing to stop
            pass

    def ask(self, messages: list[dict[str, str]], **settings: Any) -> str:
        return "".join(self.stream(messages, **settings))
