"""Running the engine inside a Textual app: one thread worker, hosted on the App (a worker dies with the
node that owns it, and screens come and go), feeding a RunHistory that the monitor redraws on a timer."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from trainer_core.events import EventStream, LogMessage, RunFinished, StopSignal
from trainer_core.events.history import RunHistory


class _LinesToEvents(io.TextIOBase):
    """What libraries print (the Trainer's log dicts, warnings) becomes log events, not stray terminal output."""

    def __init__(self, events: EventStream) -> None:
        self.events = events
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            if line.strip():
                self.events.emit(LogMessage(level="info", message=line.strip()))
        return len(text)


def run_engine(preset: Any, history: RunHistory, stop: StopSignal, *, resume: Any = None,
               extra_subscribers: tuple = (), callbacks: list[Any] | None = None, fit_check: bool | None = None) -> Any:
    """Blocking: call from a thread worker. Returns the engine's RunResult, a failed one too when the run never
    started (its folder refused or not creatable): the monitor shows why instead of "loading" for ever."""
    from trainer_core.run.engine import run_training

    events = EventStream()
    events.subscribe(history)
    for sub in extra_subscribers:
        events.subscribe(sub)
    sink = _LinesToEvents(events)
    # transformers' own log handler kept the real stderr from import time: switch it off for the run (the
    # engine's handler turns its warnings into log events) so nothing writes behind Textual's back.
    import datasets
    import transformers

    # tqdm bars ("Loading weights: 0%|") would reach the log as broken lines; warnings still come through
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_default_handler()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return run_training(preset, events=events, stop=stop, resume=resume, callbacks=callbacks,
                                fit_check=fit_check)
    except Exception as exc:  # raised before the run began: it records nothing, so say it here
        return _not_started(preset, events, resume, exc)
    finally:
        transformers.utils.logging.enable_default_handler()


def _not_started(preset: Any, events: EventStream, resume: Any, exc: Exception) -> Any:
    from trainer_core.run.engine import RunResult, explain_error

    message = explain_error(exc)
    run_dir = Path(str(resume if resume is not None else preset.output_dir)).expanduser()
    events.emit(RunFinished(status="failed", run_dir=str(run_dir), steps=0, final_loss=None, adapter=None,
                            error=message))
    return RunResult("failed", run_dir, error=message, exception=exc)


def new_run() -> tuple[RunHistory, StopSignal]:
    return RunHistory(), StopSignal()
