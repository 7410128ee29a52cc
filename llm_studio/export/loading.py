"""Load an experiment's trained model for inference: the backbone plus the adapter of a checkpoint
(or the full weights of a full fine-tuning checkpoint). Shared by export and the chat service.

    loaded = load_experiment_model("my-run", checkpoint="best")   # ExperimentModel
    loaded.model, loaded.tokenizer, loaded.cfg, loaded.checkpoint
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_studio import paths
from llm_studio.errors import LLMStudioError, NotFoundError

CHECKPOINT_CHOICES = ("best", "latest")


@dataclass
class ExperimentModel:
    model: Any          # a PeftModel (adapter) or a plain causal LM (full fine-tuning), eval mode
    tokenizer: Any
    cfg: Any            # ExperimentConfig
    checkpoint: Path
    backbone: str       # resolved folder or hub id of the base model
    exp_dir: Path


def experiment_dir(name: str) -> Path:
    folder = paths.experiments_dir() / paths.check_name(name, "experiment name")
    if not folder.is_dir():
        raise NotFoundError(f"experiment {name!r} not found in {paths.experiments_dir()}")
    return folder


def read_summary(exp_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(exp_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resolve_checkpoint(name: str, checkpoint: str = "best") -> Path:
    """The checkpoint folder of experiment `name`: 'best' (by the run's best metric, else latest),
    'latest', or a folder name like 'step-6'."""
    from llm_studio.train.checkpoint import best_checkpoint, latest_checkpoint, list_checkpoints

    folder = experiment_dir(name)
    root = folder / "checkpoints"
    found = list_checkpoints(root)
    if not found:
        raise LLMStudioError(f"experiment {name!r} has no checkpoint yet")
    if checkpoint == "latest":
        return found[-1].path
    if checkpoint == "best":
        metric = read_summary(folder).get("best_metric")
        if not metric:
            try:
                metric = f"validation/{experiment_config(folder).evaluation.best_metric}"
            except LLMStudioError:
                metric = None
        best = best_checkpoint(root, metric) if metric else None
        return (best or latest_checkpoint(root)).path  # type: ignore[union-attr]
    for c in found:
        if c.path.name == checkpoint:
            return c.path
    raise LLMStudioError(f"experiment {name!r} has no checkpoint {checkpoint!r}: use best, latest or one of "
                         + ", ".join(c.path.name for c in found))


def experiment_config(exp_dir: Path) -> Any:
    from llm_studio.config.io import load_config

    path = exp_dir / "config.yaml"
    if not path.is_file():
        raise LLMStudioError(f"{path} is missing")
    return load_config(path)


def load_experiment_model(name: str, checkpoint: str = "best", *, dtype: str = "float32",
                          device: str = "cpu") -> ExperimentModel:
    import torch
    from transformers import AutoModelForCausalLM

    from llm_studio.models.backbone import resolve_backbone
    from llm_studio.models.load import load_tokenizer
    from llm_studio.train.checkpoint import read_state

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise LLMStudioError(f"dtype must be one of {', '.join(dtypes)}, not {dtype!r}")
    exp_dir = experiment_dir(name)
    cfg = experiment_config(exp_dir)
    ckpt = resolve_checkpoint(name, checkpoint)
    state = read_state(ckpt)
    backbone = state.get("backbone") or resolve_backbone(cfg.model.backbone)
    trust = cfg.model.trust_remote_code
    adapter = (ckpt / "adapter_config.json").is_file()
    try:
        # the checkpoint holds the tokenizer the run trained with (pad token, chat template)
        tok_src = str(ckpt) if (ckpt / "tokenizer_config.json").is_file() else backbone
        tokenizer = load_tokenizer(tok_src, trust)
        model = AutoModelForCausalLM.from_pretrained(backbone if adapter else str(ckpt), dtype=dtypes[dtype],
                                                     trust_remote_code=trust)
    except OSError as e:
        raise LLMStudioError(f"cannot load the model of experiment {name!r}: {e}") from e
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ckpt))
    model.to(torch.device(device))
    model.eval()
    return ExperimentModel(model=model, tokenizer=tokenizer, cfg=cfg, checkpoint=ckpt, backbone=backbone,
                           exp_dir=exp_dir)
