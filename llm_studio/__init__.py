"""LLM Studio: the fine-tuning engine, importable without the UI."""
__version__ = "0.1.0"
