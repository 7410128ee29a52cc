"""The offline tiny backbone: it builds deterministically, loads with the Auto classes offline, chats with
the right template, encodes any text, and `resolve_backbone` finds it (or a folder, or a Hub id)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_studio import paths
from llm_studio.errors import LLMStudioError
from llm_studio.models import resolve_backbone
from llm_studio.models.tiny import EOS, MARKER, build_tiny_model, ensure_tiny_model, is_complete

CHAT = [
    {"role": "system", "content": "Answer with the result only."},
    {"role": "user", "content": "What is 7 + 5?"},
    {"role": "assistant", "content": "12"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_tiny_model_loads_offline_and_generates(tiny_model_dir: Path, tokenizer) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.max_position_embeddings >= 2048
    assert cfg.vocab_size == len(tokenizer)
    assert 1_000_000 < model.num_parameters() < 10_000_000
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(EOS)
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.model_max_length == 2048

    prompt = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 1 and prompt["input_ids"].shape[1] < out.shape[1] <= prompt["input_ids"].shape[1] + 5


def test_rebuild_gives_identical_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_chat_template_renders_roles_and_ends_each_turn_with_eos(tokenizer) -> None:
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == ("<|bos|><|system|>Answer with the result only.<|end|>\n"
                    "<|user|>What is 7 + 5?<|end|>\n<|assistant|>12<|end|>\n")
    prompt = tokenizer.apply_chat_template(CHAT[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>What is 7 + 5?<|end|>\n<|assistant|>")
    with pytest.raises(Exception, match="Unknown role"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)

    # The assistant mask covers exactly the answer and the eos that ends it: what training learns.
    enc = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == "12" + EOS
    assert masked[-1] == tokenizer.eos_token_id
    for token in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|bos|>", "<|pad|>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token


@pytest.mark.parametrize("text", [
    "What is 7 + 5?", "Reverse the word 'planet'.", "  leading and trailing spaces  ",
    "tabs\tand\nnew lines\r\n", "Ünïcödé façade, naïve café: 10 € / £5 — ok?", "日本語のテキスト、中文",
    "emoji 🤖🚀 and ZWJ 👩‍💻", "control \x00\x07 chars", "Ελληνικά и кириллица", "",
])
def test_tokenizer_round_trips_any_text(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_digits_are_single_tokens(tokenizer) -> None:
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("12345 + 7", add_special_tokens=False))
    assert [p.lstrip("Ġ") for p in pieces] == ["1", "2", "3", "4", "5", "+", "7"]


def test_trained_model_answers_and_stops_at_eos(tiny_model_dir: Path, tokenizer) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    enc = tokenizer.apply_chat_template(CHAT[1:], return_dict=True, return_assistant_tokens_mask=True,
                                        return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["assistant_masks"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(10):  # one example: memorised in a few steps
        loss = model(input_ids=enc["input_ids"], labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    prompt = tokenizer.apply_chat_template(CHAT[1:2], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    out = model.generate(**prompt, max_new_tokens=10, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert new[-1] == tokenizer.eos_token_id and len(new) < 10  # stopped by eos, not by the limit
    assert tokenizer.decode(new, skip_special_tokens=True) == "12"


def test_complete_model_is_kept_and_partial_one_is_replaced(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a crash half-way through a non-atomic copy might leave
    assert not is_complete(out)
    assert build_tiny_model(out) == out.resolve() and is_complete(out)
    assert (out / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in out.iterdir())  # readable by other users

    stamp = (out / MARKER).stat().st_mtime_ns
    build_tiny_model(out)
    assert (out / MARKER).stat().st_mtime_ns == stamp  # complete: returned without rebuilding
    build_tiny_model(out, force=True)
    assert is_complete(out) and (out / MARKER).stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temp folders left behind


def test_resolve_backbone(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not paths.tiny_model_dir().exists()
    tiny = resolve_backbone("tiny-llama")  # built on first use, in this test's workspace
    assert tiny == str(paths.tiny_model_dir()) == str(ensure_tiny_model())
    assert is_complete(Path(tiny)) and Path(tiny).is_relative_to(workspace)

    (tmp_path / "org" / "my-model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_backbone("org/my-model") == str(tmp_path / "org" / "my-model")  # local folder wins
    assert resolve_backbone(str(tmp_path / "org" / "my-model")) == str(tmp_path / "org" / "my-model")
    assert resolve_backbone("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # a Hub id


def test_build_cleans_up_after_a_killed_build(tmp_path: Path) -> None:
    stale = tmp_path / ".tiny.build-abc123"  # what `kill -9` during a build leaves behind
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    os.utime(stale, (0, 0))
    build_tiny_model(tmp_path / "tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("a file where the models folder should be")
    with pytest.raises(LLMStudioError, match="cannot build the tiny model"):
        build_tiny_model(blocker / "tiny-llama")
