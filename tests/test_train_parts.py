"""The training engine's small parts, each on its own: LR schedule, metrics, loss normalisation,
checkpoints (atomic save, keep last K + best, RNG round trip), the Reporter (buffered metrics,
heartbeats, stop requests), hardware checks, Neptune offline, QLoRA on CPU, and GPU-only paths."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llm_studio.config.schema import (AdapterConfig, EnvironmentConfig, ExperimentConfig, ModelConfig,
                                      TrainingConfig)
from llm_studio.errors import ConfigError
from llm_studio.store.records import MetricPoint
from llm_studio.tracking.reporter import ProgressLine, Reporter, format_duration
from llm_studio.train import checkpoint as ckpt
from llm_studio.train import metrics as M
from llm_studio.train.loss import label_logits, label_token_count, token_loss_sum
from llm_studio.train.optim import build_optimizer, build_scheduler, learning_rate, warmup_steps

NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is False on this machine)"


# --- learning-rate schedule ------------------------------------------------------------------------

def test_warmup_ramps_up_then_each_schedule_has_its_shape() -> None:
    lr = lambda step, schedule: learning_rate(step, base_lr=1.0, total_steps=10, warmup=2, schedule=schedule)
    for schedule in ("constant", "linear", "cosine"):
        assert lr(0, schedule) == pytest.approx(1 / 3)       # (step + 1) / (warmup + 1): the first step learns
        assert lr(1, schedule) == pytest.approx(2 / 3)
        assert lr(2, schedule) == pytest.approx(1.0)          # peak right after warmup
    assert [lr(s, "constant") for s in range(2, 10)] == [1.0] * 8
    assert lr(6, "linear") == pytest.approx(0.5)              # halfway through the decay
    assert lr(6, "cosine") == pytest.approx(0.5)
    assert lr(4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr(10, "linear") == pytest.approx(0.0) and lr(10, "cosine") == pytest.approx(0.0)
    decay = [lr(s, "cosine") for s in range(2, 11)]
    assert decay == sorted(decay, reverse=True)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr(0, "exponential")


def test_warmup_steps_from_ratio() -> None:
    assert warmup_steps(100, 0.05) == 5
    assert warmup_steps(12, 0.05) == 1       # any ratio above zero warms up at least one step
    assert warmup_steps(12, 0.0) == 0
    assert warmup_steps(3, 0.5) == 2


def test_scheduler_follows_the_pure_function() -> None:
    model = torch.nn.Linear(4, 4)
    cfg = TrainingConfig(learning_rate=0.01, scheduler="cosine", warmup_ratio=0.2)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    sched = build_scheduler(opt, cfg, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [learning_rate(s, base_lr=0.01, total_steps=10, warmup=2, schedule="cosine") for s in range(10)]
    assert seen == pytest.approx(expected)


def test_weight_decay_skips_biases_and_frozen_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    opt = build_optimizer(model, TrainingConfig(weight_decay=0.1), torch.device("cpu"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    assert sum(len(g["params"]) for g in opt.param_groups) == 5  # the frozen weight is left out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal; on a GPU the 8-bit optimizer works")
def test_8bit_optimizer_on_cpu_is_refused_with_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        build_optimizer(torch.nn.Linear(2, 2), TrainingConfig(optimizer="adamw_8bit"), torch.device("cpu"))
    assert e.value.problems[0][0] == "training.optimizer"


# --- metrics and loss ------------------------------------------------------------------------------

def test_exact_match_normalises_case_space_and_edge_punctuation() -> None:
    assert M.exact_match("Paris.", "paris") == 1.0
    assert M.exact_match("  New   York ", "new york") == 1.0
    assert M.exact_match("3.5", "35") == 0.0        # inner punctuation is kept
    assert M.exact_match("Berlin!", "Bonn") == 0.0
    assert M.normalize_answer("\uff21BC") == "abc"   # NFKC folds full-width letters


def test_bleu_and_perplexity() -> None:
    assert M.sentence_bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert M.sentence_bleu("dog", "the cat sat on the mat") < 10
    assert M.corpus_bleu(["a b c d", "e f g h"], ["a b c d", "e f g h"]) == pytest.approx(100.0)
    assert M.corpus_bleu(["Paris", "Rome"], ["Paris", "Rome"]) == pytest.approx(100.0)  # one-word answers
    assert M.corpus_bleu(["Paris", "Oslo"], ["Paris", "Rome"]) < 100.0
    assert M.corpus_bleu([], []) == 0.0
    assert M.perplexity(0.0) == 1.0
    assert M.perplexity(math.log(7)) == pytest.approx(7.0)
    assert math.isfinite(M.perplexity(1e9))
    assert M.higher_is_better("validation/exact_match") and not M.higher_is_better("validation/loss")


def test_loss_is_summed_over_label_tokens_and_matches_the_mean_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, 3, 4, -100, 5], [-100, -100, 1, 2, -100]])
    n = label_token_count(labels)
    assert n == 5
    shifted = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1),
                                                ignore_index=-100)
    assert (token_loss_sum(logits, labels) / n).item() == pytest.approx(shifted.item(), rel=1e-6)
    # two micro-batches normalised by the step's total equal one batch holding both
    a = token_loss_sum(logits[:1], labels[:1]) + token_loss_sum(logits[1:], labels[1:])
    assert (a / n).item() == pytest.approx(shifted.item(), rel=1e-6)


def test_label_only_logits_give_the_same_loss_and_gradients_as_full_logits(tiny_model_dir: Path) -> None:
    """The output head runs only where a label follows (answer tokens), so a step never holds the
    (tokens x vocabulary) logits of prompts and padding; the loss and every gradient stay the same."""
    from llm_studio.models.load import load_backbone

    torch.manual_seed(0)
    model = load_backbone(ModelConfig(backbone=str(tiny_model_dir)),
                          AdapterConfig(type="lora", r=4, alpha=8, dropout=0.0),  # no dropout: two equal forwards
                          EnvironmentConfig(device="cpu")).model
    ids = torch.randint(5, 200, (3, 24))
    labels = ids.clone()
    labels[:, :9] = -100                     # prompts
    labels[2, 15:] = -100                    # padding of a shorter row
    labels[1, 16] = -100                     # the first token of a second packed example

    def loss_and_grads(select: bool) -> tuple[torch.Tensor, list[torch.Tensor], torch.Size]:
        model.zero_grad(set_to_none=True)
        with label_logits(model, labels, torch.device("cpu"), enabled=select) as selection:
            logits = model(input_ids=ids).logits
        loss = selection.loss_sum(logits)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad], logits.shape

    full_loss, full_grads, full_shape = loss_and_grads(False)
    loss, grads, shape = loss_and_grads(True)
    n = label_token_count(labels)
    assert full_shape[:2] == (3, 24) and shape[0] == n < 3 * 24 // 2
    assert loss.item() == pytest.approx(full_loss.item(), rel=1e-5)
    assert loss.item() == pytest.approx(token_loss_sum(model(input_ids=ids).logits, labels).item(), rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, full_grads))
    # the hook is gone after the block: generation and evaluation see every position again
    assert model(input_ids=ids).logits.shape[:2] == (3, 24)


def test_gradient_checkpointing_is_on_by_default_and_changes_no_gradient(tiny_model_dir: Path) -> None:
    from llm_studio.models.load import load_backbone

    assert ModelConfig().gradient_checkpointing  # the default, as in TRL and H2O LLM Studio
    ids = torch.randint(5, 200, (2, 16))
    grads = {}
    for on in (True, False):
        torch.manual_seed(0)
        model = load_backbone(ModelConfig(backbone=str(tiny_model_dir), gradient_checkpointing=on),
                              AdapterConfig(type="lora", r=4, alpha=8, dropout=0.0),
                              EnvironmentConfig(device="cpu")).model
        assert model.base_model.model.is_gradient_checkpointing is on
        model.train()
        token_loss_sum(model(input_ids=ids).logits, ids).backward()
        grads[on] = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[True], grads[False]))


# --- checkpoints -----------------------------------------------------------------------------------

class _TinyModel(torch.nn.Module):
    """A module with `save_pretrained`, like a PeftModel / PreTrainedModel."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def save_pretrained(self, folder: Path, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(folder) / "model.safetensors"))


