"""Export an experiment as a self-contained Hugging Face model folder.

    from llm_studio.export.export import export_experiment
    export_experiment("my-run", "out/my-model", checkpoint="best", zip=True)   # -> Path("out/my-model")

The folder holds the merged weights (LoRA/DoRA merged into the base with `merge_and_unload`) as
safetensors, config + generation config, the tokenizer with its chat template, and a model card
(README.md). It loads with plain `AutoModelForCausalLM` / `AutoTokenizer`, no peft needed. The folder is
built in a hidden temp sibling and renamed into place, so a failed export leaves nothing half-written.

`export_adapter` writes only the LoRA/DoRA adapter of a checkpoint (plus tokenizer and model card): a few
MB that `peft` loads on top of the base model, with no merge and no model loaded here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from llm_studio.errors import LLMStudioError
from llm_studio.paths import replace_folder
from llm_studio.export.loading import (ExperimentModel, experiment_config, experiment_dir, load_experiment_model,
                                       read_summary, resolve_checkpoint)

# checkpoint files that belong to training, not to the adapter a user downloads
_TRAINING_ONLY = {"training_state.pt", "state.json", "zero"}


def export_experiment(name: str, output_dir: str | Path, *, checkpoint: str = "best", dtype: str = "float32",
                      zip: bool = False, overwrite: bool = True, license: str | None = None) -> Path:
    """Write the merged model of experiment `name` to `output_dir` (and OUTPUT.zip with `zip`)."""
    output = _check_output(output_dir, overwrite)
    loaded = load_experiment_model(name, checkpoint, dtype=dtype)
    model = loaded.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        _write_generation_config(model, loaded, tmp)
        (tmp / "README.md").write_text(model_card(name, loaded, license=license), encoding="utf-8")

    _publish(output, write)
    if zip:
        zip_folder(output, output.parent / f"{output.name}.zip")
    return output


def export_adapter(name: str, output_dir: str | Path, *, checkpoint: str = "best", zip: bool = False,
                   overwrite: bool = True, license: str | None = None) -> Path:
    """Write the adapter of experiment `name`'s checkpoint to `output_dir` (and OUTPUT.zip with `zip`)."""
    output = _check_output(output_dir, overwrite)
    ckpt = resolve_checkpoint(name, checkpoint)
    if not (ckpt / "adapter_config.json").is_file():
        raise LLMStudioError(f"experiment {name!r} trained the whole model (no adapter): export the merged model")
    exp_dir = experiment_dir(name)
    cfg = experiment_config(exp_dir)
    from llm_studio.train.checkpoint import read_state

    backbone = read_state(ckpt).get("backbone") or cfg.model.backbone
    info = ExperimentModel(model=None, tokenizer=None, cfg=cfg, checkpoint=ckpt, backbone=backbone, exp_dir=exp_dir)

    def write(tmp: Path) -> None:
        for p in ckpt.iterdir():
            if p.name not in _TRAINING_ONLY and p.is_file():
                shutil.copy2(p, tmp / p.name)
        (tmp / "README.md").write_text(model_card(name, info, adapter_only=True, license=license), encoding="utf-8")

    _publish(output, write)
    if zip:
        zip_folder(output, output.parent / f"{output.name}.zip")
    return output


def _check_output(output_dir: str | Path, overwrite: bool) -> Path:
    output = Path(output_dir).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise LLMStudioError(f"{output} exists and is not a folder")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise LLMStudioError(f"{output} is not empty")
    return output


