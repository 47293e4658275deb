"""Step 6: the preset as YAML, a name and a file to save it to, and start training."""

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
    **Review.** The preset as YAML. Save it, train here (the live monitor opens), or run it in the background
    (it survives this terminal; its monitor can still stop it).
    """

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("name", classes="inline")
            yield Input(id="name")
        with Horizontal(classes="row"):
            yield Label("save to", classes="inline")
            yield Input(id="save-path")
        yield Static("", id="review-error", classes="error")
        yield TextArea("", id="yaml", read_only=True, language=None)
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
        self.query_one("#name", Input).value = name
        default = self.app.presets_dir / f"{name}.yaml"  # type: ignore[attr-defined]
        path_input = self.query_one("#save-path", Input)
        if not path_input.value or Path(path_input.value).stem != name:
            path_input.value = str(default)
        self.refresh_yaml()

    def refresh_yaml(self) -> None:
        from trainer_core.config.presets import PresetError

        self.query_one("#yaml", TextArea).text = self.state.yaml_text()
        try:
            self.state.preset()
            self.error("review-error", None)
        except PresetError as exc:
            self.error("review-error", str(exc))

    @on(Input.Changed, "#name")
    def name_changed(self, event: Input.Changed) -> None:
        name = event.value.strip()
        self.state.set("name", name)
        path_input = self.query_one("#save-path", Input)
        folder = Path(path_input.value).parent if path_input.value else self.app.presets_dir  # type: ignore[attr-defined]
        if name:
            path_input.value = str(folder / f"{name}.yaml")
        self.refresh_yaml()

    @on(Button.Pressed, "#save")
    def save(self) -> Path | None:
        from trainer_core.config.presets import PresetError, save_preset

        try:
            preset = self.state.preset()
        except PresetError as exc:
            self.error("review-error", str(exc))
            return None
        target = Path(self.query_one("#save-path", Input).value.strip() or f"presets/{preset.name}.yaml")
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
        if self.save() is None:
            return
        self.query_one("#progress").display = True
        self.query_one("#train-status", Static).update("loading the model …")
        self.app.start_training(self.state.preset())  # type: ignore[attr-defined]

    @on(Button.Pressed, "#background")
    def background(self) -> None:
        """Train in a detached process (survives this terminal) and watch it through its run directory."""
        from trainer_core.run.background import start_detached

        saved = self.save()
        if saved is None:
            return
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
