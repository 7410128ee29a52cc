"""The store against real SQLite files: migrations, errors, metrics, the job queue, and real concurrent processes."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llm_studio.errors import NameTakenError, NotFoundError, StoreError
from llm_studio.store import MetricPoint, Store
from llm_studio.store.database import MIGRATIONS_DIR, upgrade_database

REPO = Path(__file__).resolve().parents[1]
TABLES = {"alembic_version", "datasets", "experiments", "jobs", "metrics", "latest_metrics", "events", "settings"}


def sql(db: Path, query: str) -> list[tuple]:
    """Read the file directly, as another program would."""
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_first_open_creates_the_schema_and_a_second_open_changes_nothing(workspace: Path) -> None:
    store = Store()
    db = workspace / "llm_studio.db"
    assert store.path == db and db.exists()
    assert TABLES <= {name for (name,) in sql(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert sql(db, "SELECT version_num FROM alembic_version") == [("0001",)]
    store.create_experiment("run-1", "run-1/config.yaml")
    store.close()

    again = Store()
    assert again.get_experiment("run-1").config_path == "run-1/config.yaml"
    assert sql(db, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert not list(workspace.glob("*.bak-*"))  # nothing to upgrade, nothing backed up


def test_wal_mode_and_foreign_keys_are_on(workspace: Path) -> None:
    store = Store()
    assert sql(store.path, "PRAGMA journal_mode") == [("wal",)]  # persistent, set once at creation
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_models_and_migrations_describe_the_same_schema() -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from llm_studio.store.models import Base

    store = Store()
    with store._engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []


def test_a_database_from_a_newer_version_is_refused(workspace: Path) -> None:
    Store().close()
    with sqlite3.connect(workspace / "llm_studio.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0042_from_the_future'")
    with pytest.raises(StoreError, match=r"revision '0042_from_the_future'.*newer LLM Studio"):
        Store()


def test_upgrading_an_existing_database_backs_it_up_first(workspace: Path, tmp_path: Path) -> None:
    # A real newer release: today's migrations plus one that adds a column.
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0002_notes.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\nrevision = "0002"\ndown_revision = "0001"\n'
        'def upgrade():\n    with op.batch_alter_table("experiments") as t:\n'
        '        t.add_column(sa.Column("notes", sa.Text(), nullable=True))\n'
    )
    store = Store()
    store.create_experiment("kept", "kept.yaml")
    store.log_metrics("kept", [MetricPoint("train/loss", 1, 0.5)])  # still in the WAL, not the main file

    upgrade_database(store._engine, store.path, script_location=migrations)

    backup = workspace / "llm_studio.db.bak-0001"
    assert sql(backup, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert sql(backup, "SELECT name FROM experiments") == [("kept",)]
    assert sql(backup, "SELECT value FROM metrics") == [(0.5,)]
    assert sql(store.path, "SELECT version_num FROM alembic_version") == [("0002",)]
    assert sql(store.path, "SELECT name, notes FROM experiments") == [("kept", None)]
    with pytest.raises(StoreError, match="newer"):  # and today's code now refuses it
        Store()


def test_names_taken_and_unknown_names_say_which(workspace: Path) -> None:
    store = Store()
    store.add_dataset("sample", "datasets/sample", "prompt_answer", {"prompt": "q", "answer": "a"}, 90, 10, {})
    store.create_experiment("run-1", "c.yaml", dataset_name="sample")
    with pytest.raises(NameTakenError, match="experiment 'run-1' already exists"):
        store.create_experiment("run-1", "other.yaml")
    with pytest.raises(NameTakenError, match="dataset 'sample' already exists"):
        store.add_dataset("sample", "x", "alpaca", {}, 1, 0, {})
    with pytest.raises(NotFoundError, match="experiment 'nope' does not exist"):
        store.get_experiment("nope")
    for call in (lambda: store.log_metrics("nope", []), lambda: store.enqueue_job("nope"),
                 lambda: store.delete_experiment("nope"), lambda: store.list_events("nope")):
        with pytest.raises(NotFoundError, match="'nope'"):
            call()
    with pytest.raises(NotFoundError, match="dataset 'gone' does not exist"):
        store.get_dataset("gone")
    with pytest.raises(NotFoundError, match="job 99 does not exist"):
        store.get_job(99)
    with pytest.raises(StoreError, match="unknown experiment field.*colour"):
        store.update_experiment("run-1", colour="red")
    with pytest.raises(StoreError, match="unknown experiment status 'done'"):
        store.update_experiment("run-1", status="done")
    with pytest.raises(StoreError, match="naive datetime"):
        store.update_experiment("run-1", started_at=datetime.now())
    assert store.get_dataset("sample").columns == {"prompt": "q", "answer": "a"}
    assert store.get_experiment("run-1").status == "queued"  # failed updates changed nothing


def test_records_carry_utc_datetimes_and_updates(workspace: Path) -> None:
    store = Store()
    created = store.create_experiment("run-1", "c.yaml", parent_name="run-0")
    assert created.created_at.tzinfo == timezone.utc
    started = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    updated = store.update_experiment("run-1", status="running", started_at=started, error=None)
    assert (updated.status, updated.started_at, updated.parent_name) == ("running", started, "run-0")
    assert [e.name for e in store.list_experiments(status="running")] == ["run-1"]
    paris = timezone(timedelta(hours=1))
    ended = store.update_experiment("run-1", finished_at=datetime(2030, 1, 2, 5, 0, tzinfo=paris)).finished_at
    assert ended == datetime(2030, 1, 2, 4, 0, tzinfo=timezone.utc) and ended.tzinfo == timezone.utc
    store.set_setting("theme", {"dark": True})
    assert store.get_setting("theme") == {"dark": True} and store.get_setting("missing", 7) == 7


def test_deleting_an_experiment_deletes_its_jobs_metrics_and_events(workspace: Path) -> None:
    store = Store()
    for name in ("doomed", "kept"):
        store.create_experiment(name, f"{name}.yaml")
        store.enqueue_job(name)
        store.log_metrics(name, [MetricPoint("train/loss", 1, 1.0)])
        store.add_event(name, "info", f"{name} started")
    store.add_event(None, "warning", "studio-wide")

    store.delete_experiment("doomed")

    for table in ("jobs", "metrics", "latest_metrics"):
        assert sql(store.path, f"SELECT count(*) FROM {table}") == [(1,)]
    assert [(e.experiment_name, e.message) for e in store.list_events()] == [
        (None, "studio-wide"), ("kept", "kept started")]
    assert [e.name for e in store.list_experiments()] == ["kept"]


def test_latest_metrics_follow_the_highest_step_and_the_later_insert_on_ties(workspace: Path) -> None:
    store = Store()
    store.create_experiment("run-1", "c.yaml")
    store.log_metrics("run-1", [MetricPoint("train/loss", 5, 0.5), MetricPoint("train/loss", 3, 0.9),
                                MetricPoint("validation/loss", 5, 0.7), MetricPoint("validation/loss", 5, 0.6)])
    store.log_metrics("run-1", [MetricPoint("train/loss", 4, 0.1)])  # late, older step: not the latest
    assert store.latest_metrics("run-1") == {"train/loss": 0.5, "validation/loss": 0.6}
    store.log_metrics("run-1", [MetricPoint("train/loss", 6, float("nan"), epoch=1.5)])  # a diverged run
    latest = store.get_experiment("run-1").latest_metrics
    assert math.isnan(latest["train/loss"]) and store.list_experiments()[0].latest_metrics.keys() == latest.keys()
    assert store.metric_names("run-1") == ["train/loss", "validation/loss"]


def test_dropping_the_steps_after_a_checkpoint_rebuilds_the_latest_values(workspace: Path) -> None:
    store = Store()
    store.create_experiment("run-1", "c.yaml")
    store.log_metrics("run-1", [MetricPoint("train/loss", s, 1.0 / s) for s in range(1, 6)]
                      + [MetricPoint("validation/loss", 4, 0.4)])
    assert store.delete_metrics_after("run-1", 3) == 3
    assert [p.step for p in store.get_metrics("run-1")] == [1, 2, 3]
    assert store.latest_metrics("run-1") == {"train/loss": pytest.approx(1 / 3)}  # validation/loss is gone
    assert store.delete_metrics_after("run-1", 3) == 0


def test_polling_with_the_last_id_returns_only_new_points(workspace: Path) -> None:
    store = Store()
    store.create_experiment("run-1", "c.yaml")
    store.log_metrics("run-1", [MetricPoint("train/loss", s, 1.0 / s, epoch=s / 10) for s in range(1, 4)])
    first = store.get_metrics("run-1")
    assert [p.step for p in first] == [1, 2, 3] and first[0].time is not None and first[2].epoch == 0.3
    store.log_metrics("run-1", [MetricPoint("train/lr", 4, 1e-4), MetricPoint("train/loss", 4, 0.2)])
    new = store.get_metrics("run-1", after_id=first[-1].id)
    assert [(p.name, p.step) for p in new] == [("train/lr", 4), ("train/loss", 4)]
    assert store.get_metrics("run-1", after_id=new[-1].id) == []
    assert [p.step for p in store.get_metrics("run-1", names=["train/loss"], limit=2)] == [1, 2]


def test_long_series_are_downsampled_evenly_keeping_first_and_last(workspace: Path) -> None:
    store = Store()
    store.create_experiment("run-1", "c.yaml")
    # Logged out of step order on purpose: a series is ordered by step, not by insert.
    store.log_metrics("run-1", [MetricPoint("train/loss", s, float(s)) for s in range(1000, 0, -1)])
    store.log_metrics("run-1", [MetricPoint("train/lr", s, 0.1) for s in range(10)])
    assert [p.step for p in store.get_metric_series("run-1", "train/loss")] == list(range(1, 1001))
    steps = [p.step for p in store.get_metric_series("run-1", "train/loss", max_points=100)]
    assert len(steps) == 100 and steps[0] == 1 and steps[-1] == 1000 and steps == sorted(steps)
    assert {b - a for a, b in zip(steps, steps[1:])} <= {10, 11}  # even spacing
    assert len(store.get_metric_series("run-1", "train/lr", max_points=100)) == 10  # short: untouched
    assert [p.step for p in store.get_metric_series("run-1", "train/loss", max_points=2)] == [1, 1000]


def test_only_one_of_two_simultaneous_claims_wins(workspace: Path) -> None:
    Store().create_experiment("run-1", "c.yaml")
    stores = [Store(), Store()]  # two connections pools, as two schedulers would have
    for _ in range(10):
        job = stores[0].enqueue_job("run-1", resources={"cpu_slots": 1})
        barrier, wins = threading.Barrier(2), []

        def claim(store: Store, pid: int) -> None:
            barrier.wait()
            wins.append((pid, store.claim_job(job.id, pid, 123.0, {"cpu_slots": 1})))

        threads = [threading.Thread(target=claim, args=(s, 100 + i)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won for _, won in wins) == [False, True]
        claimed = stores[1].get_job(job.id)
        assert claimed.status == "running" and claimed.pid == next(p for p, won in wins if won)
        assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert stores[0].claim_job(999, 1, None, {}) is False


def test_queue_order_moves_and_heartbeats(workspace: Path) -> None:
    store = Store()
    for name in "abcde":
        store.create_experiment(name, f"{name}.yaml")
    jobs = {name: store.enqueue_job(name) for name in "abcd"}
    urgent = store.enqueue_job("e", priority=5)
    assert [j.experiment_name for j in store.list_jobs(status="queued")] == ["e", "a", "b", "c", "d"]

    store.move_job(jobs["d"].id, 1)
    store.move_job(jobs["a"].id, 3)
    assert [j.experiment_name for j in store.list_jobs(status=("queued",))] == ["e", "d", "b", "a", "c"]
    store.move_job(jobs["d"].id, 99)  # past the end: last
    assert [j.experiment_name for j in store.list_jobs(kind="train")] == ["e", "b", "a", "c", "d"]
    assert store.get_job(urgent.id).position == urgent.position  # other priorities untouched

    assert store.claim_job(jobs["b"].id, 4242, 1.0, {"cpu_slots": 1})
    with pytest.raises(StoreError, match="only queued jobs can be moved"):
        store.move_job(jobs["b"].id, 1)
    assert store.active_job("b").id == jobs["b"].id and store.active_job("b", kind="export") is None
    assert store.heartbeat(jobs["b"].id, progress=0.25, step=5, total_steps=20, eta_s=60.0) == "running"
    store.update_job(jobs["b"].id, status="stopping")
    assert store.heartbeat(jobs["b"].id, step=6) == "stopping"  # the worker sees the stop request
    run = store.get_experiment("b")
    assert (run.progress, run.step, run.total_steps, run.eta_s) == (0.25, 6, 20, 60.0)
    done = store.update_job(jobs["b"].id, status="finished", exit_code=0, finished_at=datetime.now(timezone.utc))
    assert done.exit_code == 0 and store.active_job("b") is None
    assert [j.id for j in store.list_jobs(experiment_name="b")] == [jobs["b"].id]
    with pytest.raises(StoreError, match="unknown job field"):
        store.update_job(done.id, colour="red")


def test_a_forked_child_opens_its_own_connections(workspace: Path) -> None:
    store = Store()
    store.create_experiment("run-1", "c.yaml")
    pid = os.fork()
    if pid == 0:  # the child: write through the inherited Store, then leave without pytest's cleanup
        try:
            store.add_event("run-1", "info", "from the child")
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0
    store.add_event("run-1", "info", "from the parent")
    assert [e.message for e in store.list_events("run-1")] == ["from the parent", "from the child"]


WRITER = """
import sys, time
from pathlib import Path
from llm_studio.store import MetricPoint, Store
import alembic.command, alembic.script, alembic.runtime.migration  # loaded now, so the opens below collide
i, batches, per, sync = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
(sync / f"ready-{i}").touch()
while not (sync / "go").exists():
    time.sleep(0.002)
