"""Training throughput: the studio's engine against TRL's SFTTrainer and a bare PyTorch loop.

One process, one model (a ~3.4M-parameter Llama, random init, the studio's tiny tokenizer; or --model),
one long-tailed synthetic chat dataset (lognormal lengths, fixed seed, max length 512), batch size 8,
the same steps, seed, learning rate (constant 2e-4), clipping (1.0) and fp32 everywhere:

  trl_padded   TRL SFTTrainer, padded batches (packing=False)
  trl_packed   TRL SFTTrainer, packing=True (TRL's default BFD packing, padding-free)
  bare_loop    a plain PyTorch loop: shuffled padded batches, the model's own loss, AdamW
  engine       the studio's engine: TrainRecipe.train_step on plan_batches(packing=True,
               group_by_length=True) + collate, its loss (train/loss.py) and optimizer (train/optim.py)

For each: real (non-pad) tokens/s, the fraction of computed tokens that are real, peak memory (RSS sampled
by a thread on CPU; CUDA max allocated on GPU), seconds per step, first/last loss. Warm-up steps are not
timed; every variant is repeated (--repeats, round-robin across variants) from the same initial weights
and the median is reported.

    python benchmarks/train_throughput.py --quick           # make bench (2 CPU cores: a few minutes)
    python benchmarks/train_throughput.py --steps 30 --json out.json
    python benchmarks/train_throughput.py --device cuda --model Qwen/Qwen2.5-0.5B   # on a GPU machine
    python benchmarks/train_throughput.py --smoke           # 1 warm-up + 1 step, tiny batches (tests)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

LR = 2e-4
WORDS = ("the model data token train loss batch answer question value number river city light water stone "
         "paper window garden music table number seven three orange green blue quick slow large small early "
         "late north south energy market story letter system memory signal pattern order random simple").split()
VARIANTS = ("trl_padded", "trl_packed", "bare_loop", "engine")


# ============================================================================================== data

def synthetic_conversations(n: int, seed: int, mean_words: float) -> list[list[dict[str, str]]]:
    """Chats whose lengths follow a lognormal (long tail: most short, a few past max_length)."""
    rng = np.random.default_rng(seed)
    convs = []
    for _ in range(n):
        total = int(np.clip(rng.lognormal(np.log(mean_words), 0.9), 8, 4000))
        q = max(3, int(total * rng.uniform(0.15, 0.4)))
        a = max(3, total - q)
        convs.append([{"role": "user", "content": " ".join(rng.choice(WORDS, q)) + "?"},
                      {"role": "assistant", "content": " ".join(rng.choice(WORDS, a)) + "."}])
    return convs


def build_model_and_tokenizer(model_id: str | None, device: torch.device, hidden_size: int = 256, layers: int = 4,
                              intermediate_size: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    if model_id:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_id)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32, attn_implementation="sdpa")
        return model, tok
    from llm_studio.models.tiny import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    heads = max(1, hidden_size // 64)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size,
                         intermediate_size=intermediate_size or 2 * hidden_size, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, dtype="float32", attn_implementation="sdpa")
    return LlamaForCausalLM(config), tok


# ========================================================================================= measuring

class PeakMemory:
    """Peak CUDA allocation, or the peak resident set size sampled every 10 ms (process-wide)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            proc = psutil.Process()
            self.peak = proc.memory_info().rss

            def poll():
                while not self._stop.wait(0.01):
                    self.peak = max(self.peak, proc.memory_info().rss)
            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, psutil.Process().memory_info().rss)

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(step_s: list[float], real: list[int], computed: list[int], losses: list[float],
              warmup: int, mem_mb: float) -> dict[str, Any]:
    t, r, c = step_s[warmup:], real[warmup:], computed[warmup:]
    secs = sum(t)
    return {"tokens_per_s": sum(r) / secs if secs else 0.0, "real_fraction": sum(r) / max(1, sum(c)),
            "s_per_step": secs / max(1, len(t)), "peak_mem_mb": mem_mb, "timed_steps": len(t),
            "real_tokens": sum(r), "first_loss": losses[0] if losses else float("nan"),
            "last_loss": losses[-1] if losses else float("nan")}


# ========================================================================================== variants

