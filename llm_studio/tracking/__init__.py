"""Experiment tracking: one Reporter fans metrics, logs and heartbeats out to the store, the terminal,
train.log and (optionally) Neptune."""

from llm_studio.tracking.reporter import NeptuneSink, ProgressLine, Reporter, neptune_problems

__all__ = ["Reporter", "ProgressLine", "NeptuneSink", "neptune_problems"]