store = Store()  # errors are NOT caught: a 'database is locked' fails the test
name = f"writer-{i}"
if sys.argv[5] == "race":
    store.create_experiment(name, "c.yaml")
    sys.exit(0)
store.create_experiment(name, "c.yaml", status="running")
job = store.enqueue_job(name)
assert store.claim_job(job.id, 1000 + i, 1.0, {"cpu_slots": 1})
for b in range(batches):
    points = [MetricPoint("train/loss", b * per + j, float(b * per + j)) for j in range(per)]
    store.log_metrics(name, points + [MetricPoint("train/lr", b, 0.1)])
    store.add_event(name, "info", f"batch {b}")
    store.heartbeat(job.id, progress=(b + 1) / batches, step=(b + 1) * per)
"""

POLLER = """
import json, sys, time
from pathlib import Path
from llm_studio.store import Store
sync, store = Path(sys.argv[1]), Store()
cursors, seen, polls = {}, {}, 0
while True:
    done = (sync / "done").exists()  # look before polling: the last pass then sees every write
    for experiment in store.list_experiments():
        points = store.get_metrics(experiment.name, after_id=cursors.get(experiment.name, 0))
        ids = [p.id for p in points]
        assert ids == sorted(ids), "points out of id order"
        seen.setdefault(experiment.name, []).extend(ids)
        if ids:
            cursors[experiment.name] = ids[-1]
    store.list_events(limit=20)
    polls += 1
    time.sleep(0.005)  # a UI polls about once a second; this one is only a lot keener
    if done:
        break
