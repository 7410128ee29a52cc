"""The Reporter: where a run's metrics, log lines and heartbeats go.

- store: metric points are buffered and written in one transaction every few seconds, at each
  evaluation and at the end (never one SQL statement per step); events (started, evaluated, stopped,
  failed...) are written as they happen; every few seconds the experiment row gets progress/step/ETA and,
  when the runner started us (env LLM_STUDIO_JOB_ID), the job gets a heartbeat.
- train.log and stdout: the same log lines (stdout so a foreground `llm-studio train` shows them).
- the terminal: when stdout is a TTY, a one-line progress bar with ETA under the log lines.
- Neptune: when `logging.neptune_project` is set. The token comes from NEPTUNE_API_TOKEN and is never
  written anywhere; 'offline' and 'debug' modes need none.

A write to the store or Neptune that fails is logged as a warning and retried at the next flush: a
busy database never kills a training run.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from llm_studio.config.io import flatten
from llm_studio.store.records import MetricPoint

log = logging.getLogger("llm_studio.tracking")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
MAX_BUFFERED_POINTS = 200_000


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressLine:
    """A small tqdm-like line: `train  37%|#######      | 45/120 [00:12<00:20, 3.7 step/s] loss 1.23`.

    Drawn in place (carriage return) only on a TTY; elsewhere it stays silent because the log lines
    already carry the same numbers.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, width: int = 24):
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.visible = False

    def render(self, step: int, total: int, elapsed_s: float, eta_s: float | None, rate: float | None,
               postfix: str = "") -> str:
        frac = min(1.0, step / total) if total else 0.0
        filled = int(frac * self.width)
        bar = "#" * filled + " " * (self.width - filled)
        rate_s = f"{rate:.2f} step/s" if rate else "? step/s"
        return (f"train {frac:4.0%}|{bar}| {step}/{total} [{format_duration(elapsed_s)}<{format_duration(eta_s)}, "
                f"{rate_s}]{(' ' + postfix) if postfix else ''}")

    def update(self, *args: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        self.stream.write("\r" + self.render(*args, **kwargs) + "\x1b[K")
        self.stream.flush()
        self.visible = True

    def clear(self) -> None:
        if self.enabled and self.visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.visible = False


class _StdoutHandler(logging.StreamHandler):
    """Log lines to stdout that first erase the progress line (which the next update redraws)."""

    def __init__(self, progress: ProgressLine):
        super().__init__(sys.stdout)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.clear()
        super().emit(record)


def _stdout_is(path: Path) -> bool:
    """True if stdout is the file at `path` (same device and inode)."""
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(path))
    except (OSError, ValueError, AttributeError):
        return False


def neptune_problems(cfg: Any) -> list[tuple[str, str]]:
    """(field, reason) for a Neptune setup that cannot work; checked before any work."""
    lg = cfg.logging
    if not lg.neptune_project:
        return []
    import importlib.util

    if importlib.util.find_spec("neptune") is None:
        return [("logging.neptune_project", "the neptune package is not installed")]
    if lg.neptune_mode in ("async", "sync") and not os.environ.get("NEPTUNE_API_TOKEN"):
        return [("logging.neptune_project", "set NEPTUNE_API_TOKEN (or the token on the Settings page), "
                 "or use logging.neptune_mode offline")]
    return []


def _neptune_value(value: Any) -> Any:
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return str(list(value))
    return value


class NeptuneSink:
    """A Neptune run mirroring the metrics; parameters are the flattened config."""

    def __init__(self, project: str, mode: str, name: str, params: dict[str, Any]):
        import neptune

        self.run = neptune.init_run(project=project, mode=mode, name=name,
                                    api_token=os.environ.get("NEPTUNE_API_TOKEN"),  # never logged
                                    capture_hardware_metrics=False, capture_stdout=False, capture_stderr=False,
                                    capture_traceback=False, source_files=[], git_ref=False)
        self.run["parameters"] = {k: _neptune_value(v) for k, v in params.items()}

    def log(self, points: list[MetricPoint]) -> None:
        for p in points:
            self.run[p.name].append(p.value, step=p.step)

    def close(self, status: str) -> None:
        self.run["status"] = status
        self.run.stop()


