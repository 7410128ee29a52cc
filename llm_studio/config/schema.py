"""The experiment config: one typed schema for YAML files, `--set` overrides, the UI form and validation.

Every field carries UI metadata (label, help, range or choices, step, advanced flag) under
`json_schema_extra["ui"]`, read by `ui_fields()` so the UI can generate its form without knowing the
sections by heart. Unknown keys are errors (`extra="forbid"`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def setting(default: Any, label: str, help: str, *, ge: float | None = None, le: float | None = None,
            gt: float | None = None, step: float | None = None, advanced: bool = False,
            choices: list[Any] | None = None, visible_if: dict[str, Any] | None = None) -> Any:
    """A schema field with its UI metadata. Range bounds are both validated and shown in the form."""
    ui: dict[str, Any] = {"label": label, "help": help, "advanced": advanced}
    if step is not None:
        ui["step"] = step
    if choices is not None:
        ui["choices"] = choices
    if visible_if is not None:
        ui["visible_if"] = visible_if
    for key, bound in (("min", ge if ge is not None else gt), ("max", le)):
        if bound is not None:
            ui[key] = bound
    kwargs = {k: v for k, v in (("ge", ge), ("le", le), ("gt", gt)) if v is not None}
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda d=default: type(d)(d), description=help,
                     json_schema_extra={"ui": ui}, **kwargs)
    return Field(default, description=help, json_schema_extra={"ui": ui}, **kwargs)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(Section):
    name: str = setting("sample-qa", "Dataset", "Name of an imported dataset (see the Datasets page).")
    max_length: int = setting(512, "Max length", "Longest sequence in tokens, prompt and answer together.",
                              ge=16, le=131072, step=16)
    overlong: Literal["truncate", "drop"] = setting(
        "truncate", "Over-long examples", "Truncate examples longer than max length, or drop them.",
        choices=["truncate", "drop"])
    system_prompt: str | None = setting(None, "System prompt",
                                        "Prepended as a system turn when a conversation has none.")
    prompt_template: str = setting(
        "<|user|>\n{prompt}\n<|assistant|>\n", "Prompt template",
        "Used only when the tokenizer has no chat template; {prompt} is the user turn.", advanced=True)
    mask_prompt: bool = setting(True, "Train on answers only",
                                "Only assistant turns are labels; turn off to train on prompts too.")
    max_validation_rows: int = setting(0, "Max validation rows", "0 uses the whole validation split.",
                                       ge=0, advanced=True)


class ModelConfig(Section):
    backbone: str = setting("tiny-llama", "Backbone",
                            "A Hugging Face model id, a local folder, or 'tiny-llama' (offline default).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto", "Weights dtype", "'auto' picks bfloat16 on GPUs that support it and float32 on CPU.",
        choices=["auto", "float32", "bfloat16", "float16"])
    quantization: Literal["none", "8bit", "4bit"] = setting(
        "none", "Quantization", "Load the backbone in 8-bit or 4-bit nf4 (bitsandbytes); 4-bit + LoRA is QLoRA.",
        choices=["none", "8bit", "4bit"])
    gradient_checkpointing: bool = setting(True, "Gradient checkpointing",
                                           "Recompute each layer's activations in the backward pass: about half "
                                           "the activation memory for ~20-30% more compute. On by default (as in "
                                           "TRL, H2O LLM Studio, Unsloth): running out of memory costs more.")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = setting(
        "auto", "Attention", "'auto' uses flash attention when installed on a GPU, else SDPA.",
        choices=["auto", "eager", "sdpa", "flash_attention_2"], advanced=True)
    trust_remote_code: bool = setting(False, "Trust remote code",
                                      "Allow model code from the hub repository to run.", advanced=True)


class AdapterConfig(Section):
    type: Literal["none", "lora", "dora"] = setting(
        "lora", "Adapter", "'none' trains all weights; LoRA/DoRA train small adapters.",
        choices=["none", "lora", "dora"])
    r: int = setting(16, "LoRA rank", "Adapter rank; higher learns more and uses more memory.",
                     ge=1, le=1024, step=1, visible_if={"adapter.type": ["lora", "dora"]})
    alpha: float = setting(32, "LoRA alpha", "Scale of the adapter update; usually 2 x rank.",
                           gt=0, le=4096, step=1, visible_if={"adapter.type": ["lora", "dora"]})
    dropout: float = setting(0.05, "LoRA dropout", "Dropout on the adapter input.", ge=0, le=0.9, step=0.01,
                             visible_if={"adapter.type": ["lora", "dora"]})
    target_modules: list[str] = setting(["all-linear"], "Target modules",
                                        "Module names to adapt, or 'all-linear'.", advanced=True)
    modules_to_save: list[str] = setting([], "Modules to train fully",
                                         "Trained in full beside the adapter (e.g. lm_head).", advanced=True)


class TrainingConfig(Section):
    epochs: float = setting(1.0, "Epochs", "Passes over the training data (ignored when max steps > 0).",
                            gt=0, le=1000, step=0.5)
    max_steps: int = setting(0, "Max steps", "Stop after this many optimizer steps; 0 uses epochs.", ge=0)
    learning_rate: float = setting(2e-4, "Learning rate", "Peak learning rate after warmup.",
                                   gt=0, le=1.0, step=1e-5)
    batch_size: int = setting(8, "Batch size", "Sequences (or packed rows) per device per step.",
                              ge=1, le=4096, step=1)
    gradient_accumulation: int = setting(1, "Gradient accumulation", "Micro-batches per optimizer step.",
                                         ge=1, le=1024, step=1)
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = setting(
        "adamw", "Optimizer", "8-bit and paged AdamW (bitsandbytes) save memory on GPUs.",
        choices=["adamw", "adamw_8bit", "paged_adamw_8bit"])
    scheduler: Literal["constant", "linear", "cosine"] = setting(
        "cosine", "LR schedule", "Learning rate after warmup.", choices=["constant", "linear", "cosine"])
    warmup_ratio: float = setting(0.05, "Warmup ratio", "Fraction of steps that ramp the learning rate up.",
                                  ge=0, le=0.5, step=0.01)
    weight_decay: float = setting(0.0, "Weight decay", "AdamW weight decay.", ge=0, le=1, step=0.01,
                                  advanced=True)
    max_grad_norm: float = setting(1.0, "Gradient clipping", "Clip the gradient norm; 0 turns clipping off.",
                                   ge=0, le=1000, step=0.1, advanced=True)
    packing: bool = setting(True, "Sample packing",
                            "Pack several examples into each row (no attention across examples); less padding.")
    group_by_length: bool = setting(True, "Group by length", "Batch examples of similar length together.",
                                    advanced=True)
    seed: int = setting(42, "Seed", "Seeds data order, initialisation and sampling.", ge=0)
    eval_every: int = setting(0, "Evaluate every", "Evaluate every N steps; 0 evaluates at each epoch end.",
                              ge=0)
    save_every: int = setting(0, "Checkpoint every", "Save every N steps; 0 saves at each evaluation.", ge=0,
                              advanced=True)
    keep_checkpoints: int = setting(2, "Checkpoints kept", "Keep the last K checkpoints (and the best).",
                                    ge=1, le=100, advanced=True)
    log_every: int = setting(5, "Log every", "Write train metrics every N steps.", ge=1, advanced=True)


class EvaluationConfig(Section):
    metrics: list[Literal["loss", "perplexity", "bleu", "exact_match"]] = setting(
        ["loss", "perplexity", "bleu", "exact_match"], "Metrics", "Validation metrics to compute.",
        choices=["loss", "perplexity", "bleu", "exact_match"])
    best_metric: Literal["loss", "perplexity", "bleu", "exact_match"] = setting(
        "loss", "Best checkpoint by", "Metric that picks the best checkpoint.",
        choices=["loss", "perplexity", "bleu", "exact_match"], advanced=True)
    num_predictions: int = setting(64, "Predictions", "Validation rows to generate answers for.",
                                   ge=0, le=100000)


class GenerationConfig(Section):
    max_new_tokens: int = setting(64, "Max new tokens", "Longest generated answer.", ge=1, le=32768)
    temperature: float = setting(0.0, "Temperature", "0 is greedy decoding.", ge=0, le=5, step=0.05)
    top_p: float = setting(1.0, "Top-p", "Nucleus sampling mass.", gt=0, le=1, step=0.05)
    top_k: int = setting(0, "Top-k", "Sample from the k most likely tokens; 0 turns it off.", ge=0)
    repetition_penalty: float = setting(1.0, "Repetition penalty", "Above 1 discourages repeats.",
                                        ge=0.5, le=3, step=0.05, advanced=True)


class EnvironmentConfig(Section):
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "Device", "'auto' uses GPUs when present.",
                                                     choices=["auto", "cpu", "cuda"])
    num_processes: int = setting(1, "Processes", "Training processes (one per GPU; DDP across them).",
                                 ge=1, le=64)
    gpus: list[int] = setting([], "GPUs", "GPU indices to use; empty lets the scheduler choose.",
                              advanced=True)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = setting(
        "auto", "Mixed precision", "'auto' uses bf16 autocast on GPUs that support it, none on CPU.",
        choices=["auto", "no", "bf16", "fp16"])
    deepspeed_stage: Literal[0, 2, 3] = setting(0, "DeepSpeed ZeRO stage", "0 turns DeepSpeed off.",
                                                choices=[0, 2, 3], advanced=True)
    compile: bool = setting(False, "torch.compile", "Compile the model (slow start, faster steps on GPU).",
                            advanced=True)
    num_threads: int = setting(0, "CPU threads", "Torch threads per process; 0: torch's default, or the "
                                                 "cores split evenly when several CPU runs may share them.",
                               ge=0, advanced=True)


class LoggingConfig(Section):
    neptune_project: str | None = setting(None, "Neptune project",
                                          "workspace/project; the token comes from Settings or NEPTUNE_API_TOKEN.")
    neptune_mode: Literal["async", "sync", "offline", "debug"] = setting(
        "async", "Neptune mode", "'offline' keeps the run on disk.", choices=["async", "sync", "offline", "debug"],
        advanced=True)


class ExperimentConfig(Section):
    description: str = setting("", "Description", "What this experiment tries.")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        if self.model.quantization != "none" and self.adapter.type == "none":
            raise ValueError("model.quantization: quantized weights cannot be trained in full; "
                             "use adapter.type lora or dora (QLoRA)")
        if self.evaluation.best_metric not in self.evaluation.metrics:
            raise ValueError(f"evaluation.best_metric: {self.evaluation.best_metric!r} is not in evaluation.metrics")
        return self


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation for name, info in ExperimentConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, Section)
}


def ui_fields() -> list[dict[str, Any]]:
    """Every leaf field as a dict for form generation: path, section, type, default and UI metadata."""
    out: list[dict[str, Any]] = []

    def walk(model: type[BaseModel], prefix: str, section: str) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, Section):
                walk(ann, f"{prefix}{name}.", name)
                continue
            extra = info.json_schema_extra or {}
            out.append({"path": f"{prefix}{name}", "section": section, "annotation": ann,
                        "default": info.get_default(call_default_factory=True), **extra.get("ui", {})})

    walk(ExperimentConfig, "", "general")
    return out
