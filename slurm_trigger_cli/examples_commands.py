"""``examples``: copy the example pipelines this package ships into a folder.

An installed ``slurm-trigger`` reads pipelines from ``PIPELINES_PATH`` or ./pipelines,
never from inside its own package; this command is how a new project starts from the
shipped ones (``slurm-trigger examples pipelines && slurm-trigger validate``).
"""
from __future__ import annotations

import argparse
import shutil
from importlib import resources
from pathlib import Path

from slurm_trigger_cli import emit

EXAMPLES = resources.files(__package__) / "examples"


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("examples", parents=[parent], help="Copy the example pipelines into a folder.",
                              description="Copy the example pipelines (and their scripts) into a folder.")
    p.add_argument("dest", nargs="?", default="pipelines", help="folder to create or fill (default: ./pipelines)")
    p.add_argument("--force", action="store_true", help="overwrite files that already exist there")
    p.set_defaults(handler=cmd_examples)


def _files(folder: resources.abc.Traversable, prefix: str = "") -> list[str]:
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        name = f"{prefix}{entry.name}"
        out += _files(entry, f"{name}/") if entry.is_dir() else [name] if not entry.name.startswith(".") else []
    return out


def cmd_examples(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    names = _files(EXAMPLES)
    existing = [n for n in names if (dest / n).exists()]
    if existing and not args.force:
        raise ValueError(f"{dest} already has {', '.join(existing)} (--force overwrites)")
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(EXAMPLES.joinpath(*name.split("/"))) as source:
            shutil.copy(source, target)  # keeps the scripts' execute bit
    emit({"copied": names, "to": str(dest)}, args.format)
    return 0
