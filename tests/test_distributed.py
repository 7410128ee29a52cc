"""Multi-process training: real 2-process CPU runs under DDP and DeepSpeed ZeRO. A DDP run (gloo) of the tiny model through the CLI, which
relaunches itself under torchrun. One set of metrics (rank 0 writes), world size 2 in train.log, and
the same losses as one process on the same global batch (each rank takes rows[rank::2] of every
micro-batch; the loss is normalised by the label tokens summed over ranks and DDP sums gradients)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_train import losses, run, small_config

pytestmark = pytest.mark.timeout(300)


def test_two_cpu_processes_train_like_one(tmp_path: Path, workspace: Path, tiny_model_dir: Path) -> None:
    from llm_studio.store import Store

    # no dropout: both runs then compute the same function of the same rows
    config = small_config(tmp_path, tiny_model_dir, max_steps=4, eval_every=2, save_every=2)
    no_dropout = ["--set", "adapter.dropout=0", "--set", "environment.device=cpu"]
    ddp = run(workspace, "train", str(config), "--name", "ddp", *no_dropout, "--set", "environment.num_processes=2")
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    one = run(workspace, "train", str(config), "--name", "one", *no_dropout)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]

    folder = workspace / "experiments" / "ddp"
    log = (folder / "train.log").read_text()
    assert "world size 2" in log and "finished at step 4" in log
    assert log.count("step 4/4 |") == 1  # one writer
    store = Store()
    assert store.get_experiment("ddp").status == "finished"
    for metric in ("train/loss", "train/lr", "train/tokens_per_s"):
        assert [p.step for p in store.get_metric_series("ddp", metric)] == [1, 2, 3, 4], metric
    assert [p.step for p in store.get_metric_series("ddp", "validation/loss")] == [2, 4]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-2", "step-4"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4

    a, b = losses("one"), losses("ddp")
    for step in range(1, 5):
        assert b[step] == pytest.approx(a[step], rel=1e-3), (step, a, b)
    # the token counts are summed over the ranks: the same training tokens as one process
    assert summary["train_tokens"] == json.loads(
        (workspace / "experiments" / "one" / "summary.json").read_text())["train_tokens"]


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_with_two_processes_trains_like_one_and_resumes(stage: int, tmp_path: Path, workspace: Path,
                                                                       tiny_model_dir: Path) -> None:
    """ZeRO-2 (sharded optimizer state) and ZeRO-3 (sharded parameters too) under DeepSpeed's engine, 2 CPU
    processes: the same losses as one plain process, one writer, a checkpoint holding each rank's shard that
    chat/export can load like any other, and a resume that restores the sharded optimizer state."""
    from llm_studio.store import Store
    from llm_studio.train.checkpoint import latest_checkpoint

    config = small_config(tmp_path, tiny_model_dir, max_steps=4, eval_every=2, save_every=2, gradient_accumulation=2)
    no_dropout = ["--set", "adapter.dropout=0", "--set", "environment.device=cpu"]
    name = f"zero{stage}"
    ds = run(workspace, "train", str(config), "--name", name, *no_dropout, "--set", "environment.num_processes=2",
             "--set", f"environment.deepspeed_stage={stage}", LLM_STUDIO_STOP_AFTER_STEP="2")
    assert ds.returncode == 0, ds.stdout[-3000:] + ds.stderr[-3000:]
    one = run(workspace, "train", str(config), "--name", "one", *no_dropout)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]

    folder = workspace / "experiments" / name
    log = (folder / "train.log").read_text()
    assert "world size 2" in log and f"DeepSpeed ZeRO-{stage} engine over 2 process(es)" in log
    assert Store().get_experiment(name).status == "stopped"
    ckpt = latest_checkpoint(folder / "checkpoints")
    assert ckpt is not None and ckpt.step == 2
    shards = sorted(p.name for p in (ckpt.path / "zero").rglob("*optim_states.pt"))
    assert len(shards) == 2, shards  # one optimizer shard per rank, inside the atomic checkpoint
    assert (ckpt.path / "adapter_model.safetensors").is_file()  # whole weights, loadable by chat and export
    assert not list((folder / "checkpoints").glob(".*")), "no staging folder is left behind"

    resumed = run(workspace, "train", "--resume", name)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from step-2" in resumed.stdout and "no optimizer state" not in resumed.stdout
    assert Store().get_experiment(name).status == "finished"
    a, b = losses("one"), losses(name)
    assert sorted(b) == [1, 2, 3, 4]
    for step in range(1, 5):  # steps 3-4 match only if the optimizer's moments were restored from the shards
        assert b[step] == pytest.approx(a[step], rel=2e-3), (step, a, b)
    assert len({round(v, 4) for v in a.values()}) == 4, a  # the loss moves: the comparison means something


def test_deepspeed_refuses_what_it_cannot_run_with_the_field_named(workspace: Path) -> None:
    from conftest import REPO
    from llm_studio.errors import ConfigError
    from llm_studio.train.launch import prepare

    with pytest.raises(ConfigError) as e:
        prepare(str(REPO / "experiments" / "tiny-sft.yaml"), "ds",
                ["environment.deepspeed_stage=2", "environment.compile=true"], None)
    assert ("environment.compile", "torch.compile is not used with DeepSpeed; turn one of them off") \
        in e.value.problems


def test_sigterm_stops_every_rank_with_a_checkpoint_and_resume_continues(tmp_path: Path, workspace: Path,
                                                                         tiny_model_dir: Path) -> None:
    import re
    import signal
    import subprocess

    from conftest import REPO, cli, cli_env
    from llm_studio.store import Store
    from llm_studio.train.checkpoint import latest_checkpoint

    config = small_config(tmp_path, tiny_model_dir, max_steps=500, eval_every=1000)
    proc = subprocess.Popen(cli("train", str(config), "--name", "sig", "--set", "environment.num_processes=2"),
                            env=cli_env(workspace), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if re.search(r"step 2/500", line):
                proc.send_signal(signal.SIGTERM)  # the launcher forwards it to torchrun's ranks
                break
        rest, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert proc.returncode == 0, out[-3000:]
    assert "SIGTERM received: saving a checkpoint" in out
    folder = workspace / "experiments" / "sig"
    rec = Store().get_experiment("sig")
    latest = latest_checkpoint(folder / "checkpoints")
    assert rec.status == "stopped" and latest is not None and latest.step == rec.step >= 2

    # resume under DDP (rank 0 saved, every rank loads): a deterministic stop two steps later
    resumed = run(workspace, "train", "--resume", "sig", LLM_STUDIO_STOP_AFTER_STEP=str(latest.step + 2))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from step-{latest.step}" in resumed.stdout and "world size 2" in resumed.stdout
    assert Store().get_experiment("sig").status == "stopped"
    assert latest_checkpoint(folder / "checkpoints").step == latest.step + 2
    assert sorted(losses("sig")) == list(range(1, latest.step + 3))  # each step logged once