class Reporter:
    """Fans a run's metrics, logs and heartbeats out; only the main process should have `enabled=True`."""

    def __init__(self, name: str, log_file: Path | None = None, *, store: Any = None, job_id: int | str | None = None,
                 neptune: NeptuneSink | None = None, enabled: bool = True, stdout: bool = True,
                 flush_every_s: float = 1.0, heartbeat_every_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.store = store if enabled else None
        self.job_id = int(job_id) if job_id not in (None, "") else None
        self.neptune = neptune if enabled else None
        self.enabled = enabled
        self.flush_every_s = flush_every_s
        self.heartbeat_every_s = heartbeat_every_s
        self.clock = clock
        self.latest: dict[str, float] = {}
        self._buffer: list[MetricPoint] = []
        self._neptune_buffer: list[MetricPoint] = []
        self._last_flush = clock()
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {}
        self._beat_thread: threading.Thread | None = None
        self._beat_stop = threading.Event()
        self._on_stop_request: Callable[[], None] | None = None
        self.progress_line = ProgressLine(enabled=None if (enabled and stdout) else False)
        self._handlers: list[logging.Handler] = []
        self._logger = logging.getLogger("llm_studio")
        self._saved_logger_state = (self._logger.level, self._logger.propagate)
        if enabled:
            fmt = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
            if log_file is not None and not (stdout and _stdout_is(log_file)):
                # (a worker spawned by the runner already has its stdout appended to train.log)
                Path(log_file).parent.mkdir(parents=True, exist_ok=True)
                fh = logging.FileHandler(log_file, encoding="utf-8")
                fh.setFormatter(fmt)
                self._handlers.append(fh)
            if stdout:
                sh = _StdoutHandler(self.progress_line)
                sh.setFormatter(fmt)
                self._handlers.append(sh)
            for h in self._handlers:
                self._logger.addHandler(h)
            # the run's own handlers show llm_studio.* records; do not print them twice via the root logger
            self._logger.setLevel(logging.INFO)
            self._logger.propagate = False

    # --- log lines and events ---------------------------------------------------------------------

    def info(self, message: str, *, event: bool = False) -> None:
        self._emit(logging.INFO, message, event)

    def warning(self, message: str, *, event: bool = True) -> None:
        self._emit(logging.WARNING, message, event)

    def error(self, message: str, *, event: bool = True, exc_info: bool = False) -> None:
        self._emit(logging.ERROR, message, event, exc_info=exc_info)

    def _emit(self, level: int, message: str, event: bool, exc_info: bool = False) -> None:
        if not self.enabled:
            return
        logging.getLogger("llm_studio.run").log(level, message, exc_info=exc_info)
        if event and self.store is not None:
            try:
                self.store.add_event(self.name, logging.getLevelName(level).lower(), message)
            except Exception as e:  # noqa: BLE001 - an event is not worth a failed run
                log.warning("could not record event: %s", e)

    # --- metrics ----------------------------------------------------------------------------------

    def metrics(self, step: int, values: dict[str, float], epoch: float | None = None) -> None:
        """Buffer one point per metric; written at the next flush (time-based, eval, end)."""
        if not self.enabled:
            return
        now = time.time()
        for key, value in values.items():
            value = float(value)
            self.latest[key] = value
            point = MetricPoint(name=key, step=step, value=value, epoch=epoch, time=now)
            self._buffer.append(point)
            if self.neptune is not None:
                self._neptune_buffer.append(point)
        if len(self._buffer) > MAX_BUFFERED_POINTS:  # store unreachable for a long time: keep the newest
            del self._buffer[: len(self._buffer) - MAX_BUFFERED_POINTS]
        if self.clock() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if not self.enabled:
            return
        self._last_flush = self.clock()
        if self._buffer and self.store is not None:
            try:
                self.store.log_metrics(self.name, list(self._buffer))
                self._buffer.clear()
            except Exception as e:  # noqa: BLE001 - retried at the next flush
                log.warning("could not write %d metric points to the store (will retry): %s", len(self._buffer), e)
        elif self.store is None:
            self._buffer.clear()
        if self._neptune_buffer and self.neptune is not None:
            try:
                self.neptune.log(self._neptune_buffer)
            except Exception as e:  # noqa: BLE001
                log.warning("Neptune logging failed, turning it off for this run: %s", e)
                self.neptune = None
            self._neptune_buffer.clear()

    # --- progress and heartbeats ------------------------------------------------------------------

    def progress(self, step: int, total_steps: int, *, elapsed_s: float, eta_s: float | None,
                 rate: float | None = None, postfix: str = "") -> None:
        """Redraw the terminal line and hand the numbers to the heartbeat thread (no SQL here)."""
        if not self.enabled:
            return
        self.progress_line.update(step, total_steps, elapsed_s, eta_s, rate, postfix)
        fraction = min(1.0, step / total_steps) if total_steps else 0.0
        with self._lock:
            self._progress = {"progress": fraction, "step": step, "total_steps": total_steps,
                              "eta_s": None if eta_s is None else float(eta_s)}

    def start_heartbeat(self, on_stop_request: Callable[[], None] | None = None) -> None:
        """Beat every `heartbeat_every_s` from a daemon thread, also through setup and long evaluations.

        Each beat writes the latest progress to the experiment row and, under the runner, the job's
        heartbeat; a job the runner marked `stopping` calls `on_stop_request` (in case SIGTERM was lost).
        """
        if not self.enabled or self.store is None or self._beat_thread is not None:
            return
        self._on_stop_request = on_stop_request
        self._beat_thread = threading.Thread(target=self._beat_loop, name="llm-studio-heartbeat", daemon=True)
        self._beat_thread.start()

    def _beat_loop(self) -> None:
        while not self._beat_stop.is_set():
            self.beat()
            self._beat_stop.wait(self.heartbeat_every_s)

    def beat(self) -> None:
        """One heartbeat now (the thread calls this; tests may too)."""
        if self.store is None:
            return
        with self._lock:
            fields = dict(self._progress)
        try:
            if self.job_id is not None:
                status = self.store.heartbeat(self.job_id, **fields)  # also writes the experiment's progress
                if status in ("stopping", "cancelled") and self._on_stop_request is not None:
                    self._on_stop_request()
            elif fields:
                self.store.update_experiment(self.name, **fields)
        except Exception as e:  # noqa: BLE001 - the next beat tries again
            log.warning("could not write the heartbeat: %s", e)

    def stop_heartbeat(self) -> None:
        if self._beat_thread is not None:
            self._beat_stop.set()
            self._beat_thread.join(timeout=10)
            self._beat_thread = None
            self.beat()  # the final numbers

    def set_status(self, status: str, **fields: Any) -> None:
        if self.store is None:
            return
        self.store.update_experiment(self.name, status=status, **fields)

    def close(self, status: str | None = None) -> None:
        """Flush everything, close Neptune, detach the log handlers."""
        if not self.enabled:
            return
        self.progress_line.clear()
        self.stop_heartbeat()
        self.flush()
        if self.neptune is not None:
            try:
                self.neptune.close(status or "closed")
            except Exception as e:  # noqa: BLE001
                log.warning("could not close the Neptune run: %s", e)
            self.neptune = None
        for h in self._handlers:
            self._logger.removeHandler(h)
            h.close()
        self._handlers.clear()
        self._logger.setLevel(self._saved_logger_state[0])
        self._logger.propagate = self._saved_logger_state[1]

    @staticmethod
    def flat_params(config: dict[str, Any]) -> dict[str, Any]:
        return flatten(config, sep="/")
