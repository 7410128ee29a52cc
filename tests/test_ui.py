"""The studio UI: a real Wave server with the app, real Chromium (Playwright on /usr/bin/chromium), real workers.

One studio runs for the whole session (`studio` fixture) on free ports with its own LLM_STUDIO_HOME; the
tests drive it as a user would and check the workspace and the store behind it. They run in file order
(the compare and navigation tests reuse the experiments made before them, or make their own).
Set LLM_STUDIO_SCREENSHOTS=docs/screenshots to save a screenshot of each page.

The first tests need no browser: the schema-generated form, and that the UI process never imports model
code. Settings are tested in test_ui_settings.py, the Chat and Export tabs in test_ui_chat_export.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from ui_helpers import REPO, UI_TIMEOUT_MS, UserPage, needs_browser, wait_for

TINY = REPO / "experiments" / "tiny-sft.yaml"
SAMPLE_CSV = REPO / "llm_studio" / "data" / "sample" / "train.csv"
LONG = ["training.max_steps=100000", "training.log_every=1", "training.eval_every=100000",
        "training.save_every=100000", "evaluation.num_predictions=0"]
RUN_TIMEOUT_S = 300  # generous: the machine's 2 cores are shared with other test runs

# --- no browser --------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_form_reads_back_every_preset_value_unchanged(preset: Path) -> None:
    """Each schema field -> its widget -> the value the browser would send -> parse: the same config."""
    from app.components import config_form
    from llm_studio.config import config_from_dict, load_config, ui_fields

    fields = ui_fields()
    cfg = load_config(preset)
    values = {k: v for k, v in _flat(cfg.model_dump(mode="json")).items()}
    sent: dict[str, Any] = {}
    for f in fields:
        w = config_form.widget(f, values[f["path"]], True, False)
        kind, props = next(iter(w.dump().items()))
        sent[f["path"]] = props.get("values", props.get("value")) if kind != "toggle" else bool(props.get("value"))
        if kind == "textbox" and isinstance(values[f["path"]], list):
            assert props["value"] == ", ".join(map(str, values[f["path"]]))
    parsed = {p: config_form.parse(next(f for f in fields if f["path"] == p), v) for p, v in sent.items()}
    data: dict[str, Any] = {}
    for path, value in parsed.items():
        section, _, key = path.rpartition(".")
        (data.setdefault(section, {}) if section else data)[key] = value
    assert config_from_dict(data) == cfg


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_ui_process_imports_no_model_code() -> None:
    code = ("import sys, app.main; bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the studio in a browser -------------------------------------------------------------------------

def close_dialog(user: UserPage) -> None:
    user.click("dialog_cancel")
    user.page.wait_for_selector(".ms-Dialog-main", state="detached")


def upload(user: UserPage, path: Path) -> None:
    user.page.set_input_files("[data-test=dataset_upload]", str(path))
    user.page.click("button:has-text('Upload and preview')")


def _loss_rows(user: UserPage) -> list[list[Any]]:
    return user.frames.plot_rows("chart_loss")


@needs_browser
@pytest.mark.browser
def test_start_the_tiny_experiment_from_the_form_and_watch_the_loss_chart_grow(user: UserPage, ws: Path) -> None:
    from llm_studio.store import Store

    user.open("#home")
    if user.page.query_selector("[data-test=home_try_sample]"):
        user.shot("home-first-run")
        user.click("home_try_sample")  # the first-run guide: registers sample-qa, opens the form prefilled
    else:
        user.nav("Experiments")
        user.click("#experiments/new")
    user.el("cfg_training__max_steps")
    assert "tiny-sft" in user.text("new_preset") and "sample-qa" in user.text("new_dataset")
    user.click("new_advanced")  # log_every and save_every are advanced settings
    user.el("cfg_training__log_every")
    for name, value in [("new_name", "first"), ("cfg_training__max_steps", "240"), ("cfg_training__log_every", "1"),
                        ("cfg_training__eval_every", "80"), ("cfg_training__save_every", "80"),
                        ("cfg_evaluation__num_predictions", "2"), ("cfg_generation__max_new_tokens", "4")]:
        user.page.fill(f"[data-test={name}]", value)
    user.click("new_show_yaml")  # the form as YAML and as the equivalent CLI command
    cli = user.value("new_cli_out")
    assert "llm-studio experiments start experiments/tiny-sft.yaml" in cli and "--name first" in cli
    assert "--set training.max_steps=240" in cli and "--set training.log_every=1" in cli
    assert "max_steps: 240" in user.value("new_yaml_out")
    user.shot("new-experiment-yaml")
    close_dialog(user)
    user.shot("new-experiment")
    user.click("new_start")
    user.page.wait_for_url("**#experiment/first", timeout=UI_TIMEOUT_MS)
    user.el("exp_progress")
    user.page.evaluate("() => { window.__still_the_same_page = true }")

    # watch: the number of points the browser holds grows while the run trains, without a reload
    # (240 steps keep the run going for several seconds even on a quiet machine)
    counts: list[int] = []

    def finished() -> bool:
        n = len(_loss_rows(user))
        if not counts or counts[-1] != n:
            counts.append(n)
        return "Finished" in user.text("exp_progress") or "Failed" in user.text("exp_progress")

    wait_for(finished, RUN_TIMEOUT_S, "the run to finish", interval=0.5)
    assert "Finished" in user.text("exp_progress"), Store(ws / "llm_studio.db").get_experiment("first").error
    time.sleep(3)  # the live task keeps polling briefly after the end: the last points arrive
    final = len(_loss_rows(user))
    counts.append(final)
    # the worker writes points in batches (every few seconds and at each evaluation): 3 evaluations, 3+ batches
    assert len({c for c in counts if c > 0}) >= 3, f"the chart grew in too few steps: {counts}"
    assert counts == sorted(counts), counts
    assert user.frames.card_puts("chart_loss") == 1, "the loss card was rebuilt instead of appended to"
    assert user.page.evaluate("() => window.__still_the_same_page === true"), "the page was reloaded"
    store = Store(ws / "llm_studio.db")
    stored = len(store.get_metrics("first", names=["train/loss", "validation/loss"]))
    assert final == stored == 240 + 3, (final, stored)  # a loss per step, a validation loss per evaluation
    user.shot("experiment")

    # a reload rebuilds the same history from the store
    user.page.reload()
    user.el("exp_progress")
    wait_for(lambda: len(_loss_rows(user)) == stored, 15, "the history after a reload")
    user.no_error_shown()


@needs_browser
@pytest.mark.browser
def test_upload_the_sample_csv_and_see_its_conversations(user: UserPage, ws: Path) -> None:
    from llm_studio.store import Store

    user.open("#datasets")
    upload(user, SAMPLE_CSV)
    preview = user.text("ds_preview_conversations")
    assert "Conversation 1" in preview and "User" in preview and "Assistant" in preview
    assert "What is the opposite of early?" in preview and "late" in preview  # the first row of the file
    assert "threads" in user.text("ds_detected")  # id + parent_id: multi-turn threads were detected
    user.shot("datasets-import")
    user.page.fill("[data-test=ds_name]", "uploaded-qa")
    user.click("ds_import_button")
    user.see("ds_summary", "train /", "validation conversations")
    user.see("flash", "Imported dataset uploaded-qa")
    assert user.page.url.endswith("#dataset/uploaded-qa")
    assert user.text("ds_conversations_text").startswith("Conversation 1")
    wait_for(lambda: user.frames.plot_rows("ds_histogram"), 10, "the length histogram")
    rec = Store(ws / "llm_studio.db").get_dataset("uploaded-qa")
    assert rec.n_train > 0 and rec.n_valid > 0 and (ws / "datasets" / "uploaded-qa" / "data.parquet").exists()
    user.shot("dataset")

    user.click("ds_delete")  # asks first
    assert "Delete dataset uploaded-qa?" in user.page.inner_text(".ms-Dialog-main")
    user.click("ds_delete_confirm")
    user.see("flash", "Deleted dataset uploaded-qa")
    assert user.page.url.endswith("#datasets")
    assert "uploaded-qa" not in [d.name for d in Store(ws / "llm_studio.db").list_datasets()]
    assert not (ws / "datasets" / "uploaded-qa").exists()
    user.no_error_shown()


@needs_browser
@pytest.mark.browser
def test_a_malformed_csv_names_row_and_column_and_creates_nothing(user: UserPage, ws: Path,
                                                                  tmp_path: Path) -> None:
    from llm_studio.store import Store

    bad = tmp_path / "broken-qa.csv"
    bad.write_text("prompt,answer\nWhat is 1 + 1?,2\nName a colour,\nCapital of France?,Paris\n")
    store = Store(ws / "llm_studio.db")
    before_rows = [d.name for d in store.list_datasets()]
    datasets_dir = ws / "datasets"
    before_files = sorted(p.name for p in datasets_dir.iterdir()) if datasets_dir.exists() else []

    user.open("#datasets")
    upload(user, bad)
    user.see("ds_import_error", "broken-qa.csv", "row 3", "answer")  # already at the preview
    user.click("ds_import_button")  # importing anyway gives the same answer, inline
    user.see("ds_import_error", "Nothing was imported", "broken-qa.csv", "row 3", "column", "answer")
    assert [d.name for d in store.list_datasets()] == before_rows
    after_files = sorted(p.name for p in datasets_dir.iterdir()) if datasets_dir.exists() else []
    assert after_files == before_files, "a failed import must leave no folder (not even a hidden temp one)"
    user.no_error_shown()


@needs_browser
@pytest.mark.browser
def test_stop_a_running_experiment_and_reorder_the_queue_behind_it(user: UserPage, ws: Path) -> None:
    from llm_studio.runner import manager
    from llm_studio.store import Store

    store = Store(ws / "llm_studio.db")
    manager.start(TINY, "long", LONG)
    user.open("#experiment/long")
    wait_for(lambda: "Running" in user.text("exp_progress") and _loss_rows(user), RUN_TIMEOUT_S,
             "the run to start and log a loss")

    # two more wait for the only CPU slot: move the second to the front, then cancel both from the table
    manager.start(TINY, "queued-a", LONG)
    manager.start(TINY, "queued-b", LONG)
    user.nav("Experiments")
    user.see("exp_table", "#2 in queue")
    row_menu(user, "queued-b", "Move to top of queue")
    wait_for(lambda: [j.experiment_name for j in store.list_jobs(status="queued")] == ["queued-b", "queued-a"],
             10, "queued-b to move to the front")
    expect(user.page.locator("[data-test=exp_table] .ms-DetailsRow", has_text="queued-b")).to_contain_text("#1")
    for name in ("queued-a", "queued-b"):
        row_menu(user, name, "Stop")  # a queued run is cancelled
        wait_for(lambda: store.get_experiment(name).status == "stopped", 10, f"{name} to be cancelled")

    user.page.click("[data-test=exp_table] a[href='#experiment/long']")
    user.click("exp_stop")
    user.see("exp_progress", "Stopped", timeout_s=180)  # stopping finishes the step and saves a checkpoint first
    user.el("exp_resume")  # a stopped run offers to resume
    rec = store.get_experiment("long")
    assert rec.status == "stopped" and 0 < rec.step < 100000
    assert any((ws / "experiments" / "long" / "checkpoints").glob("step-*")), "stopping saves a checkpoint"

    stopped_at = rec.step
    user.click("exp_resume")  # continues from that checkpoint: the step count goes on from there
    wait_for(lambda: "Running" in user.text("exp_progress") and store.get_experiment("long").step > stopped_at,
             RUN_TIMEOUT_S, "the resumed run to train past its checkpoint")
    user.page.click("[data-test=exp_tabs] >> text=Logs")  # the log tail follows the run
    user.see("exp_logs_text", f"resumed from step-{stopped_at}")
    user.click("exp_stop")
    user.see("exp_progress", "Stopped", timeout_s=180)
    user.no_error_shown()


def row_menu(user: UserPage, experiment: str, command: str) -> None:
    """Open the actions menu at the end of an experiment's row and pick `command`."""
    row = user.page.locator("[data-test=exp_table] .ms-DetailsRow", has_text=experiment).filter(
        has=user.page.locator(f"a[href='#experiment/{experiment}']"))
    row.locator("[data-test=exp_actions]").click()
    user.page.click(f"role=menuitem[name='{command}']")


