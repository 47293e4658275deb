"""`vlmtune check PRESET`: validate a preset without training."""

from __future__ import annotations

import argparse
import sys

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
    if preset.model.trust_remote_code:  # valid, but not harmless: say it where the user looks
        print("warning: model.trust_remote_code is true: training runs the model's own Python code, and every "
              "command that loads it asks for --trust-remote-code", file=sys.stderr)
    return EXIT_OK