print(json.dumps({"polls": polls, "seen": seen}))
"""


def run_processes(scripts: list[list[str]], sync: Path, home: Path) -> list[subprocess.CompletedProcess]:
    """Start the processes, release them together once all are ready, wait for the writers, then the poller."""
    env = dict(os.environ, LLM_STUDIO_HOME=str(home))
    procs = [subprocess.Popen([sys.executable, "-c", *s], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in scripts]
    writers = [p for p, s in zip(procs, scripts) if s[0] == WRITER]
    deadline = time.time() + 60
    while len(list(sync.glob("ready-*"))) < len(writers) and time.time() < deadline:
        time.sleep(0.01)
    (sync / "go").touch()
    results = [(p, p.communicate(timeout=120)) for p in writers]
    (sync / "done").touch()
    results += [(p, p.communicate(timeout=120)) for p in procs if p not in writers]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in results]


def test_four_writers_and_a_poller_share_the_file_without_locks_or_losses(workspace: Path, tmp_path: Path) -> None:
    batches, per = 50, 20
    store = Store()  # the database exists before the workers start, as in the studio
    sync = tmp_path / "sync"
    sync.mkdir()
    writers = [[WRITER, str(i), str(batches), str(per), str(sync), "write"] for i in range(4)]
    results = run_processes(writers + [[POLLER, str(sync)]], sync, workspace)

    for r in results:
        assert r.returncode == 0, r.stderr
        assert "locked" not in r.stderr.lower()
    poll = json.loads(results[-1].stdout)
    assert poll["polls"] > 1
    for i in range(4):
        name = f"writer-{i}"
        points = store.get_metrics(name)
        assert len(points) == batches * (per + 1)
        assert sorted((p.name, p.step) for p in points) == sorted(
            [("train/loss", s) for s in range(batches * per)] + [("train/lr", b) for b in range(batches)])
        assert sorted(poll["seen"][name]) == [p.id for p in points]  # the poller saw each exactly once
        assert len(store.list_events(name, limit=None)) == batches
        run = store.get_experiment(name)
        assert run.latest_metrics == {"train/loss": float(batches * per - 1), "train/lr": 0.1}
        assert (run.progress, run.step) == (1.0, batches * per)


def test_four_processes_opening_a_new_database_at_once_all_succeed(workspace: Path, tmp_path: Path) -> None:
    sync = tmp_path / "sync"
    sync.mkdir()
    results = run_processes([[WRITER, str(i), "0", "0", str(sync), "race"] for i in range(4)], sync, workspace)
    for r in results:
        assert r.returncode == 0, r.stderr
    db = workspace / "llm_studio.db"
    assert sql(db, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert sorted(e.name for e in Store().list_experiments()) == [f"writer-{i}" for i in range(4)]
    assert not list(workspace.glob("*.bak-*"))
