"""The story of one training run, read top to bottom (after torchtune's single-device recipes).

Run it:
    llm-studio train experiments/tiny-sft.yaml [--name N] [--set training.epochs=3]   # in the foreground
    llm-studio train --resume N                          # continue N from its latest checkpoint
    python -m llm_studio.train experiments/tiny-sft.yaml # the same command as a module

`launch.train_command` prepares the experiment (folder, store row, reporter, signal handlers), then:
    recipe = TrainRecipe(cfg, exp_dir=..., reporter=..., resume_from=..., stop=...)
    recipe.setup()
    status = recipe.train()       # "finished" or "stopped"

setup():  seed, threads, device → model (load, quantize, adapter) → data (tokenize + mask, plan batches)
          → optimizer + LR schedule → resume state (weights, optimizer, schedule, RNG, position in the data)
train():  one optimizer step = collate its micro-batches → forward/backward under autocast, each
          micro-batch's summed loss divided by the label tokens of the whole step → clip → step.
          Every `log_every` steps: train metrics. A stop request (SIGTERM): checkpoint, end `stopped`.
          Every `eval_every` steps (0: each epoch end): evaluation; checkpoints every `save_every` steps
          (0: at each evaluation), the last K plus the best kept. At the end: final evaluation + save.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from llm_studio.config.schema import (AdapterConfig, DatasetConfig, EnvironmentConfig, ExperimentConfig, ModelConfig,
                                      TrainingConfig)
from llm_studio.data import read_split
from llm_studio.data.batching import collate, plan_batches, stats_text, tokenize_conversations
from llm_studio.errors import DatasetError
from llm_studio.models.load import autocast_dtype, enable_checkpointing, load_backbone, maybe_compile, resolve_device
from llm_studio.tracking.reporter import Reporter
from llm_studio.train import distributed
from llm_studio.train.checkpoint import (Progress, best_checkpoint, load_training_state, prune_checkpoints,
                                         read_state, remove_partial_checkpoints, restore_rng, save_checkpoint)
from llm_studio.train.evaluate import EvalResult, evaluate, write_predictions
from llm_studio.train.loss import IGNORE_INDEX, label_logits, label_token_count
from llm_studio.train.optim import build_optimizer, build_scheduler, trainable_parameters
from llm_studio.train.run_state import BestMetrics, MicroBatch, StepWindow, StopFlag, memory_mb
from llm_studio.train.zero import ZERO_FOLDER, ZeroEngine


class TrainRecipe:
    def __init__(self, cfg: ExperimentConfig, *, exp_dir: Path, reporter: Reporter,
                 resume_from: Path | None = None, stop: StopFlag | None = None):
        self.cfg = cfg
        self.exp_dir = Path(exp_dir)
        self.checkpoint_dir = self.exp_dir / "checkpoints"
        self.reporter = reporter
        self.resume_from = resume_from
        self.stop = stop or StopFlag()
        self.progress = Progress()
        self.total_steps = 0
        self.steps_per_epoch = 0
        self.best = BestMetrics(f"validation/{cfg.evaluation.best_metric}")
        self.last_eval_step = -1
        self.last_save_step = -1
        self.last_checkpoint: Path | None = None
        self._last_eval_metrics: dict[str, float] = {}
        self.train_tokens = 0
        self.train_seconds = 0.0
        self._plans: dict[int, list[list[list[int]]]] = {}

    # ============================================================================================ setup

    def setup(self) -> None:
        cfg = self.cfg
        self.dist = distributed.current()
        self.device = self._setup_environment(cfg.environment, cfg.training.seed)
        self._setup_model(cfg.model, cfg.adapter, cfg.environment)
        self._setup_data(cfg.dataset, cfg.training)
        self._setup_optimizer(cfg.training)
        if self.dist.is_main:  # a save killed midway (kill -9, power loss) left a hidden partial folder
            for partial in remove_partial_checkpoints(self.checkpoint_dir):
                self.reporter.info(f"removed {partial.name}, left by an interrupted save")
        if self.resume_from is not None:
            self._restore(self.resume_from)

    @classmethod
    def from_memory(cls, cfg: ExperimentConfig, *, model: torch.nn.Module, tokenizer: Any, train_examples: list,
                    device: torch.device, exp_dir: Path) -> "TrainRecipe":
        """A recipe on an in-memory model and tokenized examples, ready for `plan` and `train_step`
        (benchmarks): what setup() does, minus reading a stored dataset and loading a stored backbone."""
        r = cls(cfg, exp_dir=exp_dir, reporter=None)  # type: ignore[arg-type]  # train_step never reports
        r.dist, r.device, r.zero = distributed.current(), device, None
        r.autocast_dtype = autocast_dtype(cfg.environment, device)
        r.model = r.train_model = model.to(device).train()  # never compiled here: label-only logits apply
        if cfg.model.gradient_checkpointing:
            enable_checkpointing(model)
        r.trainable = trainable_parameters(model)
        r.flatten_packed, r.label_logits_only = False, True
        r.tokenizer, r.pad_id = tokenizer, tokenizer.pad_token_id
        r.train_examples, r.train_lengths = train_examples, [len(e.input_ids) for e in train_examples]
        r.total_steps = cfg.training.max_steps
        r._setup_optimizer(cfg.training)
        return r

    def _setup_environment(self, env: EnvironmentConfig, seed: int) -> torch.device:
        if env.num_threads > 0:
            torch.set_num_threads(env.num_threads)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device
        device = resolve_device(env)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.cuda.reset_peak_memory_stats(device)
        self.autocast_dtype = autocast_dtype(env, device)
        amp = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "off"
        self.reporter.info(f"device {device} | autocast {amp} | torch threads {torch.get_num_threads()} | seed {seed}")
        return device

    def _setup_model(self, model_cfg: ModelConfig, adapter_cfg: AdapterConfig, env: EnvironmentConfig) -> None:
        t0 = time.perf_counter()
        # on resume the weights (adapter or full) come from the checkpoint
        loaded = load_backbone(model_cfg, adapter_cfg, env, weights_from=self.resume_from)
        self.model = loaded.model          # unwrapped: what is saved and what generates
        self.tokenizer = loaded.tokenizer
        self.backbone = loaded.backbone
        self.zero: ZeroEngine | None = None  # DeepSpeed: wraps the model once the optimizer exists
        self.train_model = self.model if env.deepspeed_stage else distributed.wrap_model(maybe_compile(self.model, env))
        self.label_logits_only = not env.compile  # a compiled graph would recompile for each new label count
        self.model.train()
        self.trainable = trainable_parameters(self.model)
        # flash-attention finds packed examples only in a single row (varlen kernels): flatten the batch;
        # sdpa/eager find them per row from the restarting position ids
        attn = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        self.flatten_packed = self.cfg.training.packing and attn == "flash_attention_2"
        n_train = sum(p.numel() for p in self.trainable)
        n_all = sum(p.numel() for p in self.model.parameters())
        self.reporter.info(f"model {self.backbone} ({str(loaded.dtype).replace('torch.', '')}"
                           f"{', ' + model_cfg.quantization if model_cfg.quantization != 'none' else ''}, "
                           f"adapter {adapter_cfg.type}): {n_train:,} of {n_all:,} parameters trainable "
                           f"({time.perf_counter() - t0:.1f}s)")

    def _setup_data(self, ds: DatasetConfig, tr: TrainingConfig) -> None:
        self.pad_id = self.tokenizer.pad_token_id
        train_convs = read_split(ds.name, "train")
        self.train_examples, stats = tokenize_conversations(train_convs, self.tokenizer, ds)
        if not self.train_examples:
            raise DatasetError(f"dataset {ds.name!r} has no training examples left after tokenization "
                               f"(max_length {ds.max_length}, overlong '{ds.overlong}')")
        self.train_lengths = [len(e.input_ids) for e in self.train_examples]

        valid_convs = read_split(ds.name, "validation", missing_ok=True)
        if ds.max_validation_rows:
            valid_convs = valid_convs[:ds.max_validation_rows]
        self.valid_conversations = valid_convs
        self.valid_examples = tokenize_conversations(valid_convs, self.tokenizer, ds)[0] if valid_convs else []
        # validation batches: unpacked, grouped by length (order does not change a summed loss)
        self.valid_batches = plan_batches(
            [len(e.input_ids) for e in self.valid_examples], batch_size=tr.batch_size, max_length=ds.max_length,
            packing=False, group_by_length=True, seed=tr.seed, epoch=0) if self.valid_examples else []

        n_batches = len(self.plan(0))
        self.steps_per_epoch = math.ceil(n_batches / tr.gradient_accumulation)
        self.total_steps = tr.max_steps or max(1, math.ceil(tr.epochs * self.steps_per_epoch))
        self.reporter.info(f"data {ds.name}: {len(self.train_examples)} train examples "
                           f"({stats_text(stats)}), {len(self.valid_examples)} validation | "
                           f"{n_batches} batches of {tr.batch_size} {'packed rows' if tr.packing else 'sequences'} "
                           f"per epoch, {self.steps_per_epoch} steps/epoch, {self.total_steps} steps in all")

    def plan(self, epoch: int) -> list[list[list[int]]]:
        """Epoch `epoch`'s micro-batches (rows of example indices): deterministic per seed and epoch,
        so a resumed run re-plans the epoch and skips to its batch index."""
        if epoch not in self._plans:
            tr, ds = self.cfg.training, self.cfg.dataset
            self._plans = {epoch: plan_batches(self.train_lengths, batch_size=tr.batch_size,
                                                     max_length=ds.max_length, packing=tr.packing,
                                                     group_by_length=tr.group_by_length, seed=tr.seed, epoch=epoch)}
        return self._plans[epoch]

    def _setup_optimizer(self, tr: TrainingConfig) -> None:
        self.optimizer = build_optimizer(self.model, tr, self.device)
        self.scheduler = build_scheduler(self.optimizer, tr, self.total_steps)
        if self.cfg.environment.deepspeed_stage:
            self.zero = ZeroEngine(self.model, self.optimizer, self.cfg)
            self.train_model = self.zero
            self.reporter.info(f"DeepSpeed ZeRO-{self.zero.stage} engine over {self.zero.world_size} process(es)")
        # fp16 autocast needs loss scaling; bf16 and fp32 do not
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None

    def _restore(self, path: Path) -> None:
        state = load_training_state(path)
        restored = self.zero.load(path) if self.zero is not None else "optimizer" in state
        if self.zero is None and restored:
            self.optimizer.load_state_dict(state["optimizer"])
        if not restored:  # saved with DeepSpeed and resumed without it, or the reverse
            self.reporter.info(f"{Path(path).name} has no optimizer state for this setup "
                               f"(deepspeed_stage {self.cfg.environment.deepspeed_stage}): "
                               "the optimizer restarts, weights, schedule and data position continue", event=True)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        info = read_state(path)
        self.best = BestMetrics(self.best.key, dict(info.get("best_metrics") or {}), info.get("best_step"))
        self.train_tokens = int(info.get("train_tokens") or 0)
        self.train_seconds = float(info.get("train_seconds") or 0.0)
        self.reporter.latest.update(info.get("latest_metrics") or {})
        self.last_save_step = self.progress.global_step
        self.last_checkpoint = Path(path)
        restore_rng(state["rng"])  # last: everything above may have drawn random numbers
        self.reporter.info(f"resumed from {Path(path).name}: step {self.progress.global_step}/{self.total_steps}, "
                           f"epoch {self.progress.epoch}, batch {self.progress.batch_index}", event=True)

    # ============================================================================================ train

    def train(self) -> str:
        """Run until the last step ("finished") or a stop request ("stopped")."""
        tr = self.cfg.training
        p = self.progress
        if distributed.stop_due(self.stop):  # SIGTERM during setup: nothing new to save
            self.reporter.info(f"{self.stop.reason}: stopping before the first step", event=True)
            return "stopped"
        self.reporter.info(f"training from step {p.global_step} to {self.total_steps}", event=True)
        t_start, steps_done = time.perf_counter(), 0
        window = StepWindow()
        while p.global_step < self.total_steps:
            batches = self.plan(p.epoch)
            if p.batch_index >= len(batches):  # only if a plan shrank under a resumed position
                p.epoch, p.batch_index = p.epoch + 1, 0
                continue
            group = batches[p.batch_index:p.batch_index + tr.gradient_accumulation]
            self.train_step(group, window)
            p.global_step += 1
            p.batch_index += len(group)
            epoch_end = p.batch_index >= len(batches)
            epoch = p.epoch + p.batch_index / len(batches)
            if epoch_end:
                p.epoch, p.batch_index = p.epoch + 1, 0
            step, steps_done, last = p.global_step, steps_done + 1, p.global_step >= self.total_steps

            if step % tr.log_every == 0 or last:
                self._log_train(window, step, epoch)
                window = StepWindow()
            elapsed = time.perf_counter() - t_start
            rate = steps_done / elapsed if elapsed > 0 else None
            eta = (self.total_steps - step) / rate if rate else None
            self.reporter.progress(step, self.total_steps, elapsed_s=elapsed, eta_s=eta, rate=rate,
                                   postfix=f"loss {self.reporter.latest.get('train/loss', float('nan')):.4f}")
            if distributed.stop_due(self.stop, step):
                return self._stopped(step, window, epoch)
            if last:
                break
            eval_due = step % tr.eval_every == 0 if tr.eval_every else epoch_end
            if eval_due:
                self._evaluate(step, epoch)
            if (step % tr.save_every == 0) if tr.save_every else eval_due:
                self._save(step)
            if distributed.stop_due(self.stop, step):  # arrived during the evaluation or the save
                return self._stopped(step, window, epoch)

        step, epoch = p.global_step, p.epoch + p.batch_index / max(1, len(self.plan(p.epoch)))
        if self.last_eval_step != step:
            self._evaluate(step, epoch)
        if self.last_save_step != step:
            self._save(step)
        self.reporter.info(f"finished at step {step}", event=True)
        return "finished"

    def train_step(self, group: list[list[list[int]]], window: StepWindow) -> None:
        """One optimizer step over the micro-batches in `group` (gradient accumulation)."""
        t0 = time.perf_counter()
        micro = [self._collate_share(rows) for rows in group]
        # Count on the CPU copies of the labels: the normaliser is known before any forward, with no device sync.
        # Under DDP: summed over the ranks' shares of the step.
        n_label, real, computed = distributed.all_reduce_sum([sum(label_token_count(m.labels) for m in micro),
                                                              sum(m.real_tokens for m in micro),
                                                              sum(m.computed_tokens for m in micro)])
        denom = max(1, n_label)
        step_loss = torch.zeros((), device=self.device, dtype=torch.float32)
        for i, m in enumerate(micro):
            inputs = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in m.inputs.items()}
            last = i == len(micro) - 1
            with distributed.no_sync(self.train_model, last_micro_batch=last) if self.zero is None \
                    else contextlib.nullcontext():
                with label_logits(self.model, m.labels, self.device, enabled=self.label_logits_only) \
                        as selection, self._autocast():
                    logits = self.train_model(**inputs).logits
                loss_sum = selection.loss_sum(logits)
                loss = loss_sum / denom  # every label token of the step weighs the same
                if self.zero is not None:
                    self.zero.backward(loss, last)
                else:
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            step_loss += loss_sum.detach()
        window.lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (a Python float)
        grad_norm = self.zero.step() if self.zero is not None else self._optimizer_step()
        self.scheduler.step()

        window.loss_sum = step_loss if window.loss_sum is None else window.loss_sum + step_loss
        window.grad_norm = grad_norm.detach()
        window.label_tokens += n_label
        window.real_tokens += real
        window.computed_tokens += computed
        window.seconds += time.perf_counter() - t0
        self.train_tokens += real

    def _optimizer_step(self) -> torch.Tensor:
        """Unscale, clip, step and clear the gradients; the norm before clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.training.max_grad_norm or float("inf")  # inf: only measure the norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _collate(self, rows: list[list[int]], examples: list | None = None, packed: bool | None = None) -> MicroBatch:
        packed = self.cfg.training.packing if packed is None else packed
        out = collate(self.train_examples if examples is None else examples, rows, self.pad_id, packed=packed,
                      flatten=packed and self.flatten_packed)
        inputs = dict(out["inputs"])
        labels = inputs.pop("labels")
        return MicroBatch(inputs, labels, int(out["n_real_tokens"]), int(out["n_computed_tokens"]))

    def _collate_share(self, rows: list[list[int]]) -> MicroBatch:
        """This rank's rows of a micro-batch (all of them in one process); a stand-in adds no labels."""
        mine, real = distributed.share(rows)
        m = self._collate(mine)
        if not real:
            m.labels.fill_(IGNORE_INDEX)
            m.real_tokens = m.computed_tokens = 0
        return m

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.autocast_dtype is None:
            yield
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                yield

    def _log_train(self, w: StepWindow, step: int, epoch: float) -> None:
        t0 = time.perf_counter()
        loss_sum = distributed.all_reduce_sum(w.loss_sum)  # over ranks (a collective: every rank logs)
        loss = loss_sum.item() / max(1, w.label_tokens)  # CPU-GPU sync point: only on log steps
        grad_norm = w.grad_norm.item()
        w.seconds += time.perf_counter() - t0  # the wait for queued GPU work belongs to the window
        self.train_seconds += w.seconds
        values = w.train_metrics(loss, grad_norm, memory_mb(self.device))
        self.reporter.metrics(step, values, epoch=epoch)
        self.reporter.info(
            f"step {step}/{self.total_steps} | epoch {epoch:.2f} | loss {loss:.4f} | lr {w.lr:.2e} | "
            f"grad_norm {grad_norm:.3f} | {values['train/tokens_per_s']:,.0f} tok/s | "
            f"pad {values['train/pad_fraction']:.1%} | mem {values['train/memory_mb']:,.0f} MB")

    # ======================================================================================= evaluation

    def _evaluate(self, step: int, epoch: float) -> EvalResult | None:
        self.last_eval_step = step
        if not self.valid_examples and not self.valid_conversations:
            return None
        every_rank = self.zero is not None and self.zero.stage == 3  # sharded parameters: all ranks run the forwards
        if not self.dist.is_main and not every_rank:  # rank 0 evaluates; the others wait for it
            distributed.barrier()
            return None
        ev, tr = self.cfg.evaluation, self.cfg.training
        loss_batches = ({"inputs": {**m.inputs, "labels": m.labels}}
                        for m in (self._collate(rows, self.valid_examples, packed=False)
                                  for rows in self.valid_batches))
        result = evaluate(self.model, self.tokenizer, loss_batches=loss_batches,
                          conversations=self.valid_conversations, dataset_cfg=self.cfg.dataset,
                          gen_cfg=self.cfg.generation, metric_names=ev.metrics, num_predictions=ev.num_predictions,
                          batch_size=max(tr.batch_size, 8), seed=tr.seed, device=self.device, autocast=self._autocast)
        self.reporter.metrics(step, result.metrics, epoch=epoch)  # the reporter of other ranks writes nothing
        self.best.update(step, result.metrics)
        if result.predictions and self.dist.is_main:
            write_predictions(self.exp_dir / "predictions.parquet", step, result.predictions)
        self.reporter.flush()
        shown = " | ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in result.metrics.items())
        self.reporter.info(f"evaluation at step {step}: {shown} ({result.seconds:.1f}s)", event=True)
        self._last_eval_metrics = result.metrics
        distributed.barrier()
        return result

    # ====================================================================================== checkpoints

    def _save(self, step: int) -> Path | None:
        """Rank 0 writes the checkpoint; under DeepSpeed every rank first writes its optimizer shard."""
        self.last_save_step = step
        t0 = time.perf_counter()
        staged = self.zero.stage_checkpoint(self.checkpoint_dir, step) if self.zero is not None else None
        with self.zero.full_parameters() if self.zero is not None else contextlib.nullcontext():
            path = self._write_checkpoint(step, staged, t0) if self.dist.is_main else None
            distributed.barrier()
        return path

    def _write_checkpoint(self, step: int, staged: Path | None, t0: float) -> Path:
        metrics = self._last_eval_metrics if self.last_eval_step == step else {}
        extra = {"backbone": self.backbone, "adapter": self.cfg.adapter.type, "best_metrics": self.best.values,
                 "best_step": self.best.step, "latest_metrics": dict(self.reporter.latest),
                 "train_tokens": self.train_tokens, "train_seconds": self.train_seconds,
                 "total_steps": self.total_steps}
        extra_state = {"scaler": self.scaler.state_dict()} if self.scaler is not None else None
        path = save_checkpoint(self.checkpoint_dir, model=self.model, tokenizer=self.tokenizer,
                               optimizer=None if staged else self.optimizer, scheduler=self.scheduler,
                               progress=self.progress, metrics=metrics, extra=extra, extra_state=extra_state,
                               move_in={ZERO_FOLDER: staged} if staged else None)
        removed = prune_checkpoints(self.checkpoint_dir, self.cfg.training.keep_checkpoints,
                                    f"validation/{self.cfg.evaluation.best_metric}")
        self.last_checkpoint = path
        gone = f"; removed {', '.join(r.name for r in removed)}" if removed else ""
        self.reporter.info(f"saved checkpoint {path.name} ({time.perf_counter() - t0:.1f}s{gone})")
        return path

    def _stopped(self, step: int, window: StepWindow, epoch: float) -> str:
        if window.loss_sum is not None:  # steps since the last log line: report them before leaving
            self._log_train(window, step, epoch)
        self.reporter.info(f"{self.stop.reason}: saving a checkpoint at step {step}", event=True)
        if self.last_save_step != step:
            self._save(step)
        return "stopped"

    # ========================================================================================== summary

    def summary(self) -> dict[str, Any]:
        """What summary.json reports about this run (launch adds status, error and times)."""
        best = best_checkpoint(self.checkpoint_dir, f"validation/{self.cfg.evaluation.best_metric}")
        epochs = (self.progress.global_step / self.steps_per_epoch) if self.steps_per_epoch else 0.0
        return {
            "global_step": self.progress.global_step,
            "total_steps": self.total_steps,
            "epochs": round(epochs, 4),
            "final_metrics": dict(self.reporter.latest),
            "best_metrics": dict(self.best.values),
            "best_metric": f"validation/{self.cfg.evaluation.best_metric}",
            "best_step": self.best.step,
            "best_checkpoint": str(best.path.relative_to(self.exp_dir)) if best else None,
            "last_checkpoint": (str(self.last_checkpoint.relative_to(self.exp_dir))
                                if self.last_checkpoint and self.last_checkpoint.exists() else None),
            "train_tokens": self.train_tokens,
            "train_seconds": round(self.train_seconds, 3),
            "tokens_per_s": round(self.train_tokens / self.train_seconds, 1) if self.train_seconds else None,
            "backbone": getattr(self, "backbone", None),
        }