def _save(root: Path, step: int, metrics: dict[str, float] | None = None) -> Path:
    model = _TinyModel()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return ckpt.save_checkpoint(root, model=model, tokenizer=None, optimizer=opt, scheduler=sched,
                                progress=ckpt.Progress(step, 0, step), metrics=metrics)


def test_keep_last_k_checkpoints_plus_the_best(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    losses = {2: 0.9, 4: 0.3, 6: 0.5, 8: 0.7, 10: 0.6}
    for step, loss in losses.items():
        _save(root, step, {"validation/loss": loss})
        ckpt.prune_checkpoints(root, keep_last=2, best_metric="validation/loss")
    assert [c.step for c in ckpt.list_checkpoints(root)] == [4, 8, 10]  # the last two + the best (step 4)
    assert ckpt.best_checkpoint(root, "validation/loss").step == 4
    assert ckpt.latest_checkpoint(root).step == 10
    # higher is better for exact match; checkpoints without that metric never count as best
    root2 = tmp_path / "em"
    for step, em in ((1, 0.2), (2, 0.9), (3, None), (4, 0.5)):
        _save(root2, step, {"validation/exact_match": em} if em is not None else {})
    ckpt.prune_checkpoints(root2, keep_last=1, best_metric="validation/exact_match")
    assert [c.step for c in ckpt.list_checkpoints(root2)] == [2, 4]


def test_checkpoint_is_atomic_and_half_written_ones_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    path = _save(root, 3)
    assert {p.name for p in path.iterdir()} >= {"model.safetensors", "training_state.pt", "state.json"}
    assert json.loads((path / "state.json").read_text())["global_step"] == 3
    (root / ".step-5.tmp-123").mkdir()                 # a crash mid-save
    (root / "step-7").mkdir()                          # a folder without its state files
    assert [c.step for c in ckpt.list_checkpoints(root)] == [3]
    _save(root, 3)                                      # saving the same step again replaces it
    assert [c.step for c in ckpt.list_checkpoints(root)] == [3]
    assert not [p for p in root.iterdir() if p.name.startswith(".step-3")]


def test_rng_states_round_trip() -> None:
    state = ckpt.capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# --- the Reporter ----------------------------------------------------------------------------------

class FakeStore:
    def __init__(self, job_status: str = "running") -> None:
        self.metric_calls: list[list[MetricPoint]] = []
        self.updates: list[dict[str, Any]] = []
        self.heartbeats: list[tuple[int, dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []
        self.job_status = job_status

    def log_metrics(self, name: str, points: list[MetricPoint]) -> None:
        self.metric_calls.append(list(points))

    def update_experiment(self, name: str, **fields: Any) -> None:
        self.updates.append(fields)

    def heartbeat(self, job_id: int, **fields: Any) -> str:
        self.heartbeats.append((job_id, fields))
        return self.job_status

    def add_event(self, name: str, level: str, message: str) -> None:
        self.events.append((level, message))


def test_reporter_buffers_metrics_and_writes_them_in_one_batch(tmp_path: Path) -> None:
    store, now = FakeStore(), [0.0]
    rep = Reporter("run", tmp_path / "train.log", store=store, stdout=False, flush_every_s=5.0, clock=lambda: now[0])
    try:
        for step in range(1, 11):
            rep.metrics(step, {"train/loss": 1.0 / step, "train/lr": 0.1})
        assert store.metric_calls == []                 # no SQL per step
        now[0] = 6.0
        rep.metrics(11, {"train/loss": 0.05})           # the time-based flush
        assert len(store.metric_calls) == 1 and len(store.metric_calls[0]) == 21
        rep.metrics(12, {"validation/loss": 0.5}, epoch=1.0)
        rep.flush()                                     # e.g. at an evaluation
        assert store.metric_calls[1] == [MetricPoint("validation/loss", 12, 0.5, 1.0, store.metric_calls[1][0].time)]
        assert rep.latest == {"train/loss": 0.05, "train/lr": 0.1, "validation/loss": 0.5}
        rep.info("evaluated", event=True)
    finally:
        rep.close("finished")
    assert store.events == [("info", "evaluated")]
    assert "evaluated" in (tmp_path / "train.log").read_text()


def test_reporter_retries_metrics_when_the_store_is_busy(tmp_path: Path) -> None:
    class BusyOnce(FakeStore):
        fails = 1

        def log_metrics(self, name: str, points: list[MetricPoint]) -> None:
            if self.fails:
                self.fails -= 1
                raise RuntimeError("database is locked")
            super().log_metrics(name, points)

    store = BusyOnce()
    rep = Reporter("run", None, store=store, stdout=False)
    rep.metrics(1, {"train/loss": 1.0})
    rep.flush()
    rep.metrics(2, {"train/loss": 0.5})
    rep.close()
    assert [p.step for p in store.metric_calls[0]] == [1, 2]


def test_heartbeat_reports_progress_and_a_runner_stop_request(tmp_path: Path) -> None:
    store = FakeStore(job_status="stopping")
    stops: list[bool] = []
    rep = Reporter("run", None, store=store, job_id="7", stdout=False, heartbeat_every_s=3600)
    rep.progress(5, 20, elapsed_s=10.0, eta_s=30.0)
    rep.start_heartbeat(on_stop_request=lambda: stops.append(True))  # beats once at once
    rep.close()
    job_id, fields = store.heartbeats[0]
    assert job_id == 7 and fields == {"progress": 0.25, "step": 5, "total_steps": 20, "eta_s": 30.0}
    assert stops                                        # the runner said `stopping`


def test_progress_line_shows_position_rate_and_eta() -> None:
    line = ProgressLine(enabled=False).render(45, 120, elapsed_s=12, eta_s=20, rate=3.75, postfix="loss 1.23")
    assert "45/120" in line and "[00:12<00:20, 3.75 step/s]" in line and line.endswith("loss 1.23")
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "?"


def test_neptune_offline_mode_writes_a_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neptune", reason="the neptune package is not installed")
    from llm_studio.tracking.reporter import NeptuneSink

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / "neptune"))
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    sink = NeptuneSink("studio/tests", "offline", "run", {"training/learning_rate": 0.1, "dataset/system": None})
    rep = Reporter("run", None, store=None, neptune=sink, stdout=False)
    rep.metrics(1, {"train/loss": 2.0})
    rep.metrics(2, {"train/loss": 1.0})
    rep.close("finished")
    runs = list((tmp_path / "neptune" / "offline").glob("run__*"))
    assert len(runs) == 1 and any(runs[0].iterdir())


# --- what this machine can run ---------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusals; a GPU can run these options")
def test_options_a_cpu_cannot_run_are_named_before_training() -> None:
    from llm_studio.models.load import hardware_problems

    cfg = ExperimentConfig.model_validate({
        "environment": {"mixed_precision": "fp16"}, "model": {"attn_implementation": "flash_attention_2"},
        "training": {"optimizer": "paged_adamw_8bit"}})
    fields = [f for f, _ in hardware_problems(cfg)]
    assert fields == ["environment.mixed_precision", "model.attn_implementation", "training.optimizer"]
    assert hardware_problems(ExperimentConfig()) == []
    assert hardware_problems(ExperimentConfig.model_validate({"model": {"quantization": "4bit"}})) == []


def test_qlora_4bit_step_runs_on_this_machine(tiny_model_dir: Path) -> None:
    """bitsandbytes >= 0.45 ships CPU kernels for nf4; a QLoRA step must train the adapter."""
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    from llm_studio.models.load import load_backbone

    torch.manual_seed(0)
    loaded = load_backbone(ModelConfig(backbone=str(tiny_model_dir), quantization="4bit"),
                           AdapterConfig(type="lora", r=4, alpha=8, dropout=0.0), EnvironmentConfig(device="auto"))
    model = loaded.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([loaded.tokenizer("What is 2 + 3? 5")["input_ids"]], device=loaded.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = token_loss_sum(model(input_ids=ids).logits, ids) / label_token_count(ids)
    loss.backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert changed and math.isfinite(loss.item())
    # evaluation runs the same 4-bit layers in eval mode (bitsandbytes has a separate CPU path there)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids[:, :4], attention_mask=torch.ones_like(ids[:, :4]), max_new_tokens=2,
                             do_sample=False)
    assert out.shape == (1, 6)
    model.train()
    model(input_ids=ids).logits.sum().backward()  # and trains again afterwards


# --- GPU-only paths --------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_bf16_autocast_on_cuda() -> None:
    from llm_studio.models.load import autocast_dtype, resolve_dtype

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU does not support bf16")
    device = torch.device("cuda")
    assert autocast_dtype(EnvironmentConfig(mixed_precision="auto"), device) == torch.bfloat16
    assert resolve_dtype(ModelConfig(dtype="auto"), device) == torch.bfloat16
    layer = torch.nn.Linear(8, 8).to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert layer(torch.randn(2, 8, device=device)).dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("name", ["adamw_8bit", "paged_adamw_8bit"])
def test_8bit_optimizers_step_on_cuda(name: str) -> None:
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    model = torch.nn.Linear(64, 64).cuda()
    opt = build_optimizer(model, TrainingConfig(optimizer=name), torch.device("cuda"))
    before = model.weight.detach().clone()
    model(torch.randn(4, 64, device="cuda")).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, model.weight)