def run_trl(model, tok, examples, a, device, packing: bool) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    n_steps = a.warmup + a.steps
    ds = Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                            "completion_mask": [e.mask for e in examples]})
    marks: list[float] = []
    losses: list[float] = []
    real: list[int] = []
    computed: list[int] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not marks:  # the first step starts here (after the dataloader was set up)
                sync(device)
                marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            marks.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out, max_length=a.max_length, packing=packing, per_device_train_batch_size=a.batch_size,
            gradient_accumulation_steps=1, max_steps=n_steps, learning_rate=LR, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=a.seed,
            data_seed=a.seed, bf16=False, fp16=False, use_cpu=device.type == "cpu", report_to=[],
            logging_steps=1, save_strategy="no", eval_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, completion_only_loss=True, dataset_num_proc=None,
            **({} if a.checkpointing == "defaults" else {"gradient_checkpointing": a.checkpointing == "on"}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok,
                                 callbacks=[Clock()])
        inner = trainer.data_collator

        def counting(features):  # batches are made in order (num_workers=0): batch k feeds step k
            batch = inner(features)
            ids = batch["input_ids"]
            computed.append(ids.numel())
            am = batch.get("attention_mask")
            real.append(int(am.sum()) if am is not None and not getattr(inner, "padding_free", False)
                        else ids.numel())
            return batch
        trainer.data_collator = counting
        with PeakMemory(device) as mem, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
    step_s = [b - a_ for a_, b in zip(marks, marks[1:])]
    return {**summarise(step_s, real[:len(step_s)], computed[:len(step_s)], losses, a.warmup, mem.mb),
            "checkpointing": bool(cfg.gradient_checkpointing)}


def run_bare(model, tok, examples, a, device) -> dict[str, Any]:
    from llm_studio.data.batching import collate
    from llm_studio.models.load import enable_checkpointing

    model.to(device).train()
    if a.checkpointing == "on":  # a bare loop keeps every activation unless told otherwise
        enable_checkpointing(model)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    rng = np.random.default_rng(a.seed)
    order = rng.permutation(len(examples)).tolist()
    pad = tok.pad_token_id
    step_s, real, computed, losses = [], [], [], []
    with PeakMemory(device) as mem:
        for k in range(a.warmup + a.steps):
            sync(device)
            t0 = time.perf_counter()
            rows = [[i] for i in order[(k * a.batch_size) % len(order):][:a.batch_size]]
            out = collate(examples, rows, pad, packed=False)
            inputs = {kk: v.to(device) if torch.is_tensor(v) else v for kk, v in out["inputs"].items()}
            loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())  # one sync per step, as a loop that prints its loss has
            step_s.append(time.perf_counter() - t0)
            real.append(out["n_real_tokens"])
            computed.append(out["n_computed_tokens"])
    return {**summarise(step_s, real, computed, losses, a.warmup, mem.mb), "checkpointing": a.checkpointing == "on"}


def run_engine(model, tok, examples, a, device) -> dict[str, Any]:
    """The real engine's step (TrainRecipe.train_step): its collate, loss, clipping, optimizer and schedule."""
    from llm_studio.config.schema import (DatasetConfig, EnvironmentConfig, ExperimentConfig, ModelConfig,
                                          TrainingConfig)
    from llm_studio.train.recipe import TrainRecipe
    from llm_studio.train.run_state import StepWindow

    n_steps = a.warmup + a.steps
    model_cfg = ModelConfig() if a.checkpointing == "defaults" else ModelConfig(
        gradient_checkpointing=a.checkpointing == "on")
    cfg = ExperimentConfig(
        model=model_cfg, dataset=DatasetConfig(max_length=a.max_length),
        training=TrainingConfig(batch_size=a.batch_size, packing=True, group_by_length=True, max_steps=n_steps,
                                learning_rate=LR, scheduler="constant", warmup_ratio=0.0, weight_decay=0.0,
                                max_grad_norm=1.0, seed=a.seed),
        environment=EnvironmentConfig(device=device.type, mixed_precision="no"))
    with tempfile.TemporaryDirectory() as out:
        r = TrainRecipe.from_memory(cfg, model=model, tokenizer=tok, train_examples=examples, device=device,
                                    exp_dir=Path(out))
        step_s, real, computed, losses = [], [], [], []
        epoch, index = 0, 0
        with PeakMemory(device) as mem:
            for _ in range(n_steps):
                batches = r.plan(epoch)  # planned once per epoch (cached), as in train()
                if index >= len(batches):
                    epoch, index = epoch + 1, 0
                    batches = r.plan(epoch)
                w = StepWindow()
                sync(device)
                t0 = time.perf_counter()
                r.train_step(batches[index:index + 1], w)
                losses.append(w.loss_sum.item() / max(1, w.label_tokens))
                step_s.append(time.perf_counter() - t0)
                real.append(w.real_tokens)
                computed.append(w.computed_tokens)
                index += 1
    return {**summarise(step_s, real, computed, losses, a.warmup, mem.mb),
            "checkpointing": cfg.model.gradient_checkpointing}


