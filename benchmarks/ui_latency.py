#!/usr/bin/env python
"""UI latency of the studio, measured in real Chromium against a real Wave server and a real training run.

1. live: a tiny training run logs a loss per step. For every point, the time from its insert in the store
   (seen by a 10 ms poller in this process) to the websocket frame that appends it to the experiment page's
   loss chart in the browser; also from the step's own timestamp (the worker batches its writes every
   second) to the browser. Median and p95 over >= --points points; goal: insert -> browser <= 2 s median.
2. pages: with --experiments finished experiments and --metric-points points in the store (a realistic mix
   of train metrics), the time from a navigation in an open studio (hash change) until the page is drawn:
   the experiments table, the compare page of two experiments, one experiment's charts. Goal < 1 s each.

    .venv/bin/python benchmarks/ui_latency.py                       # the full measurement (~3-5 min)
    .venv/bin/python benchmarks/ui_latency.py --points 10 --experiments 5 --metric-points 20000   # smoke

Runs in a temporary LLM_STUDIO_HOME; needs Chromium at /usr/bin/chromium (`make browser`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the studio + browser harness the UI tests use

from ui_helpers import Studio, WaveFrames, launch_browser  # noqa: E402

TINY = REPO / "experiments" / "tiny-sft.yaml"
LIVE = "live"
LONG_RUN = ["training.max_steps=100000", "training.log_every=1", "training.eval_every=100000",
            "training.save_every=100000", "evaluation.num_predictions=0", "environment.num_threads=1"]
SEED_METRICS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/pad_fraction")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class InsertPoller(threading.Thread):
    """First time each train/loss point is visible in the store (10 ms polls), and its step timestamp."""

    def __init__(self, name: str):
        super().__init__(daemon=True)
        self.name_ = name
        self.inserted: dict[tuple[str, int], tuple[float, float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        from llm_studio.store import Store

        store, cursor = Store(), 0
        while not self.done.is_set():
            try:
                points = store.get_metrics(self.name_, names=["train/loss"], after_id=cursor)
            except Exception:  # noqa: BLE001 - the experiment row may not exist yet
                points = []
            now = time.time()
            for p in points:
                self.inserted.setdefault(("train", p.step), (now, p.time or now))
                cursor = max(cursor, p.id or 0)
            time.sleep(0.01)


def measure_live(studio: Studio, browser: Any, n_points: int, timeout_s: float) -> dict[str, Any]:
    from llm_studio.runner import manager

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    frames = WaveFrames(page)
    poller = InsertPoller(LIVE)
    poller.start()
    manager.start(TINY, LIVE, LONG_RUN)
    page.goto(f"{studio.url}/#experiment/{LIVE}")
    page.wait_for_selector("[data-test=exp_progress]")
    deadline = time.monotonic() + timeout_s
    matched: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        page.wait_for_timeout(50)  # lets Playwright dispatch the websocket events
        arrivals = frames.append_arrivals("chart_loss")
        matched = [(arrivals[k] - ins, arrivals[k] - logged)
                   for k, (ins, logged) in poller.inserted.items() if k in arrivals]
        if len(matched) >= n_points:
            break
    poller.done.set()
    manager.stop(LIVE, wait_s=120)
    page.close()
    if len(matched) < n_points:
        raise SystemExit(f"only {len(matched)} of {n_points} points reached the browser in {timeout_s:.0f} s")
    insert_to_browser = [m[0] for m in matched]
    step_to_browser = [m[1] for m in matched]
    return {"points": len(matched),
            "insert_to_browser_median_s": statistics.median(insert_to_browser),
            "insert_to_browser_p95_s": percentile(insert_to_browser, 0.95),
            "step_to_browser_median_s": statistics.median(step_to_browser),
            "step_to_browser_p95_s": percentile(step_to_browser, 0.95)}


def seed_store(home: Path, n_experiments: int, n_points: int) -> list[str]:
    """Finished experiments with a valid config each and `n_points` metric points spread over them."""
    from llm_studio.config import load_config, save_config
    from llm_studio.store import MetricPoint, Store

    store = Store()
    config = home / "experiments" / LIVE / "config.yaml"
    per_experiment = max(1, n_points // n_experiments)
    steps = max(1, per_experiment // len(SEED_METRICS))
    names = []
    for i in range(n_experiments):
        name = f"bench-{i:03d}"
        folder = home / "experiments" / name
        folder.mkdir(parents=True, exist_ok=True)
        # configs that differ as a sweep's do, so the compare page has a diff to draw
        save_config(load_config(config, [f"training.learning_rate={0.0005 * (i + 1):g}"]), folder / "config.yaml")
        store.create_experiment(name, str(folder / "config.yaml"), dataset_name="sample-qa", status="finished")
        points = [MetricPoint(m, s, (3.0 + k) / (1 + s * 0.01 * (1 + i % 7)))
                  for s in range(1, steps + 1) for k, m in enumerate(SEED_METRICS)]
        store.log_metrics(name, points)
        names.append(name)
    return names


def time_navigation(page: Any, target: str, ready_js: str, repeats: int) -> dict[str, float]:
    """From a hash change (the studio already open on Home) until `ready_js` is true in the page."""
    times = []
    for _ in range(repeats):
        page.evaluate("() => { location.hash = '#home' }")
        page.wait_for_selector("[data-test=home_workspace]")
        page.wait_for_timeout(300)
        t0 = time.perf_counter()
        page.evaluate(f"() => {{ location.hash = '{target}' }}")
        try:
            page.wait_for_function(ready_js, timeout=60_000, polling="raf")
        except Exception as e:  # say what the page showed instead
            raise SystemExit(f"{target} was not drawn within 60 s ({e.__class__.__name__}); the page showed:\n"
                             + page.inner_text("body")[:1500]) from None
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "max_s": max(times), "repeats": repeats}


def measure_pages(studio: Studio, browser: Any, names: list[str], repeats: int) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(f"{studio.url}/#home")
    page.wait_for_selector("[data-test=home_workspace]")
    newest, a, b = names[-1], names[0], names[1 % len(names)]
    table = f"() => (document.querySelector('[data-test=exp_table]')?.innerText || '').includes('{newest}')"
    compare = ("() => document.querySelector('[data-test=compare_chart_train_loss] canvas') !== null && "
               "(document.querySelector('[data-test=compare_config_table]')?.innerText || '')"
               ".includes('training.learning_rate')")
    experiment = ("() => document.querySelector('[data-test=chart_loss] canvas') !== null && "
                  f"(document.querySelector('[data-test=exp_header]')?.innerText || '').includes('{a}')")
    out = {"experiments_page": time_navigation(page, "#experiments", table, repeats),
           "compare_page": time_navigation(page, f"#compare/{a},{b}", compare, repeats),
           "experiment_page": time_navigation(page, f"#experiment/{a}", experiment, repeats)}
    page.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=60, help="live points to time (default 60)")
    p.add_argument("--experiments", type=int, default=100, help="experiments seeded for the page timings")
    p.add_argument("--metric-points", type=int, default=1_000_000, help="metric points seeded in all")
    p.add_argument("--repeats", type=int, default=5, help="navigations per page (median reported)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the live points")
    p.add_argument("--json", default=None, help="write every figure to this file")
    a = p.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="ui-latency-"))
    home = root / "workspace"
    os.environ["LLM_STUDIO_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from playwright.sync_api import sync_playwright

    from llm_studio.data import ensure_sample_dataset
    from llm_studio.models import ensure_tiny_model

    ensure_tiny_model()
    ensure_sample_dataset()
    result: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                              "date": time.strftime("%Y-%m-%d")}
    try:
        with Studio(home, log_path=root / "studio.log") as studio, sync_playwright() as pw:
            browser = launch_browser(pw)
            result["live"] = measure_live(studio, browser, a.points, a.timeout)
            t0 = time.perf_counter()
            names = seed_store(home, a.experiments, a.metric_points)
            result["seed_seconds"] = round(time.perf_counter() - t0, 1)
            result["store"] = {"experiments": a.experiments + 1, "metric_points": a.metric_points}
            result["pages"] = measure_pages(studio, browser, names, a.repeats)
            browser.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    live = result["live"]
    print(f"live chart, {live['points']} points: insert -> browser median {live['insert_to_browser_median_s']:.2f} s, "
          f"p95 {live['insert_to_browser_p95_s']:.2f} s (goal <= 2 s median); "
          f"training step -> browser median {live['step_to_browser_median_s']:.2f} s, "
          f"p95 {live['step_to_browser_p95_s']:.2f} s")
    print(f"store: {result['store']['experiments']} experiments, {a.metric_points:,} metric points "
          f"(seeded in {result['seed_seconds']} s)")
    for page_name, t in result["pages"].items():
        print(f"{page_name:<17} median {t['median_s']:.2f} s, max {t['max_s']:.2f} s over {t['repeats']} "
              f"navigations (goal < 1 s)")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
