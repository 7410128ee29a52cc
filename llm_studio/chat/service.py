"""The chat service: one process per chatted experiment, JSON lines over stdin/stdout.

    python -m llm_studio.chat.service NAME [--checkpoint best|latest] [--idle-timeout 600]

It loads the experiment's model (backbone + adapter of the checkpoint), prints {"ready": true, ...},
then answers one request per input line:
    {"messages": [{"role": "user", "content": "..."}], "max_new_tokens": 64, "temperature": 0, "top_p": 1,
     "top_k": 0, "repetition_penalty": 1}        (the generation settings default to the run's config)
with {"delta": "..."} lines as tokens arrive, then {"done": true, "tokens": n, "tokens_per_s": x, "text": ...};
a bad request gets {"error": "..."} and the service keeps going. {"cancel": true} sent while an answer is
being generated stops the generation after the current token (its "done" line says "cancelled": true). It exits when stdin closes or after
`--idle-timeout` seconds without a request. Logs go to stderr; stdout carries only JSON lines.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any, TextIO

from llm_studio.errors import LLMStudioError


def _send(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


class ChatEngine:
    """Generates streamed answers with an experiment's model."""

    def __init__(self, name: str, checkpoint: str = "best", device: str = "cpu"):
        from llm_studio.export.loading import load_experiment_model

        import torch

        # half the memory on GPUs that compute in bf16; fp32 on CPUs (bf16 there is emulated and slow)
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        self.loaded = load_experiment_model(name, checkpoint, device=device, dtype="bfloat16" if bf16 else "float32")
        self.model, self.tokenizer, self.cfg = self.loaded.model, self.loaded.tokenizer, self.loaded.cfg

    def generation_config(self, request: dict[str, Any]) -> Any:
        from llm_studio.train.evaluate import _generation_config

        gen = self.cfg.generation.model_copy()
        for key in ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"):
            if request.get(key) is not None:
                setattr(gen, key, type(getattr(gen, key))(request[key]))
        gen = type(gen).model_validate(gen.model_dump())  # range checks of the schema
        return _generation_config(gen, self.tokenizer, self.model)

    def stream(self, request: dict[str, Any], cancelled: threading.Event | None = None):
        """Yield text deltas; returns (via StopIteration.value) the number of generated tokens.
        Setting `cancelled` ends the generation at the next token."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled is not None and cancelled.is_set(),
                                  dtype=torch.bool, device=input_ids.device)

        from llm_studio.data.render import render_prompt

        messages = request.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError("'messages' must be a list of {role, content} objects")
        ds = self.cfg.dataset
        ids = render_prompt(self.tokenizer, messages, system_prompt=ds.system_prompt,
                            prompt_template=ds.prompt_template)[-ds.max_length:]
        config = self.generation_config(request)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with torch.no_grad():
                    out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                              generation_config=config, streamer=streamer,
                                              stopping_criteria=StoppingCriteriaList([Cancelled()]))
                result["tokens"] = int(out.shape[1] - input_ids.shape[1])
            except BaseException as e:  # surfaced to the caller after the stream ends
                result["error"] = e
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        first = True
        for text in streamer:
            if first:  # the answer starts after the prompt: no leading whitespace (as predictions are stripped)
                text = text.lstrip()
                first = not text
            if text:
                yield text
        thread.join()
        if "error" in result:
            raise result["error"]
        return result.get("tokens", 0)


def _lines(stdin: TextIO) -> "queue.Queue[str]":
    """stdin's lines, read by a thread ('' at EOF): a queue can wait with a timeout, while select() on a
    buffered text stream misses lines already read into its buffer."""
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stdin:
            q.put(line)
        q.put("")

    threading.Thread(target=pump, daemon=True).start()
    return q


def _is_cancel(line: str) -> bool:
    try:
        return json.loads(line).get("cancel") is True
    except (ValueError, AttributeError):
        return False


def serve(engine: ChatEngine, stdin: TextIO, stdout: TextIO, idle_timeout: float) -> None:
    lines = _lines(stdin)
    later: list[str] = []  # requests that arrived while an answer was generated
    while True:
        try:
            line = later.pop(0) if later else lines.get(timeout=idle_timeout if idle_timeout > 0 else None)
        except queue.Empty:
            print(f"chat service: idle for {idle_timeout:g}s, exiting", file=sys.stderr)
            return
        if not line:
            return
        if not line.strip() or _is_cancel(line):  # a cancel that arrived after its answer ended
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
        except ValueError as e:
            _send(stdout, {"error": f"bad request: {e}"})
            continue
        t0 = time.perf_counter()
        parts: list[str] = []
        cancelled = threading.Event()
        try:
            gen = engine.stream(request, cancelled)
            while True:
                try:
                    delta = next(gen)
                except StopIteration as stop:
                    tokens = stop.value or 0
                    break
                parts.append(delta)
                _send(stdout, {"delta": delta})
                while not lines.empty():  # between tokens: a cancel stops this answer, anything else waits
                    pending = lines.get_nowait()
                    if _is_cancel(pending):
                        cancelled.set()
                    else:
                        later.append(pending)
        except Exception as e:  # noqa: BLE001 - every failure becomes an error line, the service goes on
            _send(stdout, {"error": f"{e.__class__.__name__}: {e}" if not isinstance(e, (ValueError, LLMStudioError))
                           else str(e)})
            continue
        seconds = time.perf_counter() - t0
        _send(stdout, {"done": True, "tokens": tokens, "tokens_per_s": round(tokens / seconds, 2) if seconds else None,
                       "text": "".join(parts), "cancelled": cancelled.is_set()})


def _device(requested: str) -> str:
    import torch

    from llm_studio.chat.device import chat_device
    from llm_studio.store import Store

    return chat_device(requested, torch.cuda.device_count() if torch.cuda.is_available() else 0, Store())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llm_studio.chat.service")
    p.add_argument("name")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--idle-timeout", type=float, default=600.0, help="exit after this many idle seconds (0: never)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: a GPU no training run holds, else the CPU; cuda refuses when every GPU is busy")
    args = p.parse_args(argv)
    stdout = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the JSON stream
    try:
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        engine = ChatEngine(args.name, args.checkpoint, _device(args.device))
    except LLMStudioError as e:
        _send(stdout, {"error": str(e)})
        return 2
    _send(stdout, {"ready": True, "experiment": args.name, "checkpoint": engine.loaded.checkpoint.name,
                   "device": str(engine.model.device)})
    serve(engine, sys.stdin, stdout, args.idle_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
