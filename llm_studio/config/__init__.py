"""Typed experiment config: schema, YAML load/save and `--set` overrides."""

from llm_studio.config.io import (config_diff, config_from_dict, config_from_yaml, config_to_yaml, flatten, load_config,
                                  parse_override, save_config)
from llm_studio.config.schema import ExperimentConfig, ui_fields
from llm_studio.errors import ConfigError

__all__ = ["ExperimentConfig", "ConfigError", "load_config", "save_config", "config_from_dict", "config_from_yaml",
           "config_to_yaml", "config_diff", "flatten", "parse_override", "ui_fields"]
