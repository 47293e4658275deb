"""`vlmtune probe`: what this machine has (GPUs and free memory, bf16, RAM, disk)."""

from __future__ import annotations

import argparse

from trainer_core.base.errors import EXIT_OK


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("probe", help="what this machine has: GPUs and free memory, bf16, RAM, disk")
    p.add_argument("--json", action="store_true")
    p.add_argument("--output-dir", default=".", help="where runs go (its free disk is reported)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer_core.plan.probe import format_machine, probe

    info = probe(args.output_dir)
    if args.json:
        import json

        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(format_machine(info))
    return EXIT_OK
