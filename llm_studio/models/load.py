"""Load a backbone for training: device, dtype, bitsandbytes 4/8-bit, LoRA/DoRA (peft), gradient
checkpointing, attention implementation, torch.compile.

`hardware_problems(cfg)` is checked before any work: an option this machine cannot run (fp16 on a CPU,
flash attention without CUDA, 8-bit optimizers without CUDA, ...) is reported with the field that asks
for it. `load_backbone(...)` returns the model (adapters attached) and its tokenizer.

Trade-offs worth knowing:
- dtype 'auto' is bfloat16 on a CUDA GPU that supports it, else float32: bf16 matmuls on a CPU are
  roughly 25x slower than fp32 there.
- 4-bit nf4 and 8-bit loading run on CPU too (bitsandbytes >= 0.45 has CPU kernels); slow, but they
  make QLoRA testable without a GPU.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_studio.config.schema import AdapterConfig, EnvironmentConfig, ExperimentConfig, ModelConfig
from llm_studio.errors import LLMStudioError

log = logging.getLogger(__name__)
# bitsandbytes warns on import that an optional CPU kernel package ('kernels') is missing and suggests a
# pip install; its pure-torch CPU path works (4-bit QLoRA steps run), so the hint only misleads users.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module          # the trainable module (a PeftModel when an adapter is used)
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype              # weights dtype (before quantization)
    backbone: str                   # resolved local folder or hub id


# --- what this machine can run ---------------------------------------------------------------------

def cuda_available() -> bool:
    return torch.cuda.is_available()


def bf16_supported() -> bool:
    return cuda_available() and torch.cuda.is_bf16_supported()


def resolve_device(env: EnvironmentConfig) -> torch.device:
    if env.device == "cpu" or (env.device == "auto" and not cuda_available()):
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device() if cuda_available() else 0)


def resolve_dtype(model_cfg: ModelConfig, device: torch.device) -> torch.dtype:
    if model_cfg.dtype != "auto":
        return _DTYPES[model_cfg.dtype]
    return torch.bfloat16 if device.type == "cuda" and bf16_supported() else torch.float32


def autocast_dtype(env: EnvironmentConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for forward passes, or None for no autocast (always None on CPU)."""
    if device.type != "cuda" or env.mixed_precision == "no":
        return None
    if env.mixed_precision == "fp16":
        return torch.float16
    if env.mixed_precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported() else None  # 'auto'


