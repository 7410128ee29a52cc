"""Studio settings: plain ones in the store, secrets (tokens) in a private file beside it.

    from llm_studio import settings
    settings.set_secret("hf_token", "hf_abc...")      # $LLM_STUDIO_HOME/secrets.json, mode 0600
    settings.masked(settings.get_secret("hf_token"))  # 'hf_…3f2a', the only form the UI shows
    settings.set_value("cpu_slots", 2)                # Store setting; the scheduler reads it

Secrets never enter a config, the store or a log. Workers get them as environment variables
(`secret_env()`), and a variable already set in the environment wins over the file.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_studio import paths
from llm_studio.errors import LLMStudioError

if TYPE_CHECKING:
    from llm_studio.store import Store

# secret key -> the environment variable the libraries read it from
SECRETS: dict[str, str] = {"hf_token": "HF_TOKEN", "neptune_api_token": "NEPTUNE_API_TOKEN"}
THEMES = ("light", "dark")
# non-secret settings with their defaults
DEFAULTS: dict[str, Any] = {"cpu_slots": 1, "theme": "light", "neptune_project": "", "default_preset": ""}
MAX_CPU_SLOTS = 256


def secrets_path() -> Path:
    return paths.home() / "secrets.json"


def _read_secrets() -> dict[str, str]:
    path = secrets_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise LLMStudioError(f"cannot read {path} ({e.__class__.__name__}); fix or delete the file") from None
    return {k: v for k, v in data.items() if k in SECRETS and isinstance(v, str) and v}


def _write_secrets(data: dict[str, str]) -> None:
    """Write atomically; the temp file is created 0600, so the secret is never readable by others."""
    path = secrets_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secrets.", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_secret_key(key: str) -> None:
    if key not in SECRETS:
        raise LLMStudioError(f"unknown secret {key!r}: use one of {', '.join(SECRETS)}")


def get_secret(key: str) -> str | None:
    """The token from the environment (it wins) or the secrets file; None when unset."""
    _check_secret_key(key)
    return os.environ.get(SECRETS[key]) or _read_secrets().get(key)


def secret_source(key: str) -> str | None:
    """'environment', 'settings' or None: where `get_secret(key)` finds its value."""
    _check_secret_key(key)
    if os.environ.get(SECRETS[key]):
        return "environment"
    return "settings" if _read_secrets().get(key) else None


def set_secret(key: str, value: str | None) -> None:
    """Save (or with None / '' remove) a token in the secrets file."""
    _check_secret_key(key)
    value = (value or "").strip()
    if any(c.isspace() for c in value):
        raise LLMStudioError("a token cannot contain spaces or line breaks")
    data = _read_secrets()
    if value:
        data[key] = value
    else:
        data.pop(key, None)
    _write_secrets(data)


def secret_env() -> dict[str, str]:
    """Environment variables carrying the saved tokens, for worker processes (export, push, Neptune)."""
    return {env: value for key, env in SECRETS.items() if (value := get_secret(key))}


def masked(token: str | None) -> str:
    """A token as the UI may show it: 'hf_…3f2a' (first three and last four characters at most)."""
    if not token:
        return ""
    if len(token) < 12:
        return "…" + token[-2:] if len(token) > 4 else "…"
    return f"{token[:3]}…{token[-4:]}"


# --- plain settings (the store) ---------------------------------------------------------------------

def check_value(key: str, value: Any) -> Any:
    """The value as stored, or LLMStudioError saying what is allowed."""
    if key == "cpu_slots":
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise LLMStudioError(f"CPU slots must be a whole number, not {value!r}") from None
        if not 1 <= n <= MAX_CPU_SLOTS or n != float(value):
            raise LLMStudioError(f"CPU slots must be a whole number from 1 to {MAX_CPU_SLOTS}, not {value!r}")
        return n
    if key == "theme":
        if value not in THEMES:
            raise LLMStudioError(f"theme must be one of {', '.join(THEMES)}, not {value!r}")
        return value
    if key == "neptune_project":
        value = (value or "").strip()
        if value and (value.count("/") != 1 or any(c.isspace() for c in value)):
            raise LLMStudioError(f"Neptune project must look like workspace/project, not {value!r}")
        return value
    if key == "default_preset":  # the preset a new experiment starts from ("" = the offline tiny-sft)
        value = (value or "").strip()
        return paths.check_name(value, "preset") if value else ""
    raise LLMStudioError(f"unknown setting {key!r}: use one of {', '.join(DEFAULTS)}")


def get_value(key: str, store: Store | None = None) -> Any:
    if key not in DEFAULTS:
        raise LLMStudioError(f"unknown setting {key!r}: use one of {', '.join(DEFAULTS)}")
    store = store or _store()
    return store.get_setting(key, DEFAULTS[key])


def set_value(key: str, value: Any, store: Store | None = None) -> Any:
    value = check_value(key, value)
    (store or _store()).set_setting(key, value)
    return value


def all_values(store: Store | None = None) -> dict[str, Any]:
    store = store or _store()
    return {key: store.get_setting(key, default) for key, default in DEFAULTS.items()}


def _store() -> Store:
    from llm_studio.store import Store

    return Store()


__all__ = ["SECRETS", "THEMES", "DEFAULTS", "secrets_path", "get_secret", "secret_source", "set_secret",
           "secret_env", "masked", "check_value", "get_value", "set_value", "all_values"]
