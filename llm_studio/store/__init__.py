"""The studio's state in SQLite: the only package that speaks SQL. Callers get plain records back.

    from llm_studio.store import Store, MetricPoint
    store = Store()   # opens and migrates $LLM_STUDIO_HOME/llm_studio.db
"""

from llm_studio.store.jobs import ACTIVE_JOB_STATUSES
from llm_studio.store.records import (
    EXPERIMENT_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    DatasetRecord,
    EventRecord,
    ExperimentRecord,
    JobRecord,
    MetricPoint,
)
from llm_studio.store.store import Store

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "EXPERIMENT_STATUSES",
    "JOB_KINDS",
    "JOB_STATUSES",
    "DatasetRecord",
    "EventRecord",
    "ExperimentRecord",
    "JobRecord",
    "MetricPoint",
    "Store",
]
