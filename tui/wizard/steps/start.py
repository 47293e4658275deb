"""Step 1: open a saved preset or a recent run, or start a new one."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Button, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.evaluate.view import headline, read_evaluation
from tui.wizard.state import find_presets, find_runs
from tui.wizard.steps.base import Step


class StartStep(Step):
    step_id = "start"
    HELP = """
    **Start.** Open a saved preset (every step is filled from it), a recent run (its monitor; chat from there),
    or start a new preset. A preset that turns on `trust_remote_code` asks first.
    """

    def compose(self) -> ComposeResult:
        yield Static("Open a preset to fill every step, or start a new one.", classes="hint")
        yield Label("Presets", classes="section")
        yield OptionList(id="presets")
        yield Label("Recent runs", classes="section")
        yield OptionList(id="runs")
        yield Button("New preset", id="new", variant="primary")
        yield Static("", id="start-error", classes="error")

    def on_mount(self) -> None:
        self.refresh_lists()
        self.error("start-error", None)
        self.query_one("#presets", OptionList).focus()  # keyboard first: arrows + enter open a preset

    def refresh_lists(self) -> None:
        app = self.app
        presets = find_presets(*app.preset_folders)  # type: ignore[attr-defined]
        lst = self.query_one("#presets", OptionList)
        lst.clear_options()
        for p in presets:
            # one line each, the path cut short: a list that fits 80 columns shows more presets
            lst.add_option(Option(Text.assemble(p.stem, (f" · {_short(p, max(16, 48 - len(p.stem)))}", "dim")), id=str(p)))
        if not presets:
            lst.add_option(Option("[dim]no presets yet: `vlmtune demo` makes some[/]", disabled=True))
        runs = find_runs(*app.run_folders)  # type: ignore[attr-defined]
        rl = self.query_one("#runs", OptionList)
        rl.clear_options()
        for d, s in runs:
            loss = f"loss {s['final_loss']:.3f}" if isinstance(s.get("final_loss"), float) else ""
            evaluated = read_evaluation(d, samples=False)  # "is it better than the base?" answered in the list once evaluated
            score = f"  {headline(evaluated[0])}" if evaluated else ""
            rl.add_option(Option(Text.assemble(d.name, (f"  {_status(d, s)} {s.get('steps', 0)} steps {loss}", "dim"),
                                               (score, "green")), id=str(d)))
        if not runs:
            rl.add_option(Option("[dim]no runs yet[/]", disabled=True))
        # Enter on a list acts on its highlighted row: the first one is highlighted from the start (a list
        # reached with Tab would otherwise take Enter and do nothing).
        for listing, found in ((lst, presets), (rl, runs)):
            if found and listing.highlighted is None:
                listing.highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        from trainer_core.config.presets import PresetError

        if event.option_list.id == "runs":  # a run opens as a run: its monitor (chat, resume command from there)
            self.app.open_run(Path(event.option.id or ""))  # type: ignore[attr-defined]
            return

        path = Path(event.option.id or "")
        try:
            self.state.load_preset_file(path)
        except PresetError as exc:
            self.error("start-error", str(exc))
            return
        self.error("start-error", None)
        self.app.notify(f"opened {path.name}")
        if self.state.get("model.trust_remote_code"):
            self._ask_trust()
            return
        self.app.goto("machine")  # type: ignore[attr-defined]

    def _ask_trust(self) -> None:
        """A preset cannot turn remote code on by itself: it stays off until the user says yes, each time."""
        from tui.widgets import ConfirmTrust

        self.state.set("model.trust_remote_code", False)

        def answer(yes: bool | None) -> None:
            self.state.set("model.trust_remote_code", bool(yes))
            self.app.goto("machine")  # type: ignore[attr-defined]

        self.app.push_screen(ConfirmTrust(str(self.state.get("model.name_or_path"))), answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "new":
            from tui.wizard.state import blank_draft

            self.state.draft = blank_draft()
            self.state.source = None
            self.state.model_info = self.state.data_report = self.state.plan = None
            self.app.goto("machine")  # type: ignore[attr-defined]


def _status(run_dir: Path, summary: dict) -> str:
    """The summary's status, checked against the process: "running" for a process that is gone is not."""
    from trainer_core.base.processes import gone_process

    status = summary.get("status")
    if status == "running" and gone_process(run_dir, summary) is not None:
        return "ended unfinished (resume it)"
    return str(status)


def _short(p: Path, width: int = 40) -> str:
    """The path from here, its start cut when long: the list keeps one line per preset at 80 columns."""
    try:
        text = str(p.relative_to(Path.cwd()))
    except ValueError:
        text = str(p)
    return text if len(text) <= width else "…" + text[-(width - 1):]
