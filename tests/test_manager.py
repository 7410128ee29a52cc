"""The experiment manager with real worker processes, a real scheduler process and a real SQLite store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, cli, cli_env
from polling import wait_for
from llm_studio.runner import manager, resources
from llm_studio.store import Store

TINY = str(REPO / "experiments" / "tiny-sft.yaml")
# short runs: a handful of steps, a checkpoint every few, nothing generated
FAST = ["training.max_steps=6", "training.eval_every=3", "training.save_every=3", "training.log_every=1",
        "evaluation.num_predictions=2", "generation.max_new_tokens=4"]
LONG = ["training.max_steps=100000", "training.save_every=5", "training.log_every=1",
        "training.eval_every=100000", "evaluation.num_predictions=0"]


def start_worker(home: Path) -> subprocess.Popen:
    return subprocess.Popen(cli("worker", "--interval", "0.5"), env=cli_env(home), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def worker(workspace: Path, tiny_model_dir: Path):
    """A real `llm-studio worker` scheduler process for this test's workspace (killed at the end)."""
    models = workspace / "models"
    models.mkdir(parents=True)
    os.symlink(tiny_model_dir, models / "tiny-llama")  # built once per session, not per test
    proc = start_worker(workspace)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # a failed test must not leave training workers behind (they outlive schedulers by design)
    for job in Store().list_jobs(status=("running", "stopping")):
        if job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def status(name: str) -> str:
    return Store().get_experiment(name).status