def _ensure_experiment(name: str, overrides: list[str]) -> None:
    """An experiment to look at when an earlier test did not leave one: queued, cancelled, a few loss points."""
    from llm_studio.errors import NotFoundError
    from llm_studio.runner import manager
    from llm_studio.store import MetricPoint, Store

    store = Store()
    try:
        store.get_experiment(name)
    except NotFoundError:
        manager.start(TINY, name, overrides)
        manager.cancel(name)
        store.log_metrics(name, [MetricPoint("train/loss", step, 3.0 / step) for step in (1, 2, 3)])


@needs_browser
@pytest.mark.browser
def test_compare_two_experiments_and_see_the_config_diff(user: UserPage, ws: Path) -> None:
    _ensure_experiment("first", ["training.max_steps=6"])
    _ensure_experiment("long", LONG)
    user.open("#compare")
    picker = user.page.locator("[data-test=compare_pick]")
    for name in ("first", "long"):
        picker.fill(name)
        user.page.click(f".ms-Suggestions-item:has-text('{name}')")
    user.click("compare_go")
    user.page.wait_for_url("**#compare/first,long")
    table = user.text("compare_config_table")
    assert "training.max_steps" in table and "100000" in table and "6" in table
    assert "adapter.r" not in table  # equal in both: hidden while "only differences" is on
    only_diff_rows = user.page.locator("[data-test=compare_config_table] .ms-DetailsRow").count()
    user.click("compare_only_diff")
    user.page.wait_for_function("() => document.querySelector('[data-test=compare_config_table]')"
                                ".innerText.includes('adapter.r')")
    assert user.page.locator("[data-test=compare_config_table] .ms-DetailsRow").count() > only_diff_rows
    user.see("compare_metrics_table", "train/loss")
    assert user.frames.plot_rows("compare_chart_train_loss"), "overlaid loss curves"
    user.click("compare_only_diff")
    user.shot("compare")
    user.no_error_shown()


