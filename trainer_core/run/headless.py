"""A run without the TUI: the progress bar on the terminal, SIGINT/SIGTERM as a clean stop (checkpoint, then
`stopped`, exit 0: what a cluster scheduler's SIGTERM before preemption needs), the outcome printed.
`vlmtune train --headless` and every rank of a multi-process run (trainer_core.run.worker) go through here."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from trainer_core.config.presets import Preset


def quiet_libraries() -> None:
    """Library progress bars and info logs would interleave with ours."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def run_headless(preset: Preset, *, resume: str | Path | None = None, run_dir: str | Path | None = None,
                 progress: bool = True, debug: bool = False, callbacks: list[Any] | None = None,
                 fit_check: bool | None = None):
    """Train with a console progress bar; returns the engine's RunResult (never raises for a failed run)."""
    quiet_libraries()
    from trainer_core.events import EventStream, StopSignal
    from trainer_core.events.console import ConsoleProgress
    from trainer_core.run.engine import run_training

    events = EventStream()
    if progress:
        events.subscribe(ConsoleProgress())
    stop = StopSignal()
    interrupts = {"n": 0}

    def on_signal(signum, frame):  # noqa: ANN001
        interrupts["n"] += 1
        if interrupts["n"] > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C leaves at once
        stop.request(f"signal {signal.Signals(signum).name}")
        if progress:
            # os.write, not print: a signal can land while the main thread is inside a print to stderr.
            os.write(2, b"\nstopping at the end of this step (saving a checkpoint); Ctrl-C again to abort\n")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_training(preset, events=events, stop=stop, resume=resume, run_dir=run_dir, callbacks=callbacks,
                            fit_check=fit_check)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def report(result: Any, *, debug: bool = False) -> int:
    """Print the outcome as the CLI does; the exit code (0 for completed or stopped, 1 for failed)."""
    print(result.run_dir)
    if result.status != "failed":
        return 0
    print(f"error: {result.error}", file=sys.stderr)
    if debug and result.traceback:
        print(result.traceback, file=sys.stderr)
    elif result.traceback:
        print(f"(the traceback is in {result.run_dir / 'error.txt'}; --debug prints it)", file=sys.stderr)
    return 1
