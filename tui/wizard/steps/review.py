"""Step 6: the preset as YAML (every field editable here, checked as it is typed), a name and a file to save it
to (the opened file by default; another existing file is overwritten only when the user says so), and start
training."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, ProgressBar, Static, TextArea

from tui.widgets import plain
from tui.wizard.steps.base import Step


class ReviewStep(Step):
    step_id = "review"
    HELP = """
    **Review.** The preset as YAML: every field can be edited here, and is checked as you type (errors name
    the field). Save writes the file shown in "save to" (the preset you opened, or presets/NAME.yaml); another
    file that exists already is replaced only if you say so. Train here (the live monitor opens), or run it in
    the background (it survives this terminal; its monitor can still stop it).
    """

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("name", classes="inline")
            yield Input(id="name")
        with Horizontal(classes="row"):
            yield Label("save to", classes="inline")
            yield Input(id="save-path")
        yield Static("", id="review-error", classes="error")
        yield TextArea("", id="yaml", language=None, show_line_numbers=True)
        with Horizontal(classes="row"):
            yield Button("Save preset", id="save", variant="primary")
            yield Button("Start training", id="train", variant="success")
            yield Button("Run in background", id="background")
        yield ProgressBar(id="progress", show_eta=True)
        yield Static("", id="train-status")

    def on_mount(self) -> None:
        self.error("review-error", None)
        self.query_one("#progress").display = False

    def on_show_step(self) -> None:
        name = self.state.get("name") or "my-run"
        with self.prevent(Input.Changed):
            self.query_one("#name", Input).value = name
        path_input = self.query_one("#save-path", Input)
        if not path_input.value or Path(path_input.value).stem != name:
            path_input.value = str(self._default_path(name))
        self.refresh_yaml()

    def refresh_yaml(self) -> None:
        from trainer_core.config.presets import PresetError

        with self.prevent(TextArea.Changed):
            self.query_one("#yaml", TextArea).text = self.state.yaml_text()
        try:
            self.state.preset()
            self.error("review-error", None)
        except PresetError as exc:
            self.error("review-error", str(exc))

    @on(TextArea.Changed, "#yaml")
    def yaml_edited(self, event: TextArea.Changed) -> None:
        """The YAML as typed becomes the draft once it is a valid preset; until then the error says where."""
        from trainer_core.config.presets import PresetError
        from tui.wizard.state import edited_yaml

        try:
            changed = edited_yaml(self.state, event.text_area.text)
        except PresetError as exc:
            self.error("review-error", str(exc))
            return
        self.error("review-error", None)
        if "name" in changed:
            with self.prevent(Input.Changed):
                self.query_one("#name", Input).value = self.state.get("name")

    @on(Input.Changed, "#name")
    def name_changed(self, event: Input.Changed) -> None:
        name = event.value.strip()
        self.state.set("name", name)
        if name:
            self.query_one("#save-path", Input).value = str(self._default_path(name))
        self.refresh_yaml()

    def _default_path(self, name: str) -> Path:
        """The opened file while the name is its own; a new name is a new preset in the presets folder."""
        source = self.state.source
        if source is not None and source.stem == name:
            return source
        return self.app.presets_dir / f"{name}.yaml"  # type: ignore[attr-defined]

    @on(Button.Pressed, "#save")
    def save_pressed(self) -> None:
        self.save_then(None)

    def save_then(self, after) -> None:  # noqa: ANN001
        """Save, asking first when the target is another preset file that exists; then `after(path)`."""
        from tui.widgets import Confirm

        target = self._target()
        if target is None:
            return
        opened = self.state.source.resolve() if self.state.source is not None else None
        if target.exists() and target.resolve() != opened:
            def answer(yes: bool | None) -> None:
                if yes:
                    saved = self.save(target)
                    if saved is not None and after is not None:
                        after(saved)

            self.app.push_screen(Confirm(f"{target} exists. Replace it with this preset?"), answer)
            return
        saved = self.save(target)
        if saved is not None and after is not None:
            after(saved)

    def _target(self) -> Path | None:
        from trainer_core.config.presets import PresetError

        try:
            preset = self.state.preset()
        except PresetError as exc:
            self.error("review-error", str(exc))
            return None
        return Path(self.query_one("#save-path", Input).value.strip() or f"presets/{preset.name}.yaml").expanduser()

    def save(self, target: Path | None = None) -> Path | None:
        """Write the preset to `target` (the "save to" field) now, without asking."""
        from trainer_core.config.presets import PresetError, save_preset

        try:
            preset = self.state.preset()
        except PresetError as exc:
            self.error("review-error", str(exc))
            return None
        target = target or self._target()
        if target is None:
            return None
        try:
            save_preset(preset, target)
        except OSError as exc:
            self.error("review-error", f"could not save {target}: {exc.strerror or exc}")
            return None
        self.state.source = target
        self.app.notify(f"saved {target}")
        return target

    @on(Button.Pressed, "#train")
    def train(self) -> None:
        if self.app.training:  # type: ignore[attr-defined]
            self.app.notify("a run is already training", severity="warning")
            return
        self.save_then(self._start_training)

    def _start_training(self, _saved: Path) -> None:
        self.query_one("#progress").display = True
        self.query_one("#train-status", Static).update("loading the model …")
        self.app.start_training(self.state.preset())  # type: ignore[attr-defined]

    @on(Button.Pressed, "#background")
    def background(self) -> None:
        """Train in a detached process (survives this terminal) and watch it through its run directory."""
        self.save_then(self._start_background)

    def _start_background(self, saved: Path) -> None:
        from trainer_core.run.background import start_detached

        preset = self.state.preset()
        # The user turned remote code on in this session (the Model step's checkbox, or the question on open).
        run_dir, pid = start_detached(saved, preset.output_dir, preset.name,
                                      trust_remote_code=preset.model.trust_remote_code)
        self.app.background_runs.append((run_dir, pid))  # type: ignore[attr-defined]
        self.query_one("#train-status", Static).update(plain(f"running in the background (pid {pid}): {run_dir}\n"
                                                             f"watch it later with: vlmtune monitor {run_dir}"))
        self.app.open_run(run_dir)  # type: ignore[attr-defined]

    def show_progress(self, step: int, total: int, loss: float | None, status: str) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(total, 1), progress=step)
        self.query_one("#train-status", Static).update(status if loss is None else f"{status}  loss {loss:.4f}")
