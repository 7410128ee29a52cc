"""`llm-studio`: the command line face of the engine (same workspace as the UI).

User errors exit non-zero with one clear line; `--debug` shows the traceback.
Example: llm-studio datasets import data.csv --name my-data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from llm_studio.errors import LLMStudioError

EXIT_USER_ERROR = 2


def _json_default(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


# --- commands -------------------------------------------------------------------------------------

def cmd_tiny_model(args: argparse.Namespace) -> int:
    from llm_studio.models.tiny import build_tiny_model

    path = build_tiny_model(force=args.force)
    print(f"tiny model ready at {path}")
    return 0


def cmd_datasets_import(args: argparse.Namespace) -> int:
    from llm_studio.data import import_dataset

    mapping = {k: v for k, v in {
        "prompt": args.prompt_column, "answer": args.answer_column, "system": args.system_column,
        "id": args.id_column, "parent_id": args.parent_id_column, "messages": args.messages_column,
    }.items() if v}
    rec = import_dataset(args.path, args.name, validation_path=args.validation,
                         validation_fraction=args.validation_fraction, seed=args.seed, mapping=mapping or None)
    print(f"imported dataset '{rec.name}' ({rec.format}): {rec.n_train} train, {rec.n_valid} validation "
          f"conversations -> {rec.path}")
    return 0


def _store_with_sample():
    """The store, with the shipped sample registered on first use."""
    from llm_studio.data import ensure_sample_dataset
    from llm_studio.store import Store

    store = Store()
    ensure_sample_dataset(store=store)
    return store


def cmd_datasets_list(args: argparse.Namespace) -> int:
    records = _store_with_sample().list_datasets()
    if args.json:
        _print_json([asdict(r) for r in records])
    else:
        _table([{"name": r.name, "format": r.format, "train": r.n_train, "validation": r.n_valid,
                 "created": r.created_at.strftime("%Y-%m-%d %H:%M")} for r in records],
               ["name", "format", "train", "validation", "created"])
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    rec = _store_with_sample().get_dataset(args.name)
    if args.json:
        _print_json(asdict(rec))
        return 0
    print(f"name:       {rec.name}\nformat:     {rec.format}\npath:       {rec.path}")
    print(f"rows:       {rec.n_train} train, {rec.n_valid} validation")
    print(f"columns:    {json.dumps(rec.columns)}")
    for split, st in rec.stats.items():
        if not isinstance(st, dict) or not st.get("conversations"):
            continue
        turns, prompt, answer = st.get("turns_per_conversation", {}), st.get("prompt_chars", {}), \
            st.get("answer_chars", {})
        print(f"{split + ':':<12}{st['conversations']} conversations, {turns.get('mean', 0):.2f} turns on average; "
              f"prompt chars p50 {prompt.get('p50')} p90 {prompt.get('p90')} max {prompt.get('max')}; "
              f"answer chars p50 {answer.get('p50')} p90 {answer.get('p90')} max {answer.get('max')}")
    return 0


def cmd_datasets_delete(args: argparse.Namespace) -> int:
    from llm_studio.data import delete_dataset

    delete_dataset(args.name)
    print(f"deleted dataset '{args.name}'")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from llm_studio.train.launch import train_command

    if not args.config and not args.resume:
        raise LLMStudioError("give a CONFIG file to train, or --resume NAME")
    return train_command(args.config, args.name, args.set or [], args.resume)


def _fmt_progress(d: dict[str, Any]) -> str:
    if d["total_steps"]:
        eta = f" eta {int(d['eta_s'])}s" if d.get("eta_s") and d["status"] == "running" else ""
        return f"{d['step']}/{d['total_steps']}{eta}"
    return ""


def cmd_experiments_start(args: argparse.Namespace) -> int:
    from llm_studio.runner import manager

    rec = manager.start(args.config, args.name, args.set or [])
    print(f"queued experiment '{rec.name}' ({rec.config_path})")
    from llm_studio.runner.scheduler import scheduler_active

    if not scheduler_active():
        print("note: no scheduler is running; start one with `llm-studio worker` or `make wave`")
    return 0


def cmd_experiments_list(args: argparse.Namespace) -> int:
    from llm_studio.runner import manager

    rows = [manager.as_dict(v) for v in manager.list_experiments()]
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        r["progress"] = _fmt_progress(r)
        m = r["metrics"]
        r["loss"] = f"{m['train/loss']:.4f}" if "train/loss" in m else ""
        r["exact_match"] = f"{m['validation/exact_match']:.3f}" if "validation/exact_match" in m else ""
        if r["broken_reason"]:
            r["status"] = f"broken: {r['broken_reason']}"
    _table(rows, ["name", "status", "dataset", "progress", "loss", "exact_match"])
    return 0


def cmd_experiments_show(args: argparse.Namespace) -> int:
    from llm_studio.runner import manager

    d = manager.as_dict(manager.show(args.name))
    if args.json:
        _print_json(d)
        return 0
    for key in ("name", "status", "dataset", "pid", "folder", "parent", "created_at", "started_at",
                "finished_at"):
        if d[key] is not None:
            print(f"{key + ':':<13}{d[key]}")
    if _fmt_progress(d):
        print(f"{'progress:':<13}{_fmt_progress(d)}")
    if d["broken_reason"]:
        print(f"{'broken:':<13}{d['broken_reason']}")
    if d["error"]:
        print(f"{'error:':<13}{d['error']}")
    for name, value in sorted(d["metrics"].items()):
        print(f"  {name:<28}{value:.6g}")
    return 0


def cmd_experiments_action(args: argparse.Namespace) -> int:
    from llm_studio.runner import manager

    action = args.experiments_command
    if action == "stop":
        rec = manager.stop(args.name, wait_s=args.wait)
        print(f"experiment '{rec.name}' is {rec.status}")
    elif action == "resume":
        rec = manager.resume(args.name)
        print(f"experiment '{rec.name}' is {rec.status}")
    elif action == "cancel":
        rec = manager.cancel(args.name)
        print(f"experiment '{rec.name}' cancelled; it is {rec.status}")
    elif action == "move":
        queue = manager.move(args.name, args.to)
        print("queue: " + ", ".join(j.experiment_name for j in queue))
    elif action == "delete":
        manager.delete(args.name, force=args.force)
        print(f"deleted experiment '{args.name}'")
    elif action == "clone":
        rec = manager.clone(args.name, args.new_name, args.set or [])
        print(f"queued experiment '{rec.name}' (clone of '{args.name}')")
    elif action == "logs":
        if args.follow:
            for chunk in manager.follow_logs(args.name):
                print(chunk, end="", flush=True)
        else:
            print(manager.logs(args.name, lines=args.lines))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from llm_studio.runner.scheduler import Scheduler

    scheduler = Scheduler(interval_s=args.interval)
    if not scheduler.acquire():
        raise LLMStudioError("another scheduler is already active for this workspace")
    from llm_studio import paths

    print(f"scheduler running for workspace {paths.home()}; Ctrl-C stops it (runs keep running)", flush=True)
    scheduler.run_forever(stop_after_s=args.for_seconds)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from llm_studio.export.export import check_license, export_adapter, export_experiment

    if not args.output and not args.push:
        raise LLMStudioError("give --output DIR (and/or --push OWNER/REPO)")
    if args.license is not None:
        check_license(args.license)
    if args.push:
        from llm_studio.export.push import check_repo_id

        check_repo_id(args.push)  # before the slow merge
    out = None
    with tempfile.TemporaryDirectory(prefix="llm-studio-adapter-") as scratch:
        if args.output or args.adapter_only:  # an adapter to push is a copy: make it here, it takes no time
            target = args.output or Path(scratch) / "adapter"
            if args.adapter_only:
                out = export_adapter(args.name, target, checkpoint=args.checkpoint, zip=args.zip and bool(args.output),
                                     license=args.license)
            else:
                out = export_experiment(args.name, target, checkpoint=args.checkpoint, dtype=args.dtype, zip=args.zip,
                                        license=args.license)
            if args.output:
                what = "the adapter of " if args.adapter_only else ""
                print(f"exported {what}'{args.name}' to {out}"
                      + (f" and {out.parent / (out.name + '.zip')}" if args.zip else ""))
        if args.push:
            from llm_studio.export.push import push_experiment

            url = push_experiment(args.name, args.push, private=args.private, checkpoint=args.checkpoint,
                                  dtype=args.dtype, folder=out, license=args.license)
            print(f"pushed '{args.name}' to {url}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from llm_studio.chat.client import ChatClient

    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    with ChatClient(args.name, checkpoint=args.checkpoint, idle_timeout=600, device=args.device) as chat:
        if args.prompt is not None:
            for delta in chat.stream([{"role": "user", "content": args.prompt}], **settings):
                print(delta, end="", flush=True)
            print()
            return 0
        history: list[dict[str, str]] = []
        print(f"chatting with '{args.name}' (empty line or Ctrl-D quits, /reset clears the history)")
        while True:
            try:
                text = input("> ").strip()
            except EOFError:
                print()
                return 0
            if not text:
                return 0
            if text == "/reset":
                history = []
                continue
            history.append({"role": "user", "content": text})
            parts = []
            for delta in chat.stream(history, **settings):
                parts.append(delta)
                print(delta, end="", flush=True)
            print()
            history.append({"role": "assistant", "content": "".join(parts)})


# --- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-studio", description="Fine-tune LLMs from YAML configs and the CLI.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(parent: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str, example: str
            ) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help, description=help, epilog=f"example: {example}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=fn)
        return sp

    sp = add(sub, "tiny-model", cmd_tiny_model, "Build the offline default backbone (tiny-llama).",
             "llm-studio tiny-model")
    sp.add_argument("--force", action="store_true", help="rebuild even if it exists")

    ds = sub.add_parser("datasets", help="Import, list, show and delete datasets.")
    dsub = ds.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    sp = add(dsub, "import", cmd_datasets_import, "Import a CSV, Parquet, JSON or JSONL file as a dataset.",
             "llm-studio datasets import qa.csv --name my-qa --validation-fraction 0.1")
    sp.add_argument("path")
    sp.add_argument("--name", required=True)
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--validation", metavar="PATH", help="a second file used as the validation split")
    group.add_argument("--validation-fraction", type=float, default=0.0, metavar="F",
                       help="hold out this seeded fraction of conversations for validation")
    sp.add_argument("--seed", type=int, default=42)
    for col in ("prompt", "answer", "system", "id", "parent-id", "messages"):
        sp.add_argument(f"--{col}-column", metavar="COLUMN", help=f"column holding the {col.replace('-', '_')}")
    sp = add(dsub, "list", cmd_datasets_list, "List datasets.", "llm-studio datasets list --json")
    sp.add_argument("--json", action="store_true")
    sp = add(dsub, "show", cmd_datasets_show, "Show one dataset.", "llm-studio datasets show sample-qa")
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true")
    sp = add(dsub, "delete", cmd_datasets_delete, "Delete a dataset (files and store row).",
             "llm-studio datasets delete my-qa")
    sp.add_argument("name")

    sp = add(sub, "train", cmd_train, "Run one experiment in the foreground.",
             "llm-studio train experiments/tiny-sft.yaml --set training.epochs=3")
    sp.add_argument("config", nargs="?")
    sp.add_argument("--name")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    sp.add_argument("--resume", metavar="NAME", help="continue an experiment from its latest checkpoint")

    ex = sub.add_parser("experiments", help="Queue and manage experiments (run by the scheduler).")
    esub = ex.add_subparsers(dest="experiments_command", metavar="ACTION", required=True)
    sp = add(esub, "start", cmd_experiments_start, "Validate a config and queue it as an experiment.",
             "llm-studio experiments start experiments/tiny-sft.yaml --name first --set training.epochs=2")
    sp.add_argument("config")
    sp.add_argument("--name")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE")
    sp = add(esub, "list", cmd_experiments_list, "List experiments with status, progress and key metrics.",
             "llm-studio experiments list --json")
    sp.add_argument("--json", action="store_true")
    sp = add(esub, "show", cmd_experiments_show, "Show one experiment.", "llm-studio experiments show first")
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true")
    sp = add(esub, "stop", cmd_experiments_action, "Stop a run: it saves a checkpoint and ends stopped.",
             "llm-studio experiments stop first")
    sp.add_argument("name")
    sp.add_argument("--wait", type=float, default=30.0, metavar="SECONDS", help="wait this long for the end")
    for action, help_, example in (
        ("resume", "Queue a stopped or interrupted run to continue from its checkpoint.",
         "llm-studio experiments resume first"),
        ("cancel", "Cancel a queued experiment.", "llm-studio experiments cancel first"),
    ):
        add(esub, action, cmd_experiments_action, help_, example).add_argument("name")
    sp = add(esub, "move", cmd_experiments_action, "Move a queued experiment to another queue position.",
             "llm-studio experiments move second --to 1")
    sp.add_argument("name")
    sp.add_argument("--to", type=int, required=True, metavar="POSITION")
    sp = add(esub, "delete", cmd_experiments_action, "Delete an experiment's folder and records.",
             "llm-studio experiments delete first")
    sp.add_argument("name")
    sp.add_argument("--force", action="store_true", help="stop it first if it is running")
    sp = add(esub, "clone", cmd_experiments_action, "Queue a copy of an experiment, with changes.",
             "llm-studio experiments clone first --name second --set training.learning_rate=1e-3")
    sp.add_argument("name")
    sp.add_argument("--name", dest="new_name", required=True)
    sp.add_argument("--set", action="append", metavar="KEY=VALUE")
    sp = add(esub, "logs", cmd_experiments_action, "Print an experiment's train.log.",
             "llm-studio experiments logs first --follow")
    sp.add_argument("name")
    sp.add_argument("--follow", "-f", action="store_true")
    sp.add_argument("--lines", type=int, default=200)

    sp = add(sub, "worker", cmd_worker, "Run the scheduler without the UI.", "llm-studio worker")
    sp.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    sp.add_argument("--for-seconds", type=float, default=None, help=argparse.SUPPRESS)

    sp = add(sub, "export", cmd_export, "Merge an experiment's adapter and export (or push) a Hugging Face model.",
             "llm-studio export first --output exported/first --zip")
    sp.add_argument("name")
    sp.add_argument("--output", metavar="DIR", help="folder to write the merged model to")
    sp.add_argument("--zip", action="store_true", help="also write DIR.zip")
    sp.add_argument("--checkpoint", default="best", help="best (default), latest or a folder name like step-6")
    sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    sp.add_argument("--push", metavar="OWNER/REPO", help="upload to this Hugging Face Hub repository")
    sp.add_argument("--private", action="store_true", help="create the Hub repository private")
    sp.add_argument("--adapter-only", action="store_true",
                    help="the LoRA/DoRA adapter alone (a few MB, loaded with peft on top of the base), no merge")
    sp.add_argument("--license", metavar="ID", help="the model card's license, a Hub license id like apache-2.0 "
                                                    "(default: the base model's when its README says, else 'other')")

    sp = add(sub, "chat", cmd_chat, "Chat with a trained experiment (streamed answers).",
             "llm-studio chat first --prompt 'What is the capital of France?'")
    sp.add_argument("name")
    sp.add_argument("--prompt", help="ask once, print the answer and exit (a REPL otherwise)")
    sp.add_argument("--checkpoint", default="best")
    sp.add_argument("--max-new-tokens", type=int, default=None)
    sp.add_argument("--temperature", type=float, default=None)
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: a GPU that no training run holds, else the CPU")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except LLMStudioError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
