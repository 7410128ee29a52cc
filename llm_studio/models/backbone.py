"""Backbone loading: turn the config's `model.backbone` into something `from_pretrained` can open.

`resolve_backbone` is cheap and imports no torch, so config validation and the UI can call it too.
"""

from __future__ import annotations

from pathlib import Path

TINY_BACKBONE = "tiny-llama"


def resolve_backbone(name: str) -> str:
    """Where to load `name` from: the offline tiny model, a local folder, or a Hub id (unchanged).

    'tiny-llama' builds the offline default on first use and returns its folder; an existing local
    folder (relative to the working directory, or with '~') comes back as an absolute path; anything
    else is returned as given, for `from_pretrained` to look up on the Hub (or in its cache).
    """
    name = name.strip()
    if name == TINY_BACKBONE:
        from llm_studio.models.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    return name
