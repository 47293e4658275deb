"""`vlmtune train PRESET` (without --headless) and `vlmtune monitor RUN_DIR`: the monitor as its own app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding

from tui.monitor.screen import MonitorScreen
from tui.monitor.training import new_run, run_engine
from tui.widgets import HELP_BINDINGS, ConfirmQuit, toggle_help


class MonitorApp(App):
    CSS_PATH = "../styles/app.tcss"
    TITLE = "vlmtune monitor"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True), *HELP_BINDINGS]

    def action_toggle_help(self) -> None:
        toggle_help(self)

    def __init__(self, *, preset: Any = None, follow: str | Path | None = None, resume: Any = None,
                 callbacks: list[Any] | None = None, launch: Any = None, fit_check: bool | None = None) -> None:
        super().__init__()
        self.preset, self.follow, self.resume = preset, follow, resume
        self.launch = launch  # a multi-process run this app started (trainer_core.run.distributed.Launch): it can stop it
        self.fit_check = fit_check
        self.callbacks = callbacks  # extra TrainerCallbacks (bench/ui_overhead.py times the run with one)
        self.history, self.stop_signal = new_run()
        self.result = None
        self.engine_done = False

    def on_mount(self) -> None:
        if self.preset is not None:
            self.push_screen(MonitorScreen(self.history, stop=self.stop_signal))
            self._train()
        else:
            self.push_screen(MonitorScreen(self.history, follow=str(self.follow), stop=self.launch))

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _train(self) -> None:
        try:
            self.result = run_engine(self.preset, self.history, self.stop_signal, resume=self.resume,
                                     callbacks=self.callbacks, fit_check=self.fit_check)
        finally:
            self.engine_done = True  # however it ended: quitting must not wait for a run that is over

    @property
    def training(self) -> bool:
        if self.launch is not None:
            return self.launch.process.poll() is None
        return self.preset is not None and not self.engine_done

    async def action_quit(self) -> None:
        if self.training:
            # Asked first, as in the wizard; yes stops the run the clean way (checkpoint and adapter at the end of
            # this step), then quits.
            self.push_screen(ConfirmQuit(), self._answer_quit)
            return
        self.exit()

    def _answer_quit(self, stop: bool | None) -> None:
        if not stop or not self.training:
            if not self.training:
                self.exit()
            return
        (self.launch or self.stop_signal).request("quit from the monitor")
        self.notify("stopping at the end of this step, then quitting …")
        self._quit_when_done()

    @work(thread=True, group="quit")
    def _quit_when_done(self) -> None:
        import time

        while self.training:
            time.sleep(0.1)
        self.call_from_thread(self.exit)