@needs_browser
@pytest.mark.browser
def test_every_page_opens_by_link_and_by_the_back_button(user: UserPage, ws: Path) -> None:
    _ensure_experiment("first", ["training.max_steps=6"])
    user.open("#home")
    visits = [  # (how to get there, element that proves the page is there, screenshot name)
        (lambda: user.nav("Datasets"), "dataset_upload", "datasets"),
        (lambda: user.page.click("a[href='#dataset/sample-qa']"), "ds_summary", None),
        (lambda: user.nav("Experiments"), "exp_table", "experiments"),
        (lambda: user.page.click("[data-test=exp_table] a[href='#experiment/first']"), "chart_loss", None),
        (lambda: user.page.click("[data-test=exp_tabs] >> text=Logs"), "exp_logs_text", "experiment-logs"),
        (lambda: user.page.click("[data-test=exp_tabs] >> text=Predictions"), "exp_predictions",
         "experiment-predictions"),
        (lambda: user.page.click("[data-test=exp_tabs] >> text=Config"), "exp_config_text", "experiment-config"),
        (lambda: user.page.click("[data-test=exp_tabs] >> text=Summary"), "exp_usage_text", "experiment-summary"),
        (lambda: user.page.click("[data-test=exp_tabs] >> text=Chat"), "exp_chatbot|exp_chat_wait", None),
        (lambda: user.page.click("[data-test=exp_tabs] >> text=Export"), "export_zip", None),
        (lambda: user.nav("Compare"), "compare_pick", None),
        (lambda: user.nav("Settings"), "settings_cpu_slots", "settings"),
        (lambda: user.nav("Home"), "home_workspace", "home"),
    ]
    seen = ["home_workspace"]
    for go, proof, shot in visits:
        go()
        user.el(proof)
        user.no_error_shown()
        seen.append(proof)
        if shot:
            user.shot(shot)
    for proof in reversed(seen[:-1]):  # back through the whole trail
        user.page.go_back()
        user.el(proof)
        user.no_error_shown()
    user.page.go_forward()
    user.el(seen[1])


