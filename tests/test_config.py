"""The experiment config: YAML round trip, overrides typed by the schema, every bad field reported."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from llm_studio.config import (ConfigError, ExperimentConfig, config_diff, load_config, parse_override,
                               save_config, ui_fields)

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_is_valid_and_documented(preset: Path) -> None:
    cfg = load_config(preset)
    assert isinstance(cfg, ExperimentConfig)
    assert preset.read_text().startswith("#"), "presets open with a comment saying what they are for"


def test_presets_include_offline_default_and_real_gpu_models() -> None:
    names = {p.name for p in PRESETS}
    assert "tiny-sft.yaml" in names
    tiny = load_config(REPO / "experiments" / "tiny-sft.yaml")
    assert tiny.model.backbone == "tiny-llama" and tiny.dataset.name == "sample-qa"
    assert tiny.adapter.type == "lora" and "lm_head" in tiny.adapter.modules_to_save
    hub = [load_config(p) for p in PRESETS if "/" in load_config(p).model.backbone]
    assert len(hub) >= 2
    assert any(c.model.quantization == "4bit" and c.adapter.type == "lora" for c in hub)


def test_yaml_round_trip_loses_nothing(tmp_path: Path) -> None:
    cfg = load_config(REPO / "experiments" / "tiny-sft.yaml",
                      ["training.learning_rate=1e-4", "adapter.target_modules=[q_proj, v_proj]",
                       "dataset.system_prompt=You are terse.", "environment.deepspeed_stage=2"])
    out = tmp_path / "config.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    saved = yaml.safe_load(out.read_text())
    # complete: every default is written, so the run is reproducible from this file alone
    assert set(saved) == set(ExperimentConfig.model_fields)
    assert saved["training"]["seed"] == 42 and saved["generation"]["top_p"] == 1.0


def test_overrides_are_typed_by_the_schema() -> None:
    assert parse_override("training.learning_rate=3e-4") == ("training.learning_rate", 3e-4)
    assert parse_override("training.packing=false") == ("training.packing", False)
    assert parse_override("adapter.modules_to_save=[lm_head]") == ("adapter.modules_to_save", ["lm_head"])
    # string fields keep the raw text: a model id that looks like a number stays a string
    assert parse_override("model.backbone=123") == ("model.backbone", "123")
    cfg = load_config(REPO / "experiments" / "tiny-sft.yaml", ["training.epochs=3", "model.backbone=org/model"])
    assert cfg.training.epochs == 3.0 and cfg.model.backbone == "org/model"


def test_every_bad_field_is_reported_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  batch_size: 0\n  optimiser: adamw\nmodel:\n  dtype: float8\nfoo: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, ["adapter.r=-1", "nosuch.key=1", "training.epochs=many"])
    paths = {path for path, _ in err.value.problems}
    assert paths == {"training.batch_size", "training.optimiser", "model.dtype", "foo", "adapter.r",
                     "nosuch.key", "training.epochs"}
    text = str(err.value)
    assert str(bad) in text and "unknown setting" in text and "greater than or equal to 1" in text


def test_cross_field_rules_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        ExperimentConfig  # noqa: B018 - readability
        load_config(REPO / "experiments" / "tiny-sft.yaml", ["model.quantization=4bit", "adapter.type=none"])
    assert err.value.problems[0][0] == "model.quantization"


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("training.epochs")


def test_renamed_key_warns_and_still_maps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("training:\n  lr: 0.01\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(old)
    assert cfg.training.learning_rate == 0.01
    assert "renamed" in caplog.text and "training.learning_rate" in caplog.text


def test_every_field_carries_ui_metadata() -> None:
    fields = ui_fields()
    assert len(fields) > 40
    for f in fields:
        assert f["label"] and f["help"], f["path"]
        assert "advanced" in f
    by_path = {f["path"]: f for f in fields}
    assert by_path["training.learning_rate"]["min"] == 0 and by_path["training.learning_rate"]["max"] == 1.0
    assert by_path["model.quantization"]["choices"] == ["none", "8bit", "4bit"]
    assert by_path["adapter.r"]["visible_if"] == {"adapter.type": ["lora", "dora"]}
    assert by_path["training.seed"]["default"] == 42


def test_config_diff_lists_only_differences() -> None:
    a = ExperimentConfig()
    b = a.model_copy(update={"training": a.training.model_copy(update={"learning_rate": 1e-3})})
    assert config_diff(a, b) == {"training.learning_rate": (2e-4, 1e-3)}
