"""Chat and export calls for the experiment page's tabs (run through `q.run`; they only move text and
start processes). One chat service process per experiment is shared by every browser client; a lock
keeps one request at a time on its pipe."""

from __future__ import annotations

import threading
from typing import Any, Iterator

from llm_studio.chat.client import ChatClient
from llm_studio.runner import export_jobs

_clients: dict[str, ChatClient] = {}
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()
CHAT_IDLE_TIMEOUT_S = 600.0


def chat_stream(name: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> Iterator[str]:
    with _guard:
        client = _clients.setdefault(name, ChatClient(name, idle_timeout=CHAT_IDLE_TIMEOUT_S))
        lock = _locks.setdefault(name, threading.Lock())
    with lock:
        yield from client.stream(messages, **settings)


def chat_cancel(name: str) -> None:
    """Stop the answer `name`'s chat process is generating (the stream then ends by itself)."""
    with _guard:
        client = _clients.get(name)
    if client is not None:
        client.cancel()


def close_chats() -> None:
    for client in _clients.values():
        client.close()
    _clients.clear()


can_chat = export_jobs.has_checkpoint
start_export = export_jobs.start_export
has_adapter = export_jobs.has_adapter
export_status = export_jobs.export_status
