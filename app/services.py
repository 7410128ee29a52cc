"""Everything the pages read or change, as plain blocking functions: pages call them with `await q.run(fn, ...)`.

Keeping every disk and database access here makes "nothing blocking in a handler" easy to check, and lets
the functions be tested without a browser. This module talks to `llm_studio` only (store, runner, data,
config, settings); it never imports model code, so the UI process stays small.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from llm_studio import paths, settings
from llm_studio.config import ConfigError, ExperimentConfig, config_diff, config_from_dict, config_from_yaml
from llm_studio.config import config_to_yaml, flatten, ui_fields
from llm_studio.errors import LLMStudioError, NotFoundError
from llm_studio.runner import manager
from llm_studio.store import MetricPoint, Store

REPO = Path(__file__).resolve().parents[1]
PRESETS_DIR = REPO / "experiments"
ACTIVE = ("queued", "running", "stopping")
TERMINAL = ("stopped", "finished", "failed", "interrupted")

_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def store() -> Store:
    """One Store per workspace for the whole UI process (a Store may be shared by threads)."""
    db = paths.db_path()
    with _stores_lock:
        if db not in _stores:
            _stores[db] = Store(db)
        return _stores[db]


def now() -> datetime:
    return datetime.now(timezone.utc)


def ago(t: datetime | None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago' (empty for None)."""
    if t is None:
        return ""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    s = max(0.0, (now() - t).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return f"{int(s)} s ago"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def fmt(value: Any) -> str:
    """A metric value for tables: 4 significant digits, '' for missing / NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- home ----------------------------------------------------------------------------------------

def workspace_overview() -> dict[str, Any]:
    s = store()
    views = manager.list_experiments(store=s)
    datasets = s.list_datasets()
    queue = {j.experiment_name: i + 1 for i, j in enumerate(s.list_jobs(status="queued", kind="train"))}
    return {
        "datasets": len(datasets),
        "experiments": len(views),
        "status_counts": {st: sum(v.status == st for v in views) for st in (*ACTIVE, *TERMINAL, "broken")},
        "active": [experiment_row(v, queue) for v in views if v.status in ACTIVE],
        "recent": [experiment_row(v, queue) for v in views[:6]],
        "events": [{"time": ago(e.time), "level": e.level, "experiment": e.experiment_name or "",
                    "message": e.message} for e in s.list_events(limit=8)],
    }


def system_stats() -> dict[str, Any]:
    """CPU, memory and disk (psutil) and GPUs (nvidia-smi, when present): never imports CUDA."""
    mem = psutil.virtual_memory()
    home = paths.home()
    disk_path = home if home.exists() else Path.cwd()
    disk = psutil.disk_usage(str(disk_path))
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count() or 1,
        "memory_used_gb": (mem.total - mem.available) / 1e9,
        "memory_total_gb": mem.total / 1e9,
        "memory_percent": mem.percent,
        "disk_free_gb": disk.free / 1e9,
        "disk_total_gb": disk.total / 1e9,
        "disk_percent": disk.percent,
        "gpus": gpu_stats(),
    }


def gpu_stats() -> list[dict[str, Any]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,utilization.gpu,memory.used,memory.total",
             "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            gpus.append({"index": int(parts[0]), "name": parts[1], "util_percent": float(parts[2]),
                         "memory_used_gb": float(parts[3]) / 1024, "memory_total_gb": float(parts[4]) / 1024})
        except ValueError:
            continue
    return gpus


def start_sample() -> str:
    """Register the shipped sample dataset (idempotent); returns its name."""
    from llm_studio.data import ensure_sample_dataset

    return ensure_sample_dataset(store=store()).name


# --- experiments -----------------------------------------------------------------------------------

def experiment_row(view: manager.ExperimentView, queue: dict[str, int] | None = None) -> dict[str, Any]:
    d = manager.as_dict(view)
    m = d["metrics"] or {}
    total = d["total_steps"] or 0
    return {
        "name": d["name"], "status": d["status"], "dataset": d["dataset"] or "",
        "progress": float(d["progress"] or 0.0) if d["status"] != "finished" else 1.0,
        "step": d["step"] or 0, "total_steps": total,
        "steps": f"{d['step'] or 0} / {total}" if total else str(d["step"] or 0),
        "eta": duration(d["eta_s"]) if d["status"] == "running" else "",
        "train_loss": fmt(m.get("train/loss")), "val_loss": fmt(m.get("validation/loss")),
        "exact_match": fmt(m.get("validation/exact_match")),
        "created": d["created_at"].astimezone().strftime("%m-%d %H:%M") if d["created_at"] else "",
        "created_ago": ago(d["created_at"]), "ended_ago": ago(d["finished_at"]),
        "queue": str(queue.get(d["name"], "")) if queue else "",
        "error": d["error"] or d["broken_reason"] or "", "parent": d["parent"] or "",
    }


def experiment_rows() -> list[dict[str, Any]]:
    s = store()
    queue = {j.experiment_name: i + 1 for i, j in enumerate(s.list_jobs(status="queued", kind="train"))}
    return [experiment_row(v, queue) for v in manager.list_experiments(store=s)]


def experiment_names() -> list[str]:
    return [r.name for r in store().list_experiments()]


def experiment_info(name: str) -> dict[str, Any]:
    s = store()
    view = manager.show(name, store=s)
    queue = {j.experiment_name: i + 1 for i, j in enumerate(s.list_jobs(status="queued", kind="train"))}
    row = experiment_row(view, queue)
    row["summary"] = view.summary
    row["folder"] = str(Path(view.record.config_path).parent)
    row["fingerprint"] = (row["status"], row["step"], row["total_steps"], row["eta"], row["error"], row["queue"])
    return row


def stop_experiment(name: str) -> str:
    return manager.stop(name, store=store()).status


def resume_experiment(name: str) -> str:
    return manager.resume(name, store=store()).status


def delete_experiment(name: str) -> None:
    manager.delete(name, store=store(), force=True, wait_s=5.0)


def move_experiment(name: str, delta: int | None = None, position: int | None = None) -> None:
    """Move a queued experiment up (delta=-1), down (delta=1) or to `position` (1-based)."""
    s = store()
    if position is None:
        queued = [j.experiment_name for j in s.list_jobs(status="queued", kind="train")]
        if name not in queued:
            raise LLMStudioError(f"cannot move experiment '{name}': it is not queued")
        position = max(1, queued.index(name) + 1 + (delta or 0))
    manager.move(name, position, store=s)


def experiment_logs(name: str, lines: int = 300, max_bytes: int = 256 * 1024) -> str:
    """The last `lines` lines of train.log, reading at most the file's last `max_bytes` (polled every second)."""
    path = Path(store().get_experiment(name).config_path).parent / "train.log"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]  # drop the partial first line
    return "\n".join(text.rstrip().splitlines()[-lines:])