def _publish(output: Path, write: Any) -> None:
    """`write(tmp)` fills a hidden sibling folder, which then replaces `output` in one rename."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        replace_folder(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip `folder`'s files (names relative to it) to `target`, atomically."""
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(folder).as_posix())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _write_generation_config(model: Any, loaded: ExperimentModel, folder: Path) -> None:
    """The run's generation settings as the model's defaults (greedy when temperature is 0)."""
    from transformers import GenerationConfig

    gen = loaded.cfg.generation
    tok = loaded.tokenizer
    base = getattr(model, "generation_config", None)
    eos: list[int] = []
    base_eos = getattr(base, "eos_token_id", None)
    for e in ([base_eos] if isinstance(base_eos, int) else list(base_eos or [])) + [tok.eos_token_id]:
        if e is not None and e not in eos:
            eos.append(e)
    kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty,
                              "do_sample": gen.temperature > 0, "pad_token_id": tok.pad_token_id,
                              "bos_token_id": tok.bos_token_id,
                              "eos_token_id": eos[0] if len(eos) == 1 else (eos or None)}
    if gen.temperature > 0:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or None)
    GenerationConfig(**kwargs).save_pretrained(folder)


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def check_license(value: str) -> str:
    """A Hub license id (apache-2.0, mit, llama3.1, cc-by-nc-4.0...), or a clear error."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", value):
        raise LLMStudioError(f"license {value!r} is not a Hub license id (lower case, like apache-2.0 or mit)")
    return value


def base_license(backbone: str) -> str | None:
    """The `license` in the base model's README front matter: a local folder's, or a Hub model's when its
    README is in the local Hugging Face cache (nothing is downloaded)."""
    import yaml

    local = Path(backbone) / "README.md"
    readme: Path | None = local
    if not local.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(backbone, "README.md")
        except Exception:  # not a repo id (a missing local path): no license to read
            cached = None
        readme = Path(cached) if isinstance(cached, str) else None
    try:
        text = readme.read_text(encoding="utf-8") if readme else ""
        meta = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    except (OSError, IndexError, yaml.YAMLError):
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def model_card(name: str, loaded: ExperimentModel, adapter_only: bool = False, license: str | None = None) -> str:
    """README.md: YAML front matter for the Hub, the training setup, final metrics and a usage snippet
    (loading the merged model, or with `adapter_only` the adapter on top of its base with peft). The
    license is `license`, else the base model's (a fine-tune inherits its terms), else 'other'."""
    cfg = loaded.cfg
    summary = read_summary(loaded.exp_dir)
    base = cfg.model.backbone
    adapter = cfg.adapter.type
    tags = ["llm-studio", "fine-tuned", "text-generation"] + ([adapter] if adapter != "none" else [])
    library = "peft" if adapter_only else "transformers"
    lines = ["---", f"base_model: {_yaml_str(base)}", f"library_name: {library}", "pipeline_tag: text-generation",
             "tags:"] + [f"- {t}" for t in tags]
    license = license or base_license(str(loaded.backbone)) or "other"
    lines += ["datasets:", f"- {_yaml_str(cfg.dataset.name)}", f"license: {_yaml_str(license)}", "---", "",
              f"# {name}", "",
              f"Fine-tuned from `{base}` on the dataset `{cfg.dataset.name}` with LLM Studio"
              + (f" (the {adapter.upper()} adapter only: load it on top of the base model with peft)" if adapter_only
                 else f" ({adapter.upper()} adapter merged into the weights)" if adapter != "none" else "") + ".", "",
              "## Training", "", "| setting | value |", "| --- | --- |"]
    tr = cfg.training
    rows = {"checkpoint": loaded.checkpoint.name, "adapter": adapter,
            "epochs": summary.get("epochs", tr.epochs), "steps": summary.get("global_step", tr.max_steps),
            "learning rate": tr.learning_rate, "batch size": tr.batch_size,
            "gradient accumulation": tr.gradient_accumulation, "optimizer": tr.optimizer,
            "max length": cfg.dataset.max_length, "seed": tr.seed}
    if adapter != "none":
        rows.update({"LoRA r": cfg.adapter.r, "LoRA alpha": cfg.adapter.alpha})
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    metrics = summary.get("final_metrics") or {}
    if metrics:
        lines += ["", "## Final metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                  for k, v in sorted(metrics.items())]
    load = (["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
             'path = "."  # this folder, or the Hub repo id (the base model is read from adapter_config.json)',
             "tokenizer = AutoTokenizer.from_pretrained(path)",
             "model = AutoPeftModelForCausalLM.from_pretrained(path)"] if adapter_only else
            ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             'path = "."  # this folder, or the Hub repo id',
             "tokenizer = AutoTokenizer.from_pretrained(path)",
             "model = AutoModelForCausalLM.from_pretrained(path)"])
    lines += ["", "## Usage", "", "```python", *load,
              'messages = [{"role": "user", "content": "Hello!"}]',
              "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\","
              " return_dict=True)",
              "out = model.generate(**inputs, max_new_tokens=64)",
              "print(tokenizer.decode(out[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True))",
              "```", ""]
    return "\n".join(lines)
