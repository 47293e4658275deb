"""`vlmtune check PRESET`: validate a preset without training."""

from __future__ import annotations

import argparse

from trainer_core.base.errors import EXIT_OK
from tui.cli.common import add_set, load_preset


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("check", help="validate a preset without training")
    p.add_argument("preset")
    add_set(p)
    p.add_argument("--show", action="store_true", help="print the resolved preset")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    preset = load_preset(args.preset, args.set)
    print(preset.to_yaml() if args.show else f"{args.preset}: valid ({preset.task}, {preset.model.name_or_path})")
    return EXIT_OK