def saved_config_yaml(name: str) -> str:
    try:
        return manager.config_yaml(name, store=store())
    except OSError as e:
        raise LLMStudioError(f"the saved config of experiment '{name}' cannot be read: {e.strerror or e}") from None


def saved_config(name: str) -> ExperimentConfig:
    return config_from_yaml(saved_config_yaml(name), source=f"experiment {name}")


def predictions(name: str, limit: int = 200) -> dict[str, Any]:
    """The run's validation predictions (predictions.parquet): columns and the first `limit` rows."""
    folder = Path(store().get_experiment(name).config_path).parent
    path = folder / "predictions.parquet"
    if not path.exists():
        return {"columns": [], "rows": [], "total": 0}
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    rows = table.slice(0, limit).to_pylist()
    return {"columns": table.column_names, "rows": rows, "total": table.num_rows}


# --- charts --------------------------------------------------------------------------------------

def metric_history(name: str, metrics: list[str], max_points: int = 1000) -> tuple[dict[str, list[MetricPoint]], int]:
    """Each metric's downsampled series and the cursor from which live polling continues.

    The series are read one after another, train/loss first (the most frequent metric). Any point written
    after its own series was read has an id larger than every id that existed when train/loss was read,
    so polling from train/loss's last id misses nothing; points already shown are skipped by id.
    """
    s = store()
    order = sorted(metrics, key=lambda m: m != "train/loss")
    series = {m: s.get_metric_series(name, m, max_points=max_points) for m in order}
    first = series[order[0]] if order else []
    cursor = max((p.id or 0 for p in first), default=0)
    return series, cursor


def poll_experiment(name: str, metrics: list[str], cursor: int, with_logs: bool) -> dict[str, Any]:
    """One live tick: the experiment's state, new metric points after `cursor`, and the log tail."""
    s = store()
    info = experiment_info(name)
    points = s.get_metrics(name, names=metrics, after_id=cursor, limit=5000) if metrics else []
    logs = experiment_logs(name) if with_logs else None
    return {"info": info, "points": points, "logs": logs}


