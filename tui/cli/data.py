"""`vlmtune data check`: detect a dataset's format, validate every row, show stats and examples."""

from __future__ import annotations

import argparse

from trainer_core.base.errors import EXIT_FAILED, EXIT_OK, UsageError
from tui.cli.common import quiet_libraries


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("data", help="inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser("check", help="detect the format, validate every row, show stats and examples")
    p.add_argument("path", help="file, folder or hub dataset id")
    p.add_argument("--task", choices=["sft", "dpo"], required=True)
    p.add_argument("--columns", help="role=column pairs, e.g. prompt=question,completion=answer,images=img")
    p.add_argument("--format", default="auto", help="auto, or a format name to insist on")
    p.add_argument("--model", help="model folder (or hub id) whose tokenizer/template renders and counts")
    p.add_argument("--preview", type=int, default=3, metavar="N", help="examples to show (default 3)")
    p.add_argument("--limit", type=int, help="read only the first N rows (a quick look at a large set)")
    p.add_argument("--image-dir", help="folder that relative image paths start from")
    p.add_argument("--subset", help="hub dataset config name")
    p.add_argument("--split", default="train")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_check)


def parse_columns(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        role, sep, column = part.partition("=")
        if not sep or not role.strip() or not column.strip():
            raise UsageError(f"--columns takes role=column pairs separated by commas (e.g. prompt=question,"
                             f"completion=answer); {part!r} is not one")
        out[role.strip()] = column.strip()
    return out


def progress_bar():  # noqa: ANN201
    """A rows-checked bar on stderr, shown only on a terminal and only once a check has run a second: a small
    set or a redirected stderr shows nothing, and stdout (the report, or --json) is never written to."""
    import sys

    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit=" rows", desc="checking", file=sys.stderr, delay=1.0, disable=None,
                       leave=False, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def run_check(args: argparse.Namespace) -> int:
    import json

    from trainer_core.data.check import check_data, format_report

    if args.preview < 0:
        raise UsageError("--preview must be 0 or more")
    quiet_libraries()
    report = check_data(args.path, args.task, columns=parse_columns(args.columns), fmt=args.format,
                        model=args.model, preview=args.preview, limit=args.limit, image_dir=args.image_dir,
                        subset=args.subset, split=args.split, progress=progress_bar())
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_report(report))
    return EXIT_OK if report.ok else EXIT_FAILED
