"""`vlmtune monitor RUN_DIR`: the live monitor on a run in another process, or a finished one."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer_core.base.errors import EXIT_OK, UsageError


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("monitor", help="watch a run (live in another process, or finished) from its folder")
    p.add_argument("run_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "summary.json").exists() and not (run_dir / "metrics.jsonl").exists():
        raise UsageError(f"{run_dir} is not a vlmtune run directory (no summary.json or metrics.jsonl)")
    from tui.monitor.app import MonitorApp

    MonitorApp(follow=run_dir).run()
    return EXIT_OK
