"""Chat with a trained experiment and export it: one short tiny run (shared by the tests here), then
the exported folder loads with plain transformers and gives the experiment's logits; the chat service
streams the same greedy answer the run's predictions hold; push uploads to a local fake Hub."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli, cli_env

TIMEOUT = 240


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A workspace holding experiment 'run': 100 steps on the tiny model, one final evaluation + checkpoint."""
    root = tmp_path_factory.mktemp("chat-export")
    home = root / "workspace"
    cfg = {  # enough steps (about 15 s) that greedy answers are real words, several tokens long
        "dataset": {"name": "sample-qa", "max_length": 64},
        "model": {"backbone": str(tiny_model_dir)},
        "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["all-linear"],
                    "modules_to_save": ["lm_head", "embed_tokens"]},
        "training": {"max_steps": 100, "batch_size": 4, "learning_rate": 0.004, "log_every": 20,
                     "eval_every": 1000, "packing": True},
        "evaluation": {"num_predictions": 8},
        "generation": {"max_new_tokens": 12},
        "environment": {"num_threads": 1},
    }
    path = root / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(cli("train", str(path), "--name", "run"), env=cli_env(home), cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return home


@pytest.fixture
def home(trained: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLM_STUDIO_HOME", str(trained))
    return trained


def test_export_loads_with_plain_transformers_and_matches_the_experiment(home: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_studio.data.render import render_prompt
    from llm_studio.export.loading import load_experiment_model

    out = tmp_path / "exported"
    proc = subprocess.run(cli("export", "run", "--output", str(out), "--zip"), env=cli_env(home), cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= names
    assert not any(n.startswith("adapter") for n in names)
    assert (tmp_path / "exported.zip").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and "llm-studio" in front["tags"]
    assert front["base_model"] and front["datasets"] == ["sample-qa"]
    assert front["license"] == "other"  # the tiny base model's README names no license
    assert "validation/loss" in card and "AutoModelForCausalLM" in card

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ref = load_experiment_model("run", "best")
    ids = torch.tensor([render_prompt(ref.tokenizer, [{"role": "user", "content": "What is the capital of France?"}])])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = ref.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_the_adapter_alone_downloads_and_loads_on_its_base_with_peft(home: Path, tmp_path: Path) -> None:
    import torch
    from peft import AutoPeftModelForCausalLM

    from llm_studio.data.render import render_prompt
    from llm_studio.export.loading import load_experiment_model

    out = tmp_path / "adapter"
    bad = subprocess.run(cli("export", "run", "--adapter-only", "--output", str(out), "--license", "Apache 2"),
                         env=cli_env(home), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode == 2 and "'Apache 2' is not a Hub license id" in bad.stderr and not out.exists()
    proc = subprocess.run(cli("export", "run", "--adapter-only", "--output", str(out), "--zip", "--license", "mit"),
                          env=cli_env(home), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exported the adapter of 'run'" in proc.stdout
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= names
    assert not names & {"training_state.pt", "state.json", "model.safetensors"}, names  # no training state, no merge
    assert (tmp_path / "adapter.zip").is_file()
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["library_name"] == "peft" and front["license"] == "mit"

    model = AutoPeftModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ref = load_experiment_model("run", "best")
    ids = torch.tensor([render_prompt(ref.tokenizer, [{"role": "user", "content": "What is the capital of France?"}])])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, ref.model(input_ids=ids).logits, atol=1e-5)


def test_the_model_card_inherits_the_base_models_license(tmp_path: Path) -> None:
    from llm_studio.config.schema import ExperimentConfig
    from llm_studio.export.export import base_license, model_card
    from llm_studio.export.loading import ExperimentModel

    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: apache-2.0\ntags: [llama]\n---\n# A base model\n")
    assert base_license(str(base)) == "apache-2.0"
    assert base_license(str(tmp_path / "missing")) is None and base_license("owner/never-cached") is None
    loaded = ExperimentModel(model=None, tokenizer=None, cfg=ExperimentConfig(), checkpoint=tmp_path / "step-1",
                             backbone=str(base), exp_dir=tmp_path)
    license_of = lambda card: yaml.safe_load(card.split("---")[1])["license"]
    assert license_of(model_card("run", loaded)) == "apache-2.0"                 # a fine-tune keeps its base's terms
    assert license_of(model_card("run", loaded, license="cc-by-4.0")) == "cc-by-4.0"  # unless told otherwise


def test_chat_streams_the_same_greedy_answer_as_the_predictions(home: Path) -> None:
    import pandas as pd

    from llm_studio.chat.client import ChatClient

    preds = pd.read_parquet(home / "experiments" / "run" / "predictions.parquet")
    row = preds.loc[preds["prediction"].str.len().idxmax()]  # the longest answer: several tokens
    assert row["prediction"]
    # the raw protocol: several delta lines, then done
    proc = subprocess.Popen([*cli()[:2], "llm_studio.chat.service", "run", "--idle-timeout", "60"],
                            env=cli_env(home), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert json.loads(proc.stdout.readline())["ready"] is True  # type: ignore[union-attr]
        request = {"messages": [{"role": "user", "content": row["prompt"]}], "temperature": 0}
        proc.stdin.write(json.dumps(request) + "\n" + "not json\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        lines = []
        while True:
            reply = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            lines.append(reply)
            if "done" in reply or "error" in reply:
                break
        deltas = [r["delta"] for r in lines if "delta" in r]
        assert lines[-1].get("done") is True and lines[-1]["tokens"] > 0, lines
        assert len(deltas) > 1
        assert "".join(deltas).strip() == row["prediction"]
        assert "error" in json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)
    assert proc.returncode == 0

    with ChatClient("run", idle_timeout=60, threads=1) as chat:
        assert chat.ask([{"role": "user", "content": row["prompt"]}]).strip() == row["prediction"]
        assert chat.last_stats["tokens"] > 0

    one = subprocess.run(cli("chat", "run", "--prompt", row["prompt"]), env=cli_env(home), cwd=REPO,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == row["prediction"]


def test_stop_generating_stops_the_model_and_the_next_question_is_answered(workspace: Path, tmp_path: Path,
                                                                           tiny_model_dir: Path) -> None:
    """A barely trained model rambles up to max_new_tokens; a cancel ends its answer within a few tokens."""
    from llm_studio.chat.client import ChatClient

    cfg = {"dataset": {"name": "sample-qa", "max_length": 64}, "model": {"backbone": str(tiny_model_dir)},
           "adapter": {"type": "lora", "r": 4, "modules_to_save": ["lm_head"]},
           "training": {"max_steps": 1, "batch_size": 4}, "evaluation": {"num_predictions": 0},
           "environment": {"num_threads": 1}}
    path = tmp_path / "raw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trained = subprocess.run(cli("train", str(path), "--name", "raw"), env=cli_env(workspace), cwd=REPO,
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert trained.returncode == 0, trained.stderr[-2000:]
    question = [{"role": "user", "content": "Tell me everything."}]
    with ChatClient("raw", idle_timeout=60, threads=1) as chat:
        deltas = []
        for delta in chat.stream(question, max_new_tokens=3000, temperature=0):
            deltas.append(delta)
            if len(deltas) == 3:
                chat.cancel()  # as the UI's "Stop generating" does, from its handler
        assert chat.last_stats["cancelled"] is True
        assert 3 <= chat.last_stats["tokens"] < 100, chat.last_stats  # not the 3000 it was allowed
        assert chat.ask(question, max_new_tokens=5)  # the service goes on answering
        assert chat.last_stats["cancelled"] is False and chat.last_stats["tokens"] == 5


def test_chat_takes_a_gpu_no_training_run_holds_or_refuses_naming_the_runs(workspace: Path) -> None:
    from llm_studio.chat.device import chat_device
    from llm_studio.errors import LLMStudioError
    from llm_studio.store import Store

    store = Store()
    for name, gpus in (("big-run", [0]), ("cpu-run", None)):
        store.create_experiment(name, f"{name}.yaml")
        job = store.enqueue_job(name)
        assert store.claim_job(job.id, os.getpid(), None, {"gpus": gpus} if gpus else {"cpu_slots": 1})
    assert chat_device("auto", 0, store) == "cpu"  # no GPU: the CPU
    assert chat_device("auto", 2, store) == "cuda:1"  # GPU 0 trains big-run
    assert chat_device("cpu", 2, store) == "cpu"
    with pytest.raises(LLMStudioError, match="GPU 0 by big-run.*--device cpu"):
        chat_device("auto", 1, store)
    with pytest.raises(LLMStudioError, match="no CUDA GPU"):
        chat_device("cuda", 0, store)


def test_the_chat_service_refuses_a_gpu_it_cannot_have_with_one_line(home: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is allowed here")
    bad = subprocess.run(cli("chat", "run", "--prompt", "hi", "--device", "cuda"), env=cli_env(home), cwd=REPO,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode == 2 and "no CUDA GPU is visible" in bad.stderr and "Traceback" not in bad.stderr


def test_chat_service_exits_when_idle_and_reports_unknown_experiments(home: Path) -> None:
    proc = subprocess.Popen([*cli()[:2], "llm_studio.chat.service", "run", "--idle-timeout", "1"],
                            env=cli_env(home), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:  # stdin stays open and silent: the idle timeout alone ends the service
        assert json.loads(proc.stdout.readline())["ready"] is True  # type: ignore[union-attr]
        assert proc.wait(timeout=60) == 0
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        if proc.poll() is None:
            proc.kill()
    bad = subprocess.run(cli("chat", "nope", "--prompt", "hi"), env=cli_env(home), cwd=REPO,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


def test_push_uploads_every_file_to_the_hub_and_never_leaks_the_token(home: Path, tmp_path: Path) -> None:
    from fake_hub import FakeHub

    token = "hf_fakeSecretToken1234567890"
    hub = FakeHub(tmp_path / "hub", token=token)
    try:
        def push(*args: str, tok: str = token) -> subprocess.CompletedProcess:
            # HF_ENDPOINT is read when huggingface_hub is imported: only a fresh process sees it
            env = cli_env(home, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_TOKEN=tok, HF_HUB_DISABLE_TELEMETRY="1",
                          HF_HOME=str(tmp_path / "hf-home"))
            return subprocess.run(cli("export", "run", *args), env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=TIMEOUT)

        out = tmp_path / "exported"
        ok = push("--output", str(out), "--push", "me/tiny-run", "--private")
        assert ok.returncode == 0, (ok.stderr[-500:], hub.requests)
        assert "pushed 'run'" in ok.stdout
        local = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        assert hub.files("me/tiny-run") == local  # every file arrived, byte for byte
        assert hub.repos["me/tiny-run"]["private"] is True
        assert hub.commits[-1]["summary"] == "Upload run from LLM Studio"
        card = hub.files("me/tiny-run")["README.md"].decode()
        front = yaml.safe_load(card.split("---")[1])
        assert front["library_name"] == "transformers" and "llm-studio" in front["tags"]
        assert hub.cards and hub.cards[-1]["base_model"] == front["base_model"] and not hub.card_errors

        bad = push("--push", "me/tiny-run", tok="hf_wrongToken0000000000")
        assert bad.returncode == 2 and "token was refused" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and "hf_wrongToken" not in bad.stdout + bad.stderr
        invalid = push("--push", "not a repo!")
        assert invalid.returncode == 2 and "invalid Hub repository" in invalid.stderr
        env = cli_env(home, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0", HF_TOKEN=token)
        offline = subprocess.run(cli("export", "run", "--push", "me/x"), env=env, cwd=REPO, capture_output=True,
                                 text=True, timeout=TIMEOUT)
        assert offline.returncode == 2 and "cannot push" in offline.stderr and "Traceback" not in offline.stderr
        for proc in (ok, bad, invalid, offline):
            assert token not in proc.stdout + proc.stderr
    finally:
        hub.stop()
    for p in [*home.rglob("*"), *out.rglob("*")]:  # files, logs, the store db
        if p.is_file():
            assert token.encode() not in p.read_bytes(), p
