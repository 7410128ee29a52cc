"""Where runtime state lives (LLM_STUDIO_HOME) and how it is written safely.

Every user-given name passes `check_name` before it becomes part of a path, and files are written
atomically (temp file in the same folder, then rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from llm_studio.errors import LLMStudioError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def home() -> Path:
    """The workspace root: $LLM_STUDIO_HOME, default ./workspace."""
    return Path(os.environ.get("LLM_STUDIO_HOME", "workspace")).expanduser().resolve()


def db_path() -> Path:
    return home() / "llm_studio.db"


def datasets_dir() -> Path:
    return home() / "datasets"


def experiments_dir() -> Path:
    return home() / "experiments"


def models_dir() -> Path:
    return home() / "models"


def tiny_model_dir() -> Path:
    return models_dir() / "tiny-llama"


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a safe identifier (letters, digits, '.', '-', '_'), else raise."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise LLMStudioError(
            f"{what} {name!r} is not allowed: use 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit"
        )
    return name


def default_experiment_name(config_path: str | Path) -> str:
    """<config stem>-<local time>, e.g. tiny-sft-20261124-201500."""
    from datetime import datetime

    return f"{Path(config_path).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target` (a sibling): renamed into place, an older `target` first
    moved aside and then deleted, so `target` is always either the old or the new folder, never half."""
    new, target = Path(new), Path(target)
    if target.exists():
        trash = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, trash)
        os.replace(new, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)