def compare_data(names: list[str], max_points: int = 400) -> dict[str, Any]:
    s = store()
    series: dict[str, dict[str, list[MetricPoint]]] = {}
    latest: dict[str, dict[str, float]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for n in names:
        latest[n] = s.latest_metrics(n)
        series[n] = {m: s.get_metric_series(n, m, max_points=max_points) for m in s.metric_names(n)}
        configs[n] = flatten(saved_config(n).model_dump(mode="json"))
    return {"series": series, "latest": latest, "configs": configs}


def compare_configs(names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: flatten(saved_config(n).model_dump(mode="json")) for n in names}


# --- new experiment form -------------------------------------------------------------------------

def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(preset: str) -> Path:
    path = PRESETS_DIR / f"{paths.check_name(preset, 'preset')}.yaml"
    if not path.is_file():
        raise NotFoundError(f"preset {preset!r} not found in {PRESETS_DIR}")
    return path


def preset_config(preset: str) -> ExperimentConfig:
    return config_from_yaml(preset_path(preset).read_text(encoding="utf-8"), source=f"experiments/{preset}.yaml")


def dataset_names() -> list[str]:
    from llm_studio.data import SAMPLE_NAME

    names = [d.name for d in store().list_datasets()]
    return names if SAMPLE_NAME in names else [*names, SAMPLE_NAME]


def form_fields() -> list[dict[str, Any]]:
    return ui_fields()


def build_config(values: dict[str, Any]) -> ExperimentConfig:
    """A validated config from {dotted path: value}; ConfigError lists every bad field."""
    data: dict[str, Any] = {}
    for path, value in values.items():
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_from_dict(data, source="the form")


def config_values(cfg: ExperimentConfig) -> dict[str, Any]:
    return flatten(cfg.model_dump(mode="json"))


def cli_command(preset: str | None, cfg: ExperimentConfig, name: str) -> str:
    """The CLI line that queues the same experiment: the preset plus --set for every changed field."""
    base = preset_config(preset) if preset else ExperimentConfig()
    parts = [f"llm-studio experiments start experiments/{preset}.yaml" if preset else
             "llm-studio experiments start config.yaml"]
    if name:
        parts.append(f"--name {name}")
    for path, (_, new) in config_diff(base, cfg).items():
        value = config_to_yaml_value(new)
        parts.append(f"--set {path}={value}" if " " not in value else f"--set '{path}={value}'")
    return " \\\n  ".join(parts)


def config_to_yaml_value(value: Any) -> str:
    import yaml

    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def start_experiment(cfg: ExperimentConfig, name: str, parent: str | None = None) -> str:
    return manager.create_and_queue(cfg, name, store=store(), parent_name=parent).name


def default_experiment_name(stem: str) -> str:
    return paths.default_experiment_name(f"{stem}.yaml")


# --- datasets ------------------------------------------------------------------------------------

def dataset_rows() -> list[dict[str, Any]]:
    return [{"name": d.name, "format": d.format, "train": d.n_train, "validation": d.n_valid,
             "created": d.created_at.strftime("%Y-%m-%d %H:%M") if d.created_at else ""}
            for d in store().list_datasets()]


def upload_dir() -> Path:
    """Uploads wait here (outside the workspace) until they are imported or abandoned."""
    return Path(tempfile.mkdtemp(prefix="llm-studio-upload-"))


def preview_file(path: str, mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    from llm_studio.data import preview_file as preview

    return preview(path, n=5, mapping=mapping)


def import_dataset(path: str, name: str, mapping: dict[str, Any] | None, validation_fraction: float) -> str:
    from llm_studio.data import import_dataset as run_import

    return run_import(path, name, mapping=mapping, validation_fraction=validation_fraction, store=store()).name


def dataset_details(name: str) -> dict[str, Any]:
    from llm_studio.data import dataset_dir, read_split

    rec = store().get_dataset(name)
    info: dict[str, Any] = {}
    yaml_path = dataset_dir(name) / "dataset.yaml"
    if yaml_path.exists():
        import yaml

        info = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    return {"name": rec.name, "format": rec.format, "mapping": rec.columns, "n_train": rec.n_train,
            "n_valid": rec.n_valid, "created": rec.created_at.strftime("%Y-%m-%d %H:%M") if rec.created_at else "",
            "stats": rec.stats or info.get("statistics", {}), "source": info.get("source", {}),
            "preview": read_split(name, "train")[:5],
            "used_by": [e.name for e in store().list_experiments() if e.dataset_name == name]}


def delete_dataset(name: str) -> None:
    from llm_studio.data import delete_dataset as remove

    remove(name, store=store())


# --- settings ------------------------------------------------------------------------------------

def settings_state() -> dict[str, Any]:
    values = settings.all_values(store())
    secrets = {key: {"masked": settings.masked(settings.get_secret(key)), "source": settings.secret_source(key)}
               for key in settings.SECRETS}
    return {"values": values, "secrets": secrets, "presets": presets()}


def save_settings(values: dict[str, Any], secrets: dict[str, str | None]) -> None:
    """Check everything first, then save: a bad value saves nothing."""
    checked = {key: settings.check_value(key, value) for key, value in values.items()}
    if checked.get("default_preset") and checked["default_preset"] not in presets():
        raise LLMStudioError(f"preset {checked['default_preset']!r} not found in {PRESETS_DIR}")
    for key, value in checked.items():
        settings.set_value(key, value, store())
    for key, value in secrets.items():
        settings.set_secret(key, value)


def settings_value(key: str) -> Any:
    return settings.get_value(key, store())


def theme() -> str:
    return settings.get_value("theme", store())


__all__ = ["ConfigError", "config_to_yaml"]