def test_two_experiments_with_one_slot_run_one_after_the_other(worker) -> None:
    manager.start(TINY, "first", FAST)
    manager.start(TINY, "second", FAST)
    store = Store()
    wait_for(lambda: status("first") == "finished" and status("second") == "finished", 240, "both runs")
    first, second = store.get_experiment("first"), store.get_experiment("second")
    assert second.started_at >= first.finished_at, "one CPU slot: the second run waits for the first"
    summary = json.loads((Path(first.config_path).parent / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 6


def test_two_cpu_slots_run_together_and_split_the_cores(worker) -> None:
    Store().set_setting("cpu_slots", 2)
    manager.start(TINY, "left", FAST)
    manager.start(TINY, "right", FAST)
    wait_for(lambda: status("left") == "finished" and status("right") == "finished", 240, "both runs")
    store = Store()
    left, right = store.get_experiment("left"), store.get_experiment("right")
    assert right.started_at < left.finished_at, "two CPU slots: the runs overlap"
    threads = os.environ.get("OMP_NUM_THREADS") or str(resources.threads_per_cpu_slot(2))
    for exp in (left, right):  # each worker logs the torch threads it got
        log = (Path(exp.config_path).parent / "train.log").read_text()
        assert f"torch threads {threads} |" in log
        assert "unable to detect" not in log  # no DeepSpeed GPU-probe warning in a CPU run's log


def test_stop_saves_a_checkpoint_and_resume_finishes_the_run(worker) -> None:
    manager.start(TINY, "run", LONG)
    wait_for(lambda: Store().get_experiment("run").step >= 6, 120, "six steps")
    rec = manager.stop("run", wait_s=60)
    assert rec.status == "stopped"
    folder = Path(rec.config_path).parent
    checkpoints = sorted(folder.glob("checkpoints/step-*"))
    assert checkpoints, "stop saves a checkpoint"
    stopped_at = json.loads((folder / "summary.json").read_text())["global_step"]
    # resume with a finite budget beyond the stop point: continues from the checkpoint to the end
    cfg = folder / "config.yaml"
    cfg.write_text(cfg.read_text().replace("max_steps: 100000", f"max_steps: {stopped_at + 4}"))
    manager.resume("run")
    wait_for(lambda: status("run") == "finished", 120, "the resumed run to finish")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["global_step"] == stopped_at + 4
    steps = [p.step for p in Store().get_metrics("run", names=["train/loss"])]
    assert steps == sorted(set(steps)), "the curve continues: no step logged twice"


def test_kill_9_of_a_worker_is_reported_with_the_log_tail(worker) -> None:
    manager.start(TINY, "victim", LONG)
    wait_for(lambda: Store().get_experiment("victim").step >= 6, 120, "six steps")
    job = Store().active_job("victim")
    os.killpg(job.pid, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: status("victim") in ("interrupted", "failed"), 10, "interrupted/failed within 10 s")
    assert time.monotonic() - t0 < 10
    rec = Store().get_experiment("victim")
    assert rec.status == "interrupted", "it had checkpoints, so it is resumable"
    assert "last log lines" in rec.error and "step" in rec.error


def test_kill_9_of_the_scheduler_leaves_the_run_and_a_new_scheduler_adopts_it(worker, workspace: Path) -> None:
    manager.start(TINY, "orphan", ["training.max_steps=60", "training.log_every=1", "training.eval_every=1000",
                                   "evaluation.num_predictions=0"])
    wait_for(lambda: status("orphan") == "running", 60, "the run to start")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    job = Store().active_job("orphan")
    time.sleep(1.0)
    assert status("orphan") == "running"
    replacement = start_worker(workspace)
    try:
        wait_for(lambda: status("orphan") == "finished", 180, "the adopted run to finish")
        # the new scheduler notices the adopted worker's exit on its next pass
        final = wait_for(lambda: (j := Store().get_job(job.id)).status == "finished" and j, 10, "the job's end")
        assert final.finished_at is not None
    finally:
        os.killpg(replacement.pid, signal.SIGKILL)
        replacement.wait()


def test_queue_order_cancel_and_delete_while_queued(workspace: Path) -> None:
    # no scheduler: everything stays queued
    for name in ("a", "b", "c"):
        manager.start(TINY, name, FAST)
    queue = manager.move("c", 1)
    assert [j.experiment_name for j in queue] == ["c", "a", "b"]
    manager.delete("a")
    assert sorted(e.name for e in Store().list_experiments()) == ["b", "c"]
    assert not (workspace / "experiments" / "a").exists()
    assert [j.experiment_name for j in Store().list_jobs(status="queued")] == ["c", "b"]
    rec = manager.cancel("b")
    assert rec.status == "stopped"
    with pytest.raises(Exception, match="not queued"):
        manager.cancel("b")


def test_deleting_a_run_that_finishes_at_that_moment_still_deletes_it(workspace: Path) -> None:
    """The UI's delete stops a running run first; a run that ends between the delete's look and the stop
    must not turn the delete into an error (seen in CI: the clone test's run finished as Delete was clicked)."""
    manager.start(TINY, "racing", FAST)
    store = Store()
    store.update_experiment("racing", status="running")

    class FinishesNow(Store):  # the real store; the run "finishes" right after delete reads its status
        def get_experiment(self, name: str):
            rec = super().get_experiment(name)
            if rec.status == "running":
                self.update_experiment(name, status="finished")
            return rec

    manager.delete("racing", store=FinishesNow(), force=True, wait_s=1.0)
    assert "racing" not in [e.name for e in Store().list_experiments()]
    assert not (workspace / "experiments" / "racing").exists()


def test_user_errors_are_clear_and_change_nothing(workspace: Path) -> None:
    manager.start(TINY, "taken", FAST)
    with pytest.raises(Exception, match="already exists"):
        manager.start(TINY, "taken", FAST)
    with pytest.raises(Exception, match="does not exist"):
        manager.stop("nope")
    with pytest.raises(Exception) as err:
        manager.start(TINY, "bad", ["training.batch_size=0"])
    assert "training.batch_size" in str(err.value)
    assert not (workspace / "experiments" / "bad").exists()
    with pytest.raises(Exception, match="not allowed"):
        manager.start(TINY, "../escape", FAST)
    out = subprocess.run(cli("experiments", "resume", "taken"), env=cli_env(workspace), cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "cannot resume" in out.stderr and "Traceback" not in out.stderr


def test_a_broken_experiment_never_breaks_the_listing(workspace: Path) -> None:
    for name in ("healthy", "no-folder", "bad-config", "bad-summary"):
        manager.start(TINY, name, FAST)
    root = workspace / "experiments"
    shutil.rmtree(root / "no-folder")
    (root / "bad-config" / "config.yaml").write_text("training: [oops\n")
    (root / "bad-summary" / "summary.json").write_text("{not json")
    views = {v.name: v for v in manager.list_experiments()}
    assert views["healthy"].status == "queued" and views["healthy"].broken_reason is None
    assert views["no-folder"].status == "broken" and "missing" in views["no-folder"].broken_reason
    assert views["bad-config"].status == "broken" and "config.yaml" in views["bad-config"].broken_reason
    assert views["bad-summary"].status == "broken" and "summary.json" in views["bad-summary"].broken_reason
    out = subprocess.run(cli("experiments", "list"), env=cli_env(workspace), cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "healthy" in out.stdout and "broken: folder" in out.stdout