# ============================================================================================== main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps (make bench): 2 warm-up + 8 timed, 3 repeats")
    p.add_argument("--smoke", action="store_true", help="1 warm-up + 1 step, batch 2, max length 64, 1 repeat")
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 30; --quick 8)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per variant; the median is reported (3)")
    p.add_argument("--batch-size", type=int, default=None, help="default 8")
    p.add_argument("--max-length", type=int, default=None, help="default 512")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--model", default=None, help="a local folder or hub id (default: the 3.4M random Llama)")
    p.add_argument("--hidden-size", type=int, default=256, help="random Llama: hidden size (heads = hidden / 64)")
    p.add_argument("--layers", type=int, default=4, help="random Llama: decoder layers")
    p.add_argument("--intermediate-size", type=int, default=None, help="random Llama: MLP width (2 x hidden)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--json", default=None, help="write every figure to this file")
    p.add_argument("--checkpointing", choices=("defaults", "on", "off"), default="defaults",
                   help="gradient checkpointing: each tool's default (TRL on, the engine's schema default, the "
                        "bare loop off), or on/off for every variant")
    p.add_argument("--memory-processes", action="store_true",
                   help="also run each variant once in a fresh process for its own peak RSS (fair CPU memory)")
    a = p.parse_args(argv)
    if a.smoke:
        defaults = dict(steps=1, warmup=1, repeats=1, batch_size=2, max_length=64)
    elif a.quick:
        defaults = dict(steps=8, warmup=2, repeats=3, batch_size=8, max_length=512)
    else:
        defaults = dict(steps=30, warmup=2, repeats=3, batch_size=8, max_length=512)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def own_process_memory(a: argparse.Namespace, variants: list[str]) -> dict[str, float]:
    """Peak memory of each variant run alone (1 repeat) in a child process: in the shared process, later
    variants inherit the allocator caches and imports of earlier ones."""
    out: dict[str, float] = {}
    for name in variants:
        with tempfile.TemporaryDirectory() as tmp:
            args = [sys.executable, __file__, "--variants", name, "--repeats", "1", "--steps", str(a.steps),
                    "--warmup", str(a.warmup), "--batch-size", str(a.batch_size), "--max-length", str(a.max_length),
                    "--seed", str(a.seed), "--device", a.device, "--checkpointing", a.checkpointing,
                    "--json", str(Path(tmp) / "one.json")]
            if a.model:
                args += ["--model", a.model]
            args += ["--hidden-size", str(a.hidden_size), "--layers", str(a.layers)]
            if a.intermediate_size:
                args += ["--intermediate-size", str(a.intermediate_size)]
            done = subprocess.run(args, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"the {name} memory run failed:\n{done.stderr[-2000:]}")
            out[name] = json.loads((Path(tmp) / "one.json").read_text())["results"][name]["peak_mem_mb"]
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    from llm_studio.config.schema import DatasetConfig
    from llm_studio.data.batching import tokenize_conversations

    dev = "cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available()) else "cpu"
    device = torch.device(dev)
    variants = [v for v in a.variants.split(",") if v]
    t_setup = time.perf_counter()
    base_model, tok = build_model_and_tokenizer(a.model, device, a.hidden_size, a.layers, a.intermediate_size)
    init_state = copy.deepcopy(base_model.state_dict())
    n_params = sum(p.numel() for p in base_model.parameters())
    # enough examples that the packed variants never run out within one repeat
    n_conv = max(64, 40 * (a.warmup + a.steps) * a.batch_size * a.max_length // 512)
    convs = synthetic_conversations(n_conv, a.seed, mean_words=60 if a.max_length >= 256 else 12)
    examples, stats = tokenize_conversations(convs, tok, DatasetConfig(max_length=a.max_length))
    lens = np.array([len(e.input_ids) for e in examples])
    print(f"model {a.model or 'random Llama'} ({n_params / 1e6:.2f}M parameters) | device {device} | "
          f"torch {torch.__version__} threads {torch.get_num_threads()} | {len(examples)} examples, length "
          f"median {int(np.median(lens))} p90 {int(np.percentile(lens, 90))} max {lens.max()} "
          f"({stats['n_truncated']} truncated at {a.max_length}) | batch {a.batch_size} | "
          f"{a.warmup} warm-up + {a.steps} timed steps x {a.repeats} repeats | load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} | setup {time.perf_counter() - t_setup:.1f}s",
          flush=True)

    runners: dict[str, Callable[[Any], dict[str, Any]]] = {
        "trl_padded": lambda m: run_trl(m, tok, examples, a, device, packing=False),
        "trl_packed": lambda m: run_trl(m, tok, examples, a, device, packing=True),
        "bare_loop": lambda m: run_bare(m, tok, examples, a, device),
        "engine": lambda m: run_engine(m, tok, examples, a, device),
    }
    # Repeats go round-robin over the variants, so a change of machine load (shared machines) hits them alike.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for rep in range(a.repeats):
        for name in variants:
            model = copy.deepcopy(base_model)
            model.load_state_dict(init_state)
            model.to(device)
            torch.manual_seed(a.seed)
            r = runners[name](model)
            r["load_average"] = os.getloadavg()[0]
            runs[name].append(r)
            del model
            print(f"  repeat {rep + 1} {name}: {r['tokens_per_s']:,.0f} real tok/s, {r['s_per_step']:.3f} s/step "
                  f"(load {r['load_average']:.2f})", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in variants:
        rs = runs[name]
        med = {k: statistics.median(r[k] for r in rs) for k in ("tokens_per_s", "real_fraction", "s_per_step",
                                                                 "peak_mem_mb")}
        mid = min(rs, key=lambda r: abs(r["tokens_per_s"] - med["tokens_per_s"]))
        results[name] = {**med, "first_loss": mid["first_loss"], "last_loss": mid["last_loss"],
                         "checkpointing": mid["checkpointing"], "runs": rs}

    mem_label = "peak CUDA MB" if device.type == "cuda" else "peak RSS MB"
    print(f"\n{'variant':<12} {'real tok/s':>11} {'real frac':>9} {'s/step':>8} {mem_label:>13} "
          f"{'first loss':>10} {'last loss':>9} {'grad ckpt':>9}")
    for name, r in results.items():
        print(f"{name:<12} {r['tokens_per_s']:>11,.0f} {r['real_fraction']:>9.1%} {r['s_per_step']:>8.3f} "
              f"{r['peak_mem_mb']:>13,.0f} {r['first_loss']:>10.3f} {r['last_loss']:>9.3f} "
              f"{'on' if r['checkpointing'] else 'off':>9}")
    ratios: dict[str, float] = {}
    trl = [n for n in ("trl_padded", "trl_packed") if n in results]
    if "engine" in results and trl:
        best = max(trl, key=lambda n: results[n]["tokens_per_s"])
        ratios["engine_vs_best_trl"] = results["engine"]["tokens_per_s"] / max(1e-9, results[best]["tokens_per_s"])
        print(f"ratio engine / best TRL ({best}): {ratios['engine_vs_best_trl']:.2f}x  (target >= 1.5x)")
    if "engine" in results and "bare_loop" in results:
        ratios["engine_vs_bare_loop"] = (results["engine"]["tokens_per_s"]
                                         / max(1e-9, results["bare_loop"]["tokens_per_s"]))
        print(f"ratio engine / bare loop: {ratios['engine_vs_bare_loop']:.2f}x  (target >= 0.9x)")
    if a.memory_processes:
        own = own_process_memory(a, variants)
        for name, mb in own.items():
            results[name]["own_process_peak_mb"] = mb
        base = min((own[n] for n in trl if n in own), default=None)
        print("peak RSS, each variant alone in a fresh process (same imports, model and data): "
              + ", ".join(f"{n} {mb:,.0f} MB" for n, mb in own.items())
              + (f" | engine / lowest TRL {own['engine'] / base:.2f}x" if base and "engine" in own else ""))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if a.json:
        info = {"argv": sys.argv[1:], "args": vars(a), "device": str(device), "torch": torch.__version__,
                "cpu_count": os.cpu_count(), "platform": platform.platform(), "n_params": n_params,
                "n_examples": len(examples), "load_average_end": os.getloadavg(),
                "results": results, "ratios": ratios, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        Path(a.json).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
