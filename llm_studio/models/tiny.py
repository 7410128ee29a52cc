"""The offline default backbone: a tiny Llama with random weights and its own byte-level BPE tokenizer.

    llm-studio tiny-model            # builds into $LLM_STUDIO_HOME/models/tiny-llama
    python -c "from llm_studio.models.tiny import ensure_tiny_model; print(ensure_tiny_model())"

The build is deterministic: the tokenizer is trained on the fixed corpus in `tokenizer_corpus.py` and
the weights are drawn from a seeded generator, so every build writes the same `model.safetensors` and
`tokenizer.json`. The folder is an ordinary Hugging Face model folder (`AutoModelForCausalLM`,
`AutoTokenizer`, chat template, generation config), so the rest of the studio treats it like any Hub
model. It is built in a temporary sibling folder and renamed into place, so a crash never leaves half
a model, and two processes building at once both end up with the same complete folder.

torch, transformers and tokenizers are imported inside the functions: importing this module (to ask
`is_complete` or find the path) stays cheap for the UI process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_studio import paths
from llm_studio.errors import LLMStudioError

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

# Bump when anything below changes what gets built; an older folder is then rebuilt on first use.
BUILD_VERSION = 1
SEED = 1234
MARKER = "llm_studio_tiny.json"
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", MARKER)

VOCAB_SIZE = 2048
MAX_LENGTH = 2048
PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)  # ids 0..5, in this order

# Small enough for ~10k training tokens/s on 2 CPU cores, big enough to memorise hundreds of short
# answers in a minute or two. 2 KV heads: grouped-query attention like today's Llama, so adapter, merge
# and export code meets the real shapes. Untied embeddings: LoRA presets train `lm_head` via peft
# `modules_to_save`, simpler and safer when lm_head is not also the input embedding.
MODEL_DIMS: dict[str, Any] = dict(
    hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, tie_word_embeddings=False,
)

# GPT-2-style split, except that digits are single tokens (" 7", "1", "2"): arithmetic answers then
# share digit tokens instead of needing one token per number.
SPLIT_PATTERN = (r"'(?i:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                 r"|\s+(?!\S)|\s+")

# Every turn ends with <|end|> (= eos), so generation stops where an assistant turn ends. Assistant
# content and its <|end|> sit in {% generation %} so `return_assistant_tokens_mask=True` marks exactly
# the tokens to train on.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>' -}}"
    "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- elif message['role'] in ['system', 'user'] -%}"
    "{{- '<|' + message['role'] + '|>' + message['content'] + eos_token + '\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('Unknown role: ' + message['role'] + ' (use system, user or assistant)') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)

MODEL_CARD = """\
# tiny-llama (LLM Studio offline default)

A {params:,}-parameter Llama-architecture causal LM with **random weights** and a {vocab}-token byte-level
BPE tokenizer, built deterministically by `llm-studio tiny-model` (builder version {version}). It knows
nothing until fine-tuned; it exists so the whole studio works offline and on a CPU.
"""


def is_complete(model_dir: Path) -> bool:
    """True if `model_dir` holds a full tiny model written by this builder version."""
    model_dir = Path(model_dir)
    if not all((model_dir / f).is_file() for f in REQUIRED_FILES):
        return False
    try:
        marker = json.loads((model_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("build_version") == BUILD_VERSION


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer on the built-in corpus and wrap it for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from llm_studio.models.tokenizer_corpus import corpus_lines

    tok = Tokenizer(models.BPE())  # byte-level: every byte has a token, so no <unk> is needed
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # exact offsets for assistant masks
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS), model_max_length=MAX_LENGTH,
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = SEED) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama whose vocabulary matches `tokenizer` exactly."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_LENGTH, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="float32", **MODEL_DIMS,
    )
    model = LlamaForCausalLM(config)
    # Our own seeded init, not transformers' (which may change between versions or use global RNG).
    # Linear layers get std 1/sqrt(fan_in), not Llama's 0.02: with 0.02 the random blocks barely touch
    # the residual stream, the last hidden state is little more than the current token's embedding, and
    # LoRA + a trained lm_head cannot read the question from it (loss 4.8 -> 1.7 and no correct answers
    # in the time 1/sqrt(fan_in) reaches loss 0.2 and ~90% exact match on the training questions).
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
                continue
            std = 0.02 if name.endswith(("embed_tokens.weight", "lm_head.weight")) else param.shape[1] ** -0.5
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    return model.eval()


def _finish_files(folder: Path) -> None:
    """Make every file world-readable (some writers create 0600 files) and flush it to disk, so the
    rename publishes a folder that any reader can load and that survives a crash."""
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o644)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _write(folder: Path) -> None:
    from transformers.utils import logging as hf_logging

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a one-file save needs no "Writing model shards" bar
    try:
        model.save_pretrained(folder)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    (folder / "README.md").write_text(MODEL_CARD.format(params=params, vocab=len(tokenizer),
                                                        version=BUILD_VERSION))
    marker = {"build_version": BUILD_VERSION, "seed": SEED, "params": params, "vocab_size": len(tokenizer),
              **MODEL_DIMS}
    (folder / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")  # written last
    _finish_files(folder)


def build_tiny_model(out_dir: Path | None = None, force: bool = False) -> Path:
    """Build the tiny model into `out_dir` (default: the workspace's models/tiny-llama); return the path.

    An already complete folder is kept unless `force`. The result is the same bytes on every build.
    """
    out_dir = Path(out_dir) if out_dir is not None else paths.tiny_model_dir()
    out_dir = out_dir.expanduser().resolve()
    if is_complete(out_dir) and not force:
        return out_dir
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_folders(out_dir)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.build-"))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the published model folder is an ordinary one
            _write(tmp)
            _publish(tmp, out_dir, replace=force)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful rename
    except OSError as e:
        raise LLMStudioError(f"cannot build the tiny model in {out_dir}: {e}") from e
    return out_dir


def _remove_stale_temp_folders(out_dir: Path, older_than_s: float = 3600) -> None:
    """Delete temp folders that a killed build left beside `out_dir` (an hour old: surely not in use)."""
    now = time.time()
    for pattern in (f".{out_dir.name}.build-*", f".{out_dir.name}.old-*"):
        for folder in out_dir.parent.glob(pattern):
            try:
                if now - folder.stat().st_mtime > older_than_s:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                pass  # removed by a concurrent build


def _publish(tmp: Path, out_dir: Path, replace: bool) -> None:
    """Rename the finished `tmp` folder to `out_dir`.

    A partial or outdated folder is moved aside first; a complete one is only replaced when `replace`,
    so a concurrent build that finished first (identical bytes) is left alone for its readers.
    """
    trash = None
    if out_dir.exists() and (replace or not is_complete(out_dir)):
        trash = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        try:
            os.replace(out_dir, trash / "model")
        except FileNotFoundError:
            pass  # another process moved it away meanwhile
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not is_complete(out_dir):  # a concurrent build won the rename: its folder is identical
            raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def ensure_tiny_model() -> Path:
    """The workspace's tiny model folder, built first if missing or from an older builder version."""
    return build_tiny_model(paths.tiny_model_dir())
