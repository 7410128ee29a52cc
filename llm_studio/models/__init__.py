"""Models: backbone resolution and loading, adapters, and the offline tiny-model builder.

Submodules import torch/transformers lazily, so importing this package stays cheap for the UI.
"""

from llm_studio.models.backbone import TINY_BACKBONE, resolve_backbone
from llm_studio.models.tiny import build_tiny_model, ensure_tiny_model

__all__ = ["TINY_BACKBONE", "build_tiny_model", "ensure_tiny_model", "resolve_backbone"]
