"""Smoke tests of the benchmarks: train_throughput.py runs every variant for one warm-up and one timed step;
ui_latency.py times a few live points and page loads on a small store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_throughput.py"


@pytest.mark.skipif(not SCRIPT.exists(), reason="benchmark script missing")
def test_train_throughput_smoke(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "ratio engine / best TRL" in text, text
    assert "ratio engine / bare loop" in text, text
    for name in ("trl_padded", "trl_packed", "bare_loop", "engine"):
        assert name in text
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"trl_padded", "trl_packed", "bare_loop", "engine"}
    for name, r in data["results"].items():
        assert r["tokens_per_s"] > 0, name
        assert 0 < r["real_fraction"] <= 1, name
        assert r["peak_mem_mb"] > 0, name
    assert data["ratios"]["engine_vs_best_trl"] > 0
    assert data["ratios"]["engine_vs_bare_loop"] > 0
    # packed engine batches carry no padding
    assert data["results"]["engine"]["real_fraction"] == 1.0


UI_SCRIPT = ROOT / "benchmarks" / "ui_latency.py"


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium not found (run `make browser`)")
def test_ui_latency_smoke(tmp_path):
    """A few live points and a small seeded store: every figure is measured and printed."""
    out = tmp_path / "ui.json"
    proc = subprocess.run([sys.executable, str(UI_SCRIPT), "--points", "5", "--experiments", "3",
                           "--metric-points", "3000", "--repeats", "1", "--timeout", "240", "--json", str(out)],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "insert -> browser median" in proc.stdout and "experiments_page" in proc.stdout
    data = json.loads(out.read_text())
    assert data["live"]["points"] >= 5 and 0 <= data["live"]["insert_to_browser_median_s"] < 60
    assert set(data["pages"]) == {"experiments_page", "compare_page", "experiment_page"}
    assert all(0 < t["median_s"] < 60 for t in data["pages"].values())
