"""The vlmtune app: a stepper from an empty terminal to a saved preset that fits, and a training run.

Imports only Textual and light trainer_core modules at start (the first frame must not wait for torch);
the probe, model inspection, data checks, planning and training run in thread workers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher, Footer, Header, Label, ListItem, ListView, Static

from tui.widgets import HELP_BINDINGS, ConfirmQuit, toggle_help
from tui.wizard.state import STEP_TITLES, STEPS, WizardState
from tui.wizard.steps import DataStep, MachineStep, ModelStep, PlanStep, ReviewStep, StartStep, Step

STARTED = time.perf_counter()


class VlmtuneApp(App):
    CSS_PATH = "../styles/app.tcss"
    TITLE = "vlmtune"
    SUB_TITLE = "fine-tune VLMs and LLMs"
    BINDINGS = [
        Binding("ctrl+n", "next", "Next"),
        Binding("ctrl+b", "back", "Back"),
        Binding("ctrl+s", "save", "Save"),  # short: the footer fits 80 columns with every key shown
        Binding("ctrl+t", "train", "Train"),
        Binding("ctrl+r", "open_run", "Run"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        *HELP_BINDINGS,
    ]
    # The wizard's own keys: they act on the steps, so they work (and show) only while the wizard is in front,
    # never inside the monitor or the chat pushed over it.
    WIZARD_ACTIONS = frozenset({"next", "back", "save", "train"})

    def __init__(self, *, preset_folders: list[Path] | None = None, run_folders: list[Path] | None = None,
                 presets_dir: Path | None = None, machine: Any = None, open_preset: Path | None = None) -> None:
        super().__init__()
        self.state = WizardState(machine=machine)
        self.presets_dir = presets_dir or Path("presets")
        self.preset_folders = preset_folders or [self.presets_dir, user_presets_dir()]
        self.run_folders = run_folders or [Path("runs")]
        self.open_preset = open_preset
        self.training = False
        self.background_runs: list[tuple[Path, int]] = []
        self.stop_signal = None
        self.last_result = None
        self._latest: dict[str, Any] = {}
        self.startup_ms: float | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield ListView(*[ListItem(Label(f"{i + 1}. {STEP_TITLES[s]}"), id=f"nav-{s}")
                             for i, s in enumerate(STEPS)], id="stepper")
            with Vertical(id="body"):
                yield Static("", id="step-title")
                with ContentSwitcher(initial="start", id="steps"):
                    yield StartStep(id="start")
                    yield MachineStep(id="machine")
                    yield ModelStep(id="model")
                    yield DataStep(id="data")
                    yield PlanStep(id="plan")
                    yield ReviewStep(id="review")
                yield Static("", id="blocked")
        yield Footer()

    def on_mount(self) -> None:
        self._show_title("start")
        self.call_after_refresh(self._first_frame)
        self.set_interval(0.1, self._drain_progress)  # redraw progress at most 10 times a second
        if self.open_preset is not None:
            self.state.load_preset_file(self.open_preset)
            self.goto("machine")

    def _first_frame(self) -> None:
        import sys

        self.startup_ms = (time.perf_counter() - STARTED) * 1000
        # What was imported before the first frame: the start-up test checks torch & co are not.
        self.heavy_at_first_frame = sorted({"torch", "transformers", "trl", "peft", "bitsandbytes"} & set(sys.modules))
        self.query_one(MachineStep).probe_if_needed()

    # ------------------------------------------------------------------ navigation

    @property
    def current(self) -> str:
        return self.query_one("#steps", ContentSwitcher).current or "start"

    def step(self, step_id: str) -> Step:
        return self.query_one(f"#{step_id}", Step)

    def goto(self, step_id: str, *, train_after: bool = False) -> None:
        self._pending = None
        here = self.current
        target = STEPS.index(step_id)
        # Going forward passes every step in between: each must be satisfied.
        for s in STEPS[STEPS.index(here):target]:
            reason = self.step(s).blocked()
            if reason:
                self._block(s, reason)  # shows the step, which starts its work (inspect, check, plan) if it has any
                working = self.step(s).working()
                # "next" through a step that is still working goes on by itself once the work is done (or stops
                # at its message); a step blocked for another reason is not remembered: the user moves on.
                if working:
                    self._pending = (step_id, train_after)
                return
        self.query_one("#steps", ContentSwitcher).current = step_id
        if step_id == "start":
            self.step("start").refresh_lists()  # a save or a run since: listed
        self.query_one("#stepper", ListView).index = target
        self._show_title(step_id)
        self.query_one("#blocked", Static).update("")
        self.step(step_id).on_show_step()
        self._focus_step(step_id)
        self.refresh_bindings()

    def step_finished_work(self) -> None:
        """Steps call this when a worker's result is shown."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            target, train_after = pending
            self.goto(target, train_after=train_after)
            if train_after and self.current == "review" and not self.training:
                self.step("review").train()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.WIZARD_ACTIONS:
            if self.screen is not self.screen_stack[0]:
                return False
            if action == "back":
                return STEPS.index(self.current) > 0 or None  # None: dimmed, nothing behind the first step
        if action == "open_run":  # back to this session's run (live or ended) after leaving its monitor
            return getattr(self, "monitor_screen", None) is not None and self.screen is self.screen_stack[0]
        return True

    def _focus_step(self, step_id: str) -> None:
        """Focus moves with the step: keys typed next go to the step the user sees, never a hidden one."""
        step = self.step(step_id)
        first = next((w for w in step.query("*") if w.focusable and w.display and w.visible), None)
        if first is not None:
            first.focus()
        elif self.focused is not None and step not in self.focused.ancestors:
            self.set_focus(None)

    def open_run(self, run_dir: Path) -> None:
        """A run's monitor, followed from its folder; a background run started here can be stopped from it."""
        from trainer_core.base.processes import ProcessStop
        from trainer_core.events.history import RunHistory
        from tui.monitor.screen import MonitorScreen

        pid = next((p for d, p in self.background_runs if Path(d) == Path(run_dir)), None)
        self.push_screen(MonitorScreen(RunHistory(), follow=str(run_dir),
                                       stop=ProcessStop(pid) if pid is not None else None))

    def action_toggle_help(self) -> None:
        toggle_help(self)

    def open_chat(self) -> None:
        from tui.chat.screen import ChatScreen

        self.push_screen(ChatScreen(None, self.last_result.adapter))

    def action_open_run(self) -> None:
        if getattr(self, "monitor_screen", None) is not None and self.monitor_screen not in self.screen_stack:
            self.push_screen(self.monitor_screen)

    def _block(self, step_id: str, reason: str) -> None:
        if self.current != step_id:
            self.query_one("#steps", ContentSwitcher).current = step_id
            self.query_one("#stepper", ListView).index = STEPS.index(step_id)
            self._show_title(step_id)
            self.step(step_id).on_show_step()
        self.query_one("#blocked", Static).update(f"Can't go on yet: {reason}")

    def _show_title(self, step_id: str) -> None:
        i = STEPS.index(step_id)
        self.query_one("#step-title", Static).update(f"Step {i + 1} of {len(STEPS)}: {STEP_TITLES[step_id]}")

    def action_next(self) -> None:
        i = STEPS.index(self.current)
        if i + 1 < len(STEPS):
            self.goto(STEPS[i + 1])

    def action_back(self) -> None:
        i = STEPS.index(self.current)
        if i > 0:
            self.goto(STEPS[i - 1])

    def action_save(self) -> None:
        self.goto("review") if self.current != "review" else self.step("review").save_pressed()

    def action_train(self) -> None:
        if self.current != "review":
            self.goto("review", train_after=True)
        if self.current == "review" and not self.training:
            self.step("review").train()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.list_view.id == "stepper" and event.item and event.item.id:
            target = event.item.id.removeprefix("nav-")
            if target != self.current:
                self.goto(target)

    def get_system_commands(self, screen):  # noqa: ANN001, ANN201
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "This screen and its keys (F1)", self.action_toggle_help)
        if getattr(self, "monitor_screen", None) is not None:
            yield SystemCommand("Monitor", "This session's run, live or ended (ctrl+r)", self.action_open_run)
        adapter = getattr(self.last_result, "adapter", None)
        if adapter:
            yield SystemCommand("Chat", f"Chat with the last run's result ({adapter})", self.open_chat)
        if screen is not self.screen_stack[0]:
            return  # the steps are the wizard's: not offered from the monitor or the chat
        yield SystemCommand("Runs", "Recent runs (Start step): open one's monitor", lambda: self.goto("start"))
        for s in STEPS:
            yield SystemCommand(f"Go to: {STEP_TITLES[s]}", f"Open step {STEPS.index(s) + 1}",
                                lambda s=s: self.goto(s))
        yield SystemCommand("Save preset", "Save the preset (Review step)", self.action_save)
        yield SystemCommand("Start training", "Save the preset and train it (Review step)", self.action_train)

    # ------------------------------------------------------------------ training (hosted on the App)

    def start_training(self, preset) -> None:  # noqa: ANN001
        from tui.monitor.screen import MonitorScreen
        from tui.monitor.training import new_run

        self.training = True
        self.history, self.stop_signal = new_run()
        estimate = self.state.plan.plan.estimate.required if self.state.plan is not None else None
        self.monitor_screen = MonitorScreen(self.history, stop=self.stop_signal, estimate_bytes=estimate)
        self.push_screen(self.monitor_screen)
        self._train(preset)

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _train(self, preset) -> None:  # noqa: ANN001
        from trainer_core.events import RunFinished, RunStarted, StepLogged
        from tui.monitor.training import run_engine

        def latest(event) -> None:  # noqa: ANN001
            # The newest state wins; the UI timer draws it (never more than 10 times a second).
            if isinstance(event, RunStarted):
                self._latest.update(total=event.max_steps, status=f"training in {event.run_dir}")
            elif isinstance(event, StepLogged):
                self._latest.update(step=event.step, total=event.max_steps, loss=event.loss)
            elif isinstance(event, RunFinished):
                self._latest.update(status=f"{event.status} after {event.steps} steps"
                                    + (f": {event.error}" if event.error else f" — {event.run_dir}"))

        try:
            self.last_result = run_engine(preset, self.history, self.stop_signal, extra_subscribers=(latest,))
        finally:
            self.training = False

    def _drain_progress(self) -> None:
        if self._latest:
            d, self._latest = self._latest, {}
            self._progress = {**getattr(self, "_progress", {}), **d}
            self._progress_shown = False
        if getattr(self, "_progress_shown", True) or self.screen is not self.screen_stack[0]:
            return  # nothing new, or the monitor is in front: the Review step's bar is drawn when it is seen
        self._progress_shown = True
        p = self._progress
        self.step("review").show_progress(p.get("step", 0), p.get("total", 1), p.get("loss"),
                                          p.get("status", "training"))

    async def action_quit(self) -> None:
        if self.training:
            def answer(stop: bool | None) -> None:
                if stop and self.stop_signal is not None:
                    self.stop_signal.request("quit from the app")
                    self.exit()

            self.push_screen(ConfirmQuit(), answer)
            return
        self.exit()


def user_presets_dir() -> Path:
    """The user's own preset folder ($XDG_CONFIG_HOME/vlmtune/presets), listed beside ./presets."""
    import os

    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vlmtune" / "presets"


def run_app(**kwargs: Any) -> None:
    VlmtuneApp(**kwargs).run()
