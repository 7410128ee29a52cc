"""Datasets: import files into the normalized format, read them back, and the shipped sample.

Normalized format (`$LLM_STUDIO_HOME/datasets/<name>/`): `data.parquet` and `validation.parquet`
with columns `id` (string) and `messages` (list<struct<role, content>>: optional leading system turn,
then user/assistant alternating, ending with assistant), plus `dataset.yaml` (sources, format,
mapping, counts, statistics). Importing needs neither torch nor transformers.
"""

from llm_studio.data.formats import detect_mapping, mapping_format, read_table
from llm_studio.data.ingest import (dataset_dir, delete_dataset, import_dataset, preview_file, read_records,
                                    read_split)
from llm_studio.data.sample import SAMPLE_NAME, ensure_sample_dataset

__all__ = [
    "SAMPLE_NAME", "dataset_dir", "delete_dataset", "detect_mapping", "ensure_sample_dataset",
    "import_dataset", "mapping_format", "preview_file", "read_records", "read_split", "read_table",
]
