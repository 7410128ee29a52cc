"""Where a chat service runs its model: a GPU that no training run holds, else a clear refusal.

Training jobs record the GPUs the scheduler granted them (`resources["gpus"]`, indices as this machine
numbers them). A chat model placed on one of those would compete with the run for memory (an OOM in
either), so `chat_device` picks a free GPU, or refuses naming the runs that hold them; `--device cpu`
always works (slower, but it never touches a GPU).
"""

from __future__ import annotations

from llm_studio.errors import LLMStudioError
from llm_studio.store import Store


def busy_gpus(store: Store) -> dict[int, str]:
    """{GPU index: experiment} for every running training job."""
    busy: dict[int, str] = {}
    for job in store.list_jobs(status="running"):
        for gpu in job.resources.get("gpus") or []:
            busy[int(gpu)] = job.experiment_name
    return busy


def chat_device(requested: str, n_gpus: int, store: Store) -> str:
    """'cpu' or 'cuda:N' for `requested` in auto|cpu|cuda on a machine with `n_gpus` visible GPUs."""
    if requested not in ("auto", "cpu", "cuda"):
        raise LLMStudioError(f"device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cpu" or (requested == "auto" and n_gpus == 0):
        return "cpu"
    if n_gpus == 0:
        raise LLMStudioError("no CUDA GPU is visible: chat with --device cpu")
    busy = busy_gpus(store)
    free = [i for i in range(n_gpus) if i not in busy]
    if not free:
        held = ", ".join(f"GPU {i} by {name}" for i, name in sorted(busy.items()))
        raise LLMStudioError(f"every GPU is busy training ({held}): chatting now could run either out of "
                             "memory. Wait for the run, stop it, or chat on the CPU (--device cpu)")
    return f"cuda:{free[0]}"
