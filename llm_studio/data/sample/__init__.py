"""The shipped sample dataset `sample-qa` (files made by `python -m llm_studio.data.sample.generate`).

`ensure_sample_dataset()` imports it on first use, so a fresh workspace can train offline at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from llm_studio.errors import DatasetError, NotFoundError

if TYPE_CHECKING:
    from llm_studio.store import Store
    from llm_studio.store.records import DatasetRecord

SAMPLE_NAME = "sample-qa"
SAMPLE_DIR = Path(__file__).resolve().parent
SAMPLE_TRAIN = SAMPLE_DIR / "train.csv"
SAMPLE_VALIDATION = SAMPLE_DIR / "validation.csv"
SAMPLE_MAPPING = {"id": "id", "parent_id": "parent_id", "system": "system", "prompt": "prompt",
                  "answer": "answer"}


def ensure_sample_dataset(store: Store | None = None) -> DatasetRecord:
    """The `sample-qa` record, importing the shipped files first if it is not registered (idempotent)."""
    from llm_studio.data.ingest import import_dataset

    if store is None:
        from llm_studio.store import Store
        with Store() as own:
            return ensure_sample_dataset(own)
    try:
        return store.get_dataset(SAMPLE_NAME)
    except NotFoundError:
        pass
    adopted = _adopt_existing_folder(store, min_age_s=60)
    if adopted is not None:
        return adopted
    try:
        return import_dataset(SAMPLE_TRAIN, SAMPLE_NAME, validation_path=SAMPLE_VALIDATION,
                              mapping=SAMPLE_MAPPING, store=store)
    except DatasetError:
        # Another process may be importing it right now: its folder appears just before its row.
        for _ in range(20):
            try:
                return store.get_dataset(SAMPLE_NAME)
            except NotFoundError:
                time.sleep(0.25)
        adopted = _adopt_existing_folder(store)
        if adopted is None:
            raise
        return adopted


def _adopt_existing_folder(store: Store, min_age_s: float = 0) -> DatasetRecord | None:
    """Register a complete sample folder that has no store row (database reset, or a crash mid-import).

    A folder younger than `min_age_s` may belong to an import still running elsewhere: leave it be.
    """
    from llm_studio.data.ingest import SPLIT_FILES, dataset_dir

    folder = dataset_dir(SAMPLE_NAME)
    if not all((folder / f).is_file() for f in (*SPLIT_FILES.values(), "dataset.yaml")):
        return None
    if time.time() - (folder / "dataset.yaml").stat().st_mtime < min_age_s:
        return None
    info = yaml.safe_load((folder / "dataset.yaml").read_text(encoding="utf-8"))
    return store.add_dataset(SAMPLE_NAME, str(folder), info["format"], info["mapping"], info["counts"]["train"],
                             info["counts"]["validation"], info["statistics"])
