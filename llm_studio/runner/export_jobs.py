"""Export and push as detached `llm-studio export` processes, so the studio never merges or uploads a model
in its own process. One export at a time per experiment; its state lives in `export.json` beside the
experiment's config (action, pid + create time, log), its output under `export/`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from llm_studio import paths
from llm_studio.errors import LLMStudioError
from llm_studio.runner import process
from llm_studio.settings import secret_env
from llm_studio.store import Store

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _folder(name: str, store: Store | None = None) -> Path:
    rec = (store or Store()).get_experiment(name)
    return Path(rec.config_path).parent


def has_checkpoint(name: str, store: Store | None = None) -> bool:
    return any((_folder(name, store) / "checkpoints").glob("step-*"))


def has_adapter(name: str, store: Store | None = None) -> bool:
    """True when the run trained an adapter (its checkpoints can be downloaded without a merge)."""
    return any((_folder(name, store) / "checkpoints").glob("step-*/adapter_config.json"))


def zip_path(name: str, adapter_only: bool, store: Store | None = None) -> Path:
    return _folder(name, store) / "export" / (f"{name}-adapter.zip" if adapter_only else f"{name}.zip")


def start_export(name: str, push_repo: str | None = None, private: bool = True, store: Store | None = None,
                 adapter_only: bool = False, license: str | None = None) -> None:
    """Start exporting `name` as a zip (push_repo None) or pushing it to the Hub repo `push_repo`;
    the merged model, or with `adapter_only` the adapter alone; `license` for the model card."""
    folder = _folder(name, store)
    if export_status(name, store)["running"]:
        raise LLMStudioError(f"an export of '{name}' is already running")
    if not has_checkpoint(name, store):
        raise LLMStudioError(f"experiment '{name}' has no checkpoint to export yet")
    if push_repo is not None and not REPO_ID.match(push_repo):
        raise LLMStudioError(f"'{push_repo}' is not a Hub repository id: use owner/name")
    if adapter_only and not has_adapter(name, store):
        raise LLMStudioError(f"experiment '{name}' trained the whole model: there is no adapter to download")
    args = ["export", name] + (["--adapter-only"] if adapter_only else [])
    if license:
        from llm_studio.export.export import check_license

        args += ["--license", check_license(license)]
    if push_repo is None:
        args += ["--output", str(zip_path(name, adapter_only, store).with_suffix("")), "--zip"]
        action = "adapter" if adapter_only else "export"
    else:
        args += ["--push", push_repo] + (["--private"] if private else [])
        action = "push"
    log = folder / "export.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, LLM_STUDIO_HOME=str(paths.home()), PYTHONUNBUFFERED="1", **secret_env())
    pid, created = process.spawn_detached(process.python_cli(*args), log, env)
    paths.atomic_write_text(folder / "export.json", json.dumps(
        {"action": action, "pid": pid, "pid_start_time": created, "repo": push_repo}))


def export_status(name: str, store: Store | None = None) -> dict[str, Any]:
    """{running, action, result, error, zip}: what the last export or push of `name` came to."""
    folder = _folder(name, store)
    status: dict[str, Any] = {"running": False, "action": None, "result": None, "error": None, "zip": None}
    try:
        state = json.loads((folder / "export.json").read_text())
    except (FileNotFoundError, ValueError):
        return status
    status["action"] = state.get("action")
    status["running"] = process.is_running(state.get("pid"), state.get("pid_start_time"))
    if status["running"]:
        return status
    log = process.tail(folder / "export.log", 30)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    if errors:
        status["error"] = errors[-1][len("error:"):].strip()
    else:
        done = [line for line in log.splitlines() if line.startswith(("exported ", "pushed "))]
        status["result"] = done[-1] if done else None
        if not done:
            status["error"] = "the export ended without a result; see export.log in the experiment folder"
    target = zip_path(name, status["action"] == "adapter", store)
    if status["action"] in ("export", "adapter") and target.exists() and not status["error"]:
        status["zip"] = str(target)
    return status
