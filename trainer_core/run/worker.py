"""One process of a multi-process run, as `accelerate launch -m trainer_core.run.worker PRESET --run-dir DIR`
starts it on every rank. Global rank 0 draws the progress bar and writes the run folder; a rank that fails
writes its error to errors/rank-N.txt so that the launching `vlmtune train` can name it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from trainer_core.base.atomic import atomic_write_text
from trainer_core.config.presets import load_preset
from trainer_core.run.distributed import ERRORS_DIR
from trainer_core.run.engine import world_info
from trainer_core.run.headless import run_headless

PARENT_ENV = "VLMTUNE_PARENT_PID"
WATCH_SECONDS = 2.0


def watch_parent(pid: int, interval: float = WATCH_SECONDS) -> threading.Thread:
    """When the launching `vlmtune` ends (killed, its terminal closed), stop this rank the clean way: SIGTERM to
    ourselves, which the headless run takes as "stop at the end of this step" (every rank agrees on that step)."""
    import psutil

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                print(f"the launching vlmtune (pid {pid}) ended: stopping at the end of this step", file=sys.stderr)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="vlmtune-parent-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trainer_core.run.worker")
    ap.add_argument("preset")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    if os.environ.get(PARENT_ENV, "").isdigit():
        watch_parent(int(os.environ[PARENT_ENV]))
    rank, _ = world_info()
    run_dir = Path(a.run_dir)
    try:
        preset = load_preset(a.preset)
    except Exception as exc:  # the launcher checked the preset; this is a file changed under it
        result_error = f"could not read the preset {a.preset}: {exc}"
        atomic_write_text(run_dir / ERRORS_DIR / f"rank-{rank}.txt", result_error + "\n")
        print(f"error: {result_error}", file=sys.stderr)
        return 1
    result = run_headless(preset, resume=run_dir if a.resume else None, run_dir=run_dir, progress=rank == 0)
    if result.status == "failed":
        # The launching `vlmtune train` reads this and reports it, whichever rank it was.
        atomic_write_text(run_dir / ERRORS_DIR / f"rank-{rank}.txt",
                          f"{result.error}\n\n{result.traceback or ''}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
