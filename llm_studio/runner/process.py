"""Worker processes: spawn detached, recognise them later (pid + create time), signal their group, read logs.

Workers run in their own session (process group), so a UI or scheduler restart leaves them running and a
stop reaches torchrun's children too. A pid alone is not an identity: the OS reuses pids, so a process is
"ours" only if its create time matches the one recorded at spawn.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

import psutil

# psutil create times are floats rounded differently across calls; a pid reused by another program
# started at least this much later.
CREATE_TIME_TOLERANCE_S = 1.0


def spawn_detached(args: list[str], log_path: Path, env: dict[str, str]) -> tuple[int, float]:
    """Start `args` in a new session with stdout/stderr appended to `log_path`; return (pid, create time)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:  # it already ended; the reconciler will read its outcome
        created = 0.0
    _CHILDREN[proc.pid] = proc
    return proc.pid, created


# Popen objects of workers this process spawned: polling them reaps exited children (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def reap_children() -> dict[int, int]:
    """Collect exit codes of our own finished children: pid -> returncode."""
    done = {}
    for pid, proc in list(_CHILDREN.items()):
        code = proc.poll()
        if code is not None:
            done[pid] = code
            del _CHILDREN[pid]
    return done


def is_running(pid: int | None, create_time: float | None) -> bool:
    """True if `pid` is alive and is the same process that was started at `create_time`."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time and abs(p.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return False  # the pid now belongs to another program
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def signal_group(pid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the worker's process group (it leads its own session). False if it is gone."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except FileNotFoundError:
        return ""


def python_cli(*args: str) -> list[str]:
    """The command line that runs `llm-studio ARGS` with this interpreter."""
    return [sys.executable, "-m", "llm_studio.cli", *args]
