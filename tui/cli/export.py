"""`vlmtune export RUN_DIR --out DIR`: the LoRA adapter merged into the base weights."""

from __future__ import annotations

import argparse

from trainer_core.base.errors import EXIT_OK
from tui.cli.common import quiet_libraries


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("export", help="merge a run's LoRA adapter into the base model")
    p.add_argument("run_dir", help="run directory or adapter folder")
    p.add_argument("--out", required=True, help="folder for the merged model")
    p.add_argument("--base-model", help="base model (default: the one the adapter names)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_libraries()
    from trainer_core.export.merge import export_merged

    out = export_merged(args.run_dir, args.out, base_model=args.base_model, trust_remote_code=args.trust_remote_code)
    print(out)
    return EXIT_OK
