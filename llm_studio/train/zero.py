"""DeepSpeed ZeRO stage 2 or 3 (`environment.deepspeed_stage`): the engine the training loop calls instead of DDP.

The recipe keeps its own loop, loss and learning-rate schedule; DeepSpeed owns the gradient reduction,
the sharded optimizer state (stage 2) and the sharded parameters (stage 3):

- `ZeroEngine(model, optimizer, cfg)` wraps the model and our torch AdamW (`zero_allow_untested_optimizer`;
  DeepSpeed's fused optimizers need compiled ops, which a `DS_BUILD_OPS=0` install does not have);
- `backward(loss, last)`: the accumulation boundary is set by us (the last micro-batch of a step), and the
  loss is multiplied by the world size because DeepSpeed averages gradients over ranks while each rank's
  loss here is already its share of the step's sum (the same convention as the DDP path);
- `step()` applies the update (clipping by `training.max_grad_norm` inside DeepSpeed) and returns the norm;
- `stage_checkpoint(root, step)` writes the sharded optimizer (every rank, a collective) into a hidden
  folder that rank 0 moves inside the step's checkpoint before its atomic rename; `load(path)` reads it;
- `full_parameters()`: under stage 3 the parameters are gathered on every rank for saving or evaluating.

Mixed precision stays torch autocast around the forward with fp32 master weights (bf16 on GPUs that have
it); fp16 autocast would need a loss scaler and is refused for DeepSpeed runs (see models.load). Trainable
weights loaded in bf16 (full fine-tuning on a GPU) turn on DeepSpeed's bf16 mode; that path has not run on
a GPU yet (none was available), the fp32 path is tested on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch

from llm_studio.config import ExperimentConfig

ZERO_FOLDER = "zero"         # inside a checkpoint: DeepSpeed's model and sharded optimizer states
_TAG = "state"               # DeepSpeed's sub-folder name (one per checkpoint folder)


def staging_dir(root: Path, step: int) -> Path:
    """Where every rank writes its shard before rank 0 moves it into step-N (same path on every rank)."""
    return Path(root) / f".step-{step}.zero-staging"


def ds_config(cfg: ExperimentConfig, model: torch.nn.Module | None = None) -> dict[str, Any]:
    tr = cfg.training
    # trainable bf16 weights (full fine-tuning of a bf16 model on GPU): DeepSpeed's bf16 mode keeps fp32
    # master copies in the optimizer; fp32 weights (CPU, LoRA adapters) need nothing
    bf16 = model is not None and any(p.dtype == torch.bfloat16 for p in model.parameters() if p.requires_grad)
    return {
        **({"bf16": {"enabled": True}} if bf16 else {}),
        "train_micro_batch_size_per_gpu": tr.batch_size,
        "gradient_accumulation_steps": tr.gradient_accumulation,
        "zero_optimization": {"stage": cfg.environment.deepspeed_stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": float(tr.max_grad_norm or 0.0),
        "steps_per_print": 2**31 - 1,       # progress is ours (the reporter)
        "wall_clock_breakdown": False,
    }


class ZeroEngine:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: ExperimentConfig):
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # its INFO lines would flood train.log
        self.stage = cfg.environment.deepspeed_stage
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                                 config=ds_config(cfg, model))
        self.world_size = self.engine.dp_world_size

    def __call__(self, **inputs: Any) -> Any:
        return self.engine(**inputs)

    def backward(self, loss: torch.Tensor, last_micro_batch: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last_micro_batch)
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self) -> torch.Tensor:
        """The optimizer update of a step (after its last backward); the gradient norm before clipping."""
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return torch.tensor(float("nan") if norm is None else float(norm))

    def stage_checkpoint(self, root: Path, step: int) -> Path:
        """Every rank writes its part of DeepSpeed's state (a collective); returns the staging folder."""
        folder = staging_dir(root, step)
        if self.engine.global_rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
        # frozen weights (a LoRA run's whole base model) are in the checkpoint's own files or the backbone
        self.engine.save_checkpoint(str(folder), tag=_TAG, save_latest=False, exclude_frozen_parameters=True)
        return folder

    def load(self, checkpoint: Path) -> bool:
        """Restore the sharded optimizer state of a checkpoint; False when it has none (saved without DeepSpeed)."""
        folder = Path(checkpoint) / ZERO_FOLDER
        if not (folder / _TAG).is_dir():
            return False
        path, _ = self.engine.load_checkpoint(str(folder), tag=_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=False, load_module_strict=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load its state from {folder}")
        return True

    @contextlib.contextmanager
    def full_parameters(self) -> Iterator[None]:
        """Stage 3: the whole parameters on every rank inside the block (every rank must enter)."""
        if self.stage != 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None):
            yield