def resolve_attn_implementation(model_cfg: ModelConfig, device: torch.device) -> str:
    if model_cfg.attn_implementation != "auto":
        return model_cfg.attn_implementation
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def hardware_problems(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(field, reason) for every option this machine cannot run; empty when all is well."""
    problems: list[tuple[str, str]] = []
    env, model, training = cfg.environment, cfg.model, cfg.training
    cuda = cuda_available()
    if env.device == "cuda" and not cuda:
        problems.append(("environment.device", "'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'"))
    on_gpu = cuda and env.device != "cpu"
    if env.mixed_precision in ("bf16", "fp16") and not on_gpu:
        problems.append(("environment.mixed_precision",
                         f"{env.mixed_precision} mixed precision needs a CUDA GPU and this run trains on CPU; "
                         "use 'auto' or 'no'"))
    elif env.mixed_precision == "bf16" and not bf16_supported():
        problems.append(("environment.mixed_precision", "this GPU does not support bf16; use 'fp16' or 'auto'"))
    if model.dtype == "float16" and not on_gpu:
        problems.append(("model.dtype", "float16 weights need a CUDA GPU (on CPU use 'auto' or 'float32')"))
    if model.dtype == "bfloat16" and on_gpu and not bf16_supported():
        problems.append(("model.dtype", "this GPU does not support bfloat16; use 'auto', 'float32' or 'float16'"))
    if model.attn_implementation == "flash_attention_2":
        if not on_gpu:
            problems.append(("model.attn_implementation", "flash_attention_2 needs a CUDA GPU; use 'auto' or 'sdpa'"))
        elif importlib.util.find_spec("flash_attn") is None:
            problems.append(("model.attn_implementation",
                             "flash_attention_2 needs the flash-attn package, which is not installed; use 'auto'"))
    if training.optimizer in ("adamw_8bit", "paged_adamw_8bit") and not on_gpu:
        problems.append(("training.optimizer",
                         f"{training.optimizer} (bitsandbytes) needs a CUDA GPU; use 'adamw' on CPU"))
    if model.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        problems.append(("model.quantization", "needs the bitsandbytes package, which is not installed"))
    # num_processes > 1 runs DDP under torchrun (llm_studio/train/distributed.py), or ZeRO with deepspeed_stage
    if env.num_processes > 1 and on_gpu and env.num_processes > torch.cuda.device_count():
        problems.append(("environment.num_processes", f"{env.num_processes} processes (one per GPU) but only "
                         f"{torch.cuda.device_count()} CUDA GPU(s) are visible"))
    if env.deepspeed_stage:
        problems += _deepspeed_problems(env, model, on_gpu)
    if env.gpus and not cuda:
        problems.append(("environment.gpus", "GPU indices were given but no CUDA GPU is visible"))
    return problems


def _deepspeed_problems(env: EnvironmentConfig, model: ModelConfig, on_gpu: bool) -> list[tuple[str, str]]:
    field = "environment.deepspeed_stage"
    if importlib.util.find_spec("deepspeed") is None:
        return [(field, "DeepSpeed is not installed (`DS_BUILD_OPS=0 pip install deepspeed`); use 0 "
                        "(multi-process DDP: environment.num_processes)")]
    problems = []
    # fp16 autocast needs a loss scaler that DeepSpeed's ZeRO optimizer would have to own
    if on_gpu and (env.mixed_precision == "fp16" or (env.mixed_precision == "auto" and not bf16_supported())):
        problems.append(("environment.mixed_precision", "DeepSpeed runs use bf16 or fp32 autocast; this GPU "
                         "has no bf16: set mixed_precision 'no' or deepspeed_stage 0"))
    if model.quantization != "none" and env.deepspeed_stage == 3:
        problems.append((field, "ZeRO-3 cannot shard 4/8-bit quantized weights; use stage 2 or quantization none"))
    if env.compile:
        problems.append(("environment.compile", "torch.compile is not used with DeepSpeed; turn one of them off"))
    return problems


# --- loading ---------------------------------------------------------------------------------------

def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # padding positions are masked (attention and labels), so any existing token will do
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


def _quantization_config(model_cfg: ModelConfig, device: torch.device) -> Any:
    from transformers import BitsAndBytesConfig

    if model_cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if device.type == "cuda" and bf16_supported() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def lora_config(adapter_cfg: AdapterConfig) -> Any:
    from peft import LoraConfig

    targets: str | list[str] = adapter_cfg.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"  # every linear layer except the output head
    return LoraConfig(r=adapter_cfg.r, lora_alpha=adapter_cfg.alpha, lora_dropout=adapter_cfg.dropout,
                      target_modules=targets, modules_to_save=list(adapter_cfg.modules_to_save) or None,
                      use_dora=adapter_cfg.type == "dora", bias="none", task_type="CAUSAL_LM")


def load_backbone(model_cfg: ModelConfig, adapter_cfg: AdapterConfig, env: EnvironmentConfig, *,
                  weights_from: Path | None = None) -> LoadedModel:
    """The model ready to train, on its device, and its tokenizer.

    `weights_from` is a checkpoint folder to continue from: full weights are loaded from it instead of
    the backbone; adapter weights are loaded into the freshly attached adapter.
    """
    from transformers import AutoModelForCausalLM

    from llm_studio.models.backbone import resolve_backbone

    backbone = resolve_backbone(model_cfg.backbone)
    device = resolve_device(env)
    dtype = resolve_dtype(model_cfg, device)
    try:
        tokenizer = load_tokenizer(backbone, model_cfg.trust_remote_code)
    except OSError as e:  # not a folder, not on the Hub, or offline without a cached copy
        raise LLMStudioError(f"cannot load backbone {model_cfg.backbone!r}: {e}") from e

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code,
                              "attn_implementation": resolve_attn_implementation(model_cfg, device)}
    quantized = model_cfg.quantization != "none"
    if quantized:
        kwargs["quantization_config"] = _quantization_config(model_cfg, device)
    if quantized or device.type == "cuda":
        kwargs["device_map"] = {"": device}  # load straight onto the device, no full copy in CPU memory
    full_weights = weights_from is not None and adapter_cfg.type == "none"
    model = AutoModelForCausalLM.from_pretrained(str(weights_from) if full_weights else backbone, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    model.config.use_cache = False  # the KV cache only helps generation; evaluation turns it back on

    if quantized and device.type == "cpu":
        # bitsandbytes repacks 4-bit weights in place for a faster CPU path the first time a module
        # runs in eval mode; that path requires out_features divisible by 32 (AssertionError otherwise,
        # e.g. the tiny model's 688-wide MLP) and leaves training-time weights in another format.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if quantized:
        # freezes the base, upcasts norms/embeddings to fp32 and enables checkpointing if asked
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=model_cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    elif model_cfg.gradient_checkpointing:
        enable_checkpointing(model)

    if adapter_cfg.type != "none":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(adapter_cfg))
        if weights_from is not None:
            _load_adapter_weights(model, Path(weights_from), device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("loaded %s on %s (%s%s): %s trainable of %s parameters", backbone, device, str(dtype).replace("torch.", ""),
             f", {model_cfg.quantization}" if quantized else "", f"{trainable:,}", f"{total:,}")
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=dtype, backbone=backbone)


def _load_adapter_weights(model: torch.nn.Module, folder: Path, device: torch.device) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(folder / "adapter_model.safetensors"), device=str(device))
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match the adapter config: unexpected {unexpected[:3]}")


# non-reentrant: works with frozen embeddings (LoRA) and DDP without enable_input_require_grads
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)


def maybe_compile(model: torch.nn.Module, env: EnvironmentConfig) -> torch.nn.Module:
    """torch.compile the module the loop calls (slow first steps, faster later on GPU); saving and
    generation keep using the uncompiled model, which shares its parameters."""
    if not env.compile:
        return model
    return torch.compile(model)  # type: ignore[return-value]
