"""The `llm-studio` CLI as a new user meets it: real subprocesses on a real workspace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import REPO, cli, cli_env


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=cli_env(home), cwd=REPO, capture_output=True, text=True, timeout=300)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def test_tiny_model_command_builds_a_loadable_model(workspace: Path) -> None:
    out = run(workspace, "tiny-model")
    assert out.returncode == 0, out.stderr
    assert "tiny model ready" in out.stdout
    assert (workspace / "models" / "tiny-llama" / "model.safetensors").exists()
    assert (workspace / "models" / "tiny-llama" / "tokenizer.json").exists()


def test_datasets_import_list_show_delete(workspace: Path, tmp_path: Path) -> None:
    data = tmp_path / "qa.csv"
    data.write_text("question,response\n" + "".join(f"What is {i} + 1?,{i + 1}\n" for i in range(20)))
    out = run(workspace, "datasets", "import", str(data), "--name", "my-qa", "--validation-fraction", "0.2")
    assert out.returncode == 0, out.stderr
    assert "16 train, 4 validation" in out.stdout
    listed = json.loads(run(workspace, "datasets", "list", "--json").stdout)
    assert {d["name"] for d in listed} == {"my-qa", "sample-qa"}, "the sample registers itself on first use"
    shown = json.loads(run(workspace, "datasets", "show", "my-qa", "--json").stdout)
    assert shown["columns"] == {"prompt": "question", "answer": "response"} and shown["n_valid"] == 4
    human = run(workspace, "datasets", "show", "sample-qa").stdout
    assert "conversations" in human and "validation" in human
    assert run(workspace, "datasets", "delete", "my-qa").returncode == 0
    assert not (workspace / "datasets" / "my-qa").exists()
    gone = run(workspace, "datasets", "show", "my-qa")
    assert gone.returncode == 2 and "does not exist" in gone.stderr


def test_bad_input_is_one_clear_line_and_leaves_nothing(workspace: Path, tmp_path: Path) -> None:
    run(workspace, "datasets", "list")  # workspace with the sample registered
    before = tree(workspace)
    bad = tmp_path / "bad.csv"
    bad.write_text("question,response\nWhat is 1 + 1?,2\nSay hi,\n")
    out = run(workspace, "datasets", "import", str(bad), "--name", "bad")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, "one line, no traceback"
    assert "bad.csv" in out.stderr and "row 3" in out.stderr and "'response'" in out.stderr
    assert tree(workspace) == before
    out = run(workspace, "--debug", "datasets", "import", str(bad), "--name", "bad")
    assert "Traceback" in out.stderr, "--debug shows the traceback"
    assert run(workspace, "datasets", "import", str(bad), "--name", "../escape").returncode == 2
    assert tree(workspace) == before


def test_every_command_has_help_with_an_example(workspace: Path) -> None:
    for args in (["datasets", "import"], ["train"], ["experiments", "start"], ["experiments", "stop"], ["worker"]):
        out = run(workspace, *args, "--help")
        assert out.returncode == 0 and "example: llm-studio" in out.stdout, args
