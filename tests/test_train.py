"""`llm-studio train` end to end, as real subprocesses on the tiny model and the sample dataset:
files, metrics and summary of a run; resume continuing the same loss curve; SIGTERM stopping with a
checkpoint; a failure recorded as `failed`; a bad config refused before anything exists. The full
learning run of the offline preset is marked slow."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli, cli_env

TIMEOUT = 240


def small_config(tmp_path: Path, tiny_model_dir: Path, **training: object) -> Path:
    """A run of a few quick steps: short packed rows, a small adapter, a few short predictions."""
    cfg = {
        "dataset": {"name": "sample-qa", "max_length": 64},
        "model": {"backbone": str(tiny_model_dir)},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.05, "modules_to_save": ["lm_head"]},
        "training": {"max_steps": 6, "batch_size": 4, "learning_rate": 0.003, "log_every": 1, **training},
        "evaluation": {"num_predictions": 4},
        "generation": {"max_new_tokens": 4},
        # one thread: these tests often share a small CPU with other test processes, where two
        # spinning OpenMP threads per process slow everything down many times over
        "environment": {"num_threads": 1},
    }
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(home: Path, *args: str, module: str = "llm_studio.cli", **env: str) -> subprocess.CompletedProcess:
    cmd = cli(*args) if module == "llm_studio.cli" else [sys.executable, "-m", module, *args[1:]]
    return subprocess.run(cmd, env=cli_env(home, **env), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)


def losses(name: str) -> dict[int, float]:
    from llm_studio.store import Store

    return {p.step: p.value for p in Store().get_metric_series(name, "train/loss")}


def test_a_run_writes_its_folder_metrics_and_summary(tmp_path: Path, workspace: Path, tiny_model_dir: Path) -> None:
    from llm_studio.store import Store

    config = small_config(tmp_path, tiny_model_dir, eval_every=3, save_every=2, keep_checkpoints=2)
    proc = run(workspace, "train", str(config), "--name", "e2e")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "step 6/6" in proc.stdout and "evaluation at step 3" in proc.stdout  # log lines mirrored to stdout

    folder = workspace / "experiments" / "e2e"
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["generation"]["top_p"] == 1.0 and saved["training"]["seed"] == 42  # complete: defaults written
    log = (folder / "train.log").read_text()
    assert "step 6/6" in log and "finished at step 6" in log
    # saves at 2, 4 and 6 (final), evaluations at 3 and 6: the last two kept (step-6 is also the best)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-4", "step-6"]
    final = folder / "checkpoints" / "step-6"
    assert (final / "adapter_model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    state = json.loads((final / "state.json").read_text())
    assert state["global_step"] == 6 and "validation/loss" in state["metrics"]

    import pandas as pd

    preds = pd.read_parquet(folder / "predictions.parquet")
    assert len(preds) == 4 and {"prompt", "target", "prediction", "exact_match", "bleu"} <= set(preds.columns)
    assert set(preds["exact_match"]) <= {0.0, 1.0}

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 6 and summary["epochs"] > 0
    for key in ("train/loss", "train/lr", "validation/loss", "validation/perplexity", "validation/bleu",
                "validation/exact_match"):
        assert key in summary["final_metrics"]
    assert summary["best_metrics"]["validation/loss"] <= summary["final_metrics"]["validation/loss"] + 1e-9
    assert summary["last_checkpoint"] == "checkpoints/step-6"

    store = Store()
    rec = store.get_experiment("e2e")
    assert (rec.status, rec.step, rec.total_steps, rec.progress) == ("finished", 6, 6, 1.0)
    assert rec.finished_at is not None and rec.error is None
    names = set(store.metric_names("e2e"))
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/pad_fraction",
            "train/memory_mb", "validation/loss", "validation/perplexity", "validation/bleu",
            "validation/exact_match"} <= names
    assert sorted(losses("e2e")) == [1, 2, 3, 4, 5, 6]              # log_every=1
    assert [p.step for p in store.get_metric_series("e2e", "validation/loss")] == [3, 6]
    pad = store.get_metric_series("e2e", "train/pad_fraction")
    assert all(0.0 <= p.value < 1.0 for p in pad)
    assert all(p.value > 0 for p in store.get_metric_series("e2e", "train/tokens_per_s"))
    assert any("finished" in e.message for e in store.list_events("e2e"))

    # the name is now taken: another run is refused before any work
    from llm_studio.errors import NameTakenError
    from llm_studio.train.launch import prepare

    with pytest.raises(NameTakenError, match="already exists"):
        prepare(str(config), "e2e", [], None)


def test_resume_continues_the_loss_curve(tmp_path: Path, workspace: Path, tiny_model_dir: Path) -> None:
    # batches of 16 rows of 64 tokens: 7 steps an epoch. The stop after step 8 falls mid-epoch, just
    # after an epoch-end evaluation; dropout makes the RNG state matter.
    config = small_config(tmp_path, tiny_model_dir, max_steps=10, batch_size=16, eval_every=0)
    full = run(workspace, "train", str(config), "--name", "full")
    assert full.returncode == 0, full.stderr
    assert "evaluation at step 7" in full.stdout

    half = run(workspace, "train", str(config), "--name", "half", LLM_STUDIO_STOP_AFTER_STEP="8")
    assert half.returncode == 0, half.stderr
    from llm_studio.store import Store

    assert Store().get_experiment("half").status == "stopped"
    assert json.loads((workspace / "experiments" / "half" / "checkpoints" / "step-8" / "state.json").read_text()
                      )["epoch"] == 1
    assert sorted(losses("half")) == list(range(1, 9))

    resumed = run(workspace, "train", "--resume", "half")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step-8" in resumed.stdout
    assert Store().get_experiment("half").status == "finished"
    a, b = losses("full"), losses("half")
    assert sorted(b) == list(range(1, 11))
    for step in range(1, 11):  # the same curve before the stop and after the resume
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), (step, a, b)
    summary = json.loads((workspace / "experiments" / "half" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 10


def test_a_resume_after_a_crash_logs_each_step_once(tmp_path: Path, workspace: Path, tiny_model_dir: Path) -> None:
    """A crash while step 3's checkpoint was being written (simulated: step-3 moved back to the hidden temp
    folder a killed save leaves) resumes from step 2; the partial folder is removed and the first logging
    of step 3 is dropped, so the curve and the latest values show every step once."""
    from llm_studio.store import Store

    config = small_config(tmp_path, tiny_model_dir, max_steps=6, save_every=2, eval_every=1000)
    first = run(workspace, "train", str(config), "--name", "crash", LLM_STUDIO_STOP_AFTER_STEP="3")
    assert first.returncode == 0, first.stderr
    checkpoints = workspace / "experiments" / "crash" / "checkpoints"
    (checkpoints / "step-3" / "state.json").unlink()  # the last file a save writes
    (checkpoints / "step-3").rename(checkpoints / ".step-3.tmp-99999")
    resumed = run(workspace, "train", "--resume", "crash")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step-2" in resumed.stdout and "removed .step-3.tmp-99999" in resumed.stdout
    assert not list(checkpoints.glob(".*"))
    steps = [p.step for p in Store().get_metrics("crash", names=["train/loss"])]
    assert steps == [1, 2, 3, 4, 5, 6], steps
    assert Store().latest_metrics("crash")["train/loss"] == losses("crash")[6]


@pytest.mark.timeout(TIMEOUT)
def test_sigterm_finishes_the_step_saves_a_checkpoint_and_ends_stopped(tmp_path: Path, workspace: Path,
                                                                      tiny_model_dir: Path) -> None:
    config = small_config(tmp_path, tiny_model_dir, max_steps=500, eval_every=1000)
    proc = subprocess.Popen(cli("train", str(config), "--name", "sig"), env=cli_env(workspace), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if re.search(r"step 2/500", line):
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert "SIGTERM received: saving a checkpoint" in out

    from llm_studio.store import Store
    from llm_studio.train.checkpoint import latest_checkpoint

    rec = Store().get_experiment("sig")
    assert rec.status == "stopped" and rec.error is None
    folder = workspace / "experiments" / "sig"
    summary = json.loads((folder / "summary.json").read_text())
    latest = latest_checkpoint(folder / "checkpoints")
    assert summary["status"] == "stopped" and 2 <= summary["global_step"] < 500
    assert latest is not None and latest.step == summary["global_step"] == rec.step


def test_an_exception_ends_the_run_failed_with_its_message(tmp_path: Path, workspace: Path,
                                                           tiny_model_dir: Path) -> None:
    config = small_config(tmp_path, tiny_model_dir)
    # also the module entry point workers may run: python -m llm_studio.train
    proc = run(workspace, "train", str(config), "--name", "broken", "--set", "model.backbone=no-such-org/no-such-model",
               module="llm_studio.train")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    from llm_studio.store import Store

    rec = Store().get_experiment("broken")
    assert rec.status == "failed" and "no-such-org/no-such-model" in rec.error
    folder = workspace / "experiments" / "broken"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == rec.error
    assert "Traceback" in (folder / "train.log").read_text()
    assert any(e.level == "error" for e in Store().list_events("broken"))


@pytest.mark.parametrize("overrides, fields", [
    (["training.learning_rate=-1", "adapter.r=0"], ["training.learning_rate", "adapter.r"]),
    (["training.no_such_knob=1"], ["training.no_such_knob"]),
])
def test_a_bad_config_is_refused_before_anything_is_created(tmp_path: Path, workspace: Path, overrides: list[str],
                                                            fields: list[str]) -> None:
    args = [a for o in overrides for a in ("--set", o)]
    proc = run(workspace, "train", str(REPO / "experiments" / "tiny-sft.yaml"), "--name", "bad", *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: invalid config") and "Traceback" not in proc.stderr
    for field in fields:
        assert field in proc.stderr
    assert not (workspace / "experiments").exists() and not (workspace / "llm_studio.db").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(),
                    reason="checks a CPU refusal (fp16 mixed precision needs CUDA); this machine has a GPU")
def test_an_option_this_machine_cannot_run_is_refused_with_its_field(workspace: Path) -> None:
    from llm_studio.errors import ConfigError
    from llm_studio.train.launch import prepare

    with pytest.raises(ConfigError) as e:
        prepare(str(REPO / "experiments" / "tiny-sft.yaml"), "hw", ["environment.mixed_precision=fp16"], None)
    assert e.value.problems[0][0] == "environment.mixed_precision" and "CUDA" in e.value.problems[0][1]
    assert not (workspace / "experiments").exists()


def test_resume_refuses_settings_changes_and_unknown_names(workspace: Path) -> None:
    from llm_studio.errors import LLMStudioError, NotFoundError
    from llm_studio.train.launch import prepare

    with pytest.raises(LLMStudioError, match="--set cannot change a resumed run"):
        prepare(None, None, ["training.epochs=2"], "x")
    with pytest.raises(NotFoundError):
        prepare(None, None, [], "never-ran")


@pytest.mark.slow
def test_offline_preset_learns_the_sample_dataset(workspace: Path, tiny_model_dir: Path) -> None:
    """The offline default must reach exact match >= 0.9 with a falling loss in a few CPU minutes."""
    t0 = time.monotonic()
    proc = subprocess.run(cli("train", str(REPO / "experiments" / "tiny-sft.yaml"), "--name", "learn",
                              "--set", f"model.backbone={tiny_model_dir}"),
                          env=cli_env(workspace), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((workspace / "experiments" / "learn" / "summary.json").read_text())
    curve = losses("learn")
    steps = sorted(curve)
    first, last = curve[steps[0]], curve[steps[-1]]
    print(f"wall {time.monotonic() - t0:.0f}s, loss {first:.3f} -> {last:.3f}, "
          f"final {summary['final_metrics']}, tokens/s {summary['tokens_per_s']}")
    assert last < first / 5
    assert summary["final_metrics"]["validation/exact_match"] >= 0.9
