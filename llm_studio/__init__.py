"""LLM Studio: the fine-tuning engine, importable without the UI."""
import os as _os
import shutil as _shutil

__version__ = "0.1.0"

# transformers imports DeepSpeed when it is installed, and DeepSpeed's accelerator probe then warns on every
# CPU-only start ("we were unable to detect" a GPU), in every training log. Without a visible NVIDIA GPU
# the answer is known: say so. A GPU machine (nvidia-smi present) keeps DeepSpeed's own detection.
if "DS_ACCELERATOR" not in _os.environ and (_shutil.which("nvidia-smi") is None
                                            or _os.environ.get("CUDA_VISIBLE_DEVICES") == ""):
    _os.environ["DS_ACCELERATOR"] = "cpu"
