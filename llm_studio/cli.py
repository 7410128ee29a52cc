"""`llm-studio`: the command line face of the engine (same workspace as the UI).

User errors exit non-zero with one clear line; `--debug` shows the traceback.
Example: llm-studio datasets import data.csv --name my-data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from dataclasses import asdict
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


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from llm_studio.store import Store

    records = Store().list_datasets()
    if args.json:
        _print_json([asdict(r) for r in records])
    else:
        _table([{"name": r.name, "format": r.format, "train": r.n_train, "validation": r.n_valid,
                 "created": r.created_at.strftime("%Y-%m-%d %H:%M")} for r in records],
               ["name", "format", "train", "validation", "created"])
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from llm_studio.store import Store

    rec = Store().get_dataset(args.name)
    if args.json:
        _print_json(asdict(rec))
        return 0
    print(f"name:       {rec.name}\nformat:     {rec.format}\npath:       {rec.path}")
    print(f"rows:       {rec.n_train} train, {rec.n_valid} validation")
    print(f"columns:    {json.dumps(rec.columns)}")
    for key, value in rec.stats.items():
        if not isinstance(value, (dict, list)):
            print(f"{key + ':':<12}{value}")
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