@needs_browser
@pytest.mark.browser
def test_clone_with_changes_then_delete_with_confirmation(user: UserPage, ws: Path) -> None:
    from llm_studio.config import load_config
    from llm_studio.store import Store

    _ensure_experiment("first", ["training.max_steps=6"])
    parent_steps = load_config(ws / "experiments" / "first" / "config.yaml").training.max_steps
    user.open("#experiment/first")
    user.click("exp_clone")
    user.el("cfg_training__learning_rate")
    user.see("new_head", "Clone first with changes")
    assert user.value("new_name") == "first-2"
    assert user.value("cfg_training__max_steps") == str(parent_steps)  # the parent's saved config
    user.page.fill("[data-test=cfg_training__learning_rate]", "0.001")
    user.click("new_show_yaml")
    cli = user.value("new_cli_out")
    assert "llm-studio experiments clone first --name first-2" in cli and "training.learning_rate=0.001" in cli
    close_dialog(user)
    user.click("new_start")
    user.page.wait_for_url("**#experiment/first-2")
    cfg = load_config(ws / "experiments" / "first-2" / "config.yaml")
    assert cfg.training.learning_rate == 0.001 and cfg.training.max_steps == parent_steps
    assert Store(ws / "llm_studio.db").get_experiment("first-2").parent_name == "first"
    user.click("exp_delete")
    assert "Delete experiment first-2?" in user.page.inner_text(".ms-Dialog-main")
    user.click("exp_delete_confirm")  # stops it first if the scheduler already started it
    user.page.wait_for_url("**#experiments")
    user.see("flash", "Deleted experiment first-2")
    assert "first-2" not in [e.name for e in Store(ws / "llm_studio.db").list_experiments()]
    assert not (ws / "experiments" / "first-2").exists()
    user.no_error_shown()


@needs_browser
@pytest.mark.browser
def test_errors_are_messages_on_the_page_never_a_blank_page(user: UserPage, ws: Path) -> None:
    from llm_studio.data import ensure_sample_dataset

    user.open("#experiment/no-such-run")
    user.see("error_message", "does not exist")  # a user error: one clear line
    ensure_sample_dataset()
    (ws / "datasets" / "sample-qa" / "dataset.yaml").write_text("{unclosed: [")  # damage a file behind the UI
    try:
        user.open("#dataset/sample-qa")
        user.see("error_card", "Something went wrong")
        user.page.click("[data-test=error_details] >> text=Details")
        user.see("error_traceback", "Traceback")
        user.nav("Datasets")  # the studio keeps working
        user.el("dataset_upload")
    finally:
        from llm_studio.data import delete_dataset

        delete_dataset("sample-qa")
        ensure_sample_dataset()
