"""Load, override, validate and save experiment configs (YAML).

`load_config(path, overrides)` collects every problem (unknown keys, bad values, bad overrides) and
raises one `ConfigError` naming each field path. Saved configs are complete: all defaults written.
"""

from __future__ import annotations

import logging
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from llm_studio.config.schema import ExperimentConfig, Section
from llm_studio.errors import ConfigError
from llm_studio.paths import atomic_write_text

log = logging.getLogger(__name__)

# Old key -> new key. A renamed key warns and still maps, so older YAML files keep working.
RENAMED_KEYS: dict[str, str] = {
    "training.lr": "training.learning_rate",
    "training.grad_accumulation": "training.gradient_accumulation",
    "model.backbone_dtype": "model.dtype",
    "adapter.lora_r": "adapter.r",
    "adapter.lora_alpha": "adapter.alpha",
    "adapter.lora_dropout": "adapter.dropout",
}


def _field_annotation(path: str) -> Any:
    """The annotation of a leaf field at dotted `path`, or raise KeyError."""
    model: type[BaseModel] = ExperimentConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            raise KeyError(part)
        ann = model.model_fields[part].annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            if i == len(parts) - 1:
                raise KeyError(f"{path} is a section; set one of its fields")
            model = ann
        elif i == len(parts) - 1:
            return ann
        else:
            raise KeyError(".".join(parts[: i + 2]))
    raise KeyError(path)


def _is_plain_str(ann: Any) -> bool:
    """True for `str` and `str | None`: override values stay raw text there (no YAML typing of '123')."""
    if ann is str:
        return True
    if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union:
        return str in typing.get_args(ann)
    return False


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', typed value). Values are YAML-typed unless the field is a string."""
    if "=" not in item:
        raise ConfigError([(item, "an override must look like section.key=value")])
    path, raw = item.split("=", 1)
    path = RENAMED_KEYS.get(path.strip(), path.strip())
    try:
        ann = _field_annotation(path)
    except KeyError:
        raise ConfigError([(path, "unknown setting")]) from None
    if _is_plain_str(ann):
        return path, (None if raw in ("null", "~") and ann is not str else raw)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError([(path, f"cannot parse value {raw!r}: {e.__class__.__name__}")]) from None
    try:
        # YAML leaves '3e-4' a string; the schema's type knows it is a float
        return path, TypeAdapter(ann).validate_python(value)
    except ValidationError:
        return path, value  # reported with every other problem when the whole config is validated


def _rename_keys(data: dict[str, Any], source: str | None) -> dict[str, Any]:
    for old, new in RENAMED_KEYS.items():
        o_sec, o_key = old.split(".")
        n_sec, n_key = new.split(".")
        section = data.get(o_sec)
        if isinstance(section, dict) and o_key in section:
            log.warning("%s: '%s' is renamed '%s'; please update the file", source or "config", old, new)
            data.setdefault(n_sec, {}).setdefault(n_key, section.pop(o_key))
    return data


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif msg.startswith("Value error, "):
            # model-level checks name their own field: "section.key: reason"
            text = msg[len("Value error, "):]
            if ": " in text and loc == "(top level)":
                loc, msg = text.split(": ", 1)
            else:
                msg = text
        out.append((loc, msg))
    return out


def config_from_dict(data: dict[str, Any] | None, overrides: Iterable[str] = (), source: str | None = None
                     ) -> ExperimentConfig:
    data = _rename_keys(dict(data or {}), source)
    problems: list[tuple[str, str]] = []
    for item in overrides:
        try:
            path, value = parse_override(item)
            _set_path(data, path, value)
        except ConfigError as e:
            problems.extend(e.problems)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        problems.extend(_problems(e))
        raise ConfigError(problems, source) from None
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML config, apply `--set` style overrides, validate everything at once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("(file)", f"{path} does not exist")], str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([("(file)", f"cannot read {path}: {e}")], str(path)) from None
    return config_from_yaml(text, overrides, source=str(path))


def config_from_yaml(text: str, overrides: Iterable[str] = (), source: str | None = None) -> ExperimentConfig:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError([("(file)", f"not valid YAML: {e}")], source) from None
    if not isinstance(data, dict):
        raise ConfigError([("(file)", "the top level must be a mapping of sections")], source)
    return config_from_dict(data, overrides, source)


def config_to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the complete config (every default included) atomically."""
    atomic_write_text(Path(path), config_to_yaml(cfg))


def flatten(d: dict[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """{'training': {'seed': 1}} -> {'training.seed': 1}: leaves keyed by their path."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, sep, f"{prefix}{k}{sep}"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(a: ExperimentConfig, b: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted path -> (value in a, value in b) for every leaf that differs."""
    fa, fb = flatten(a.model_dump(mode="json")), flatten(b.model_dump(mode="json"))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)}
