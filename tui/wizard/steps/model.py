"""Step 3: the model (local folder, hub id, or a known shape) and its parameter breakdown.

Paths, error messages and names read from the model's config go through `plain`: they are not markup.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DirectoryTree, Input, Label, LoadingIndicator, Select, Static

from tui.widgets import plain
from tui.wizard.steps.base import Step


class FolderPicker(ModalScreen[str | None]):
    """Pick a model folder with the keyboard (enter on a folder chooses it) or the mouse."""

    BINDINGS = [("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Label("Choose the model folder (the one with config.json); Esc cancels")
            yield DirectoryTree(str(Path.cwd()), id="tree")
            yield Button("Use this folder", id="use", variant="primary")

    @on(DirectoryTree.DirectorySelected)
    def chosen(self, event: DirectoryTree.DirectorySelected) -> None:
        if (Path(event.path) / "config.json").exists():
            self.dismiss(str(event.path))

    @on(Button.Pressed, "#use")
    def use(self) -> None:
        node = self.query_one(DirectoryTree).cursor_node
        self.dismiss(str(node.data.path) if node and node.data else None)


class ModelStep(Step):
    step_id = "model"
    HELP = """
    **Model.** A local folder (Browse…), a hub id, or a known model (planned offline). Inspect shows the
    parameters per part. `trust_remote_code` runs the model's own Python code: turn it on only for code you trust.
    """

    def compose(self) -> ComposeResult:
        yield Label("Model: a local folder or a hub id", classes="section")
        with Horizontal(classes="row"):
            yield Input(placeholder="path/to/model or org/name", id="model-path")
            yield Button("Browse…", id="browse")
            yield Button("Inspect", id="inspect", variant="primary")
        yield Static("", id="model-error", classes="error")
        yield Label("…or a known model (planned offline)", classes="section")
        yield Select([], id="known", prompt="known models")
        yield Checkbox("trust_remote_code (runs Python code from the model's repository)", id="trust")
        yield Static("", id="trust-warning", classes="warning")
        yield LoadingIndicator(id="inspecting")
        yield Static("", id="model-summary")

    def on_mount(self) -> None:
        from trainer_core.model.known import KNOWN_MODELS

        self.query_one("#known", Select).set_options([(m, m) for m in KNOWN_MODELS])
        self.query_one("#inspecting").display = False
        self.error("model-error", None)
        self.query_one("#trust-warning").display = False

    def on_show_step(self) -> None:
        path = self.state.get("model.name_or_path") or ""
        field = self.query_one("#model-path", Input)
        if field.value != path:
            field.value = path
        self.query_one("#trust", Checkbox).value = bool(self.state.get("model.trust_remote_code"))
        info = self.state.model_info
        if path and (info is None or info.name != path):
            self.inspect(path)

    @on(Input.Submitted, "#model-path")
    def submitted(self, event: Input.Submitted) -> None:
        self.inspect(event.value.strip())

    @on(Button.Pressed, "#inspect")
    def inspect_pressed(self) -> None:
        self.inspect(self.query_one("#model-path", Input).value.strip())

    @on(Button.Pressed, "#browse")
    def browse(self) -> None:
        def picked(path: str | None) -> None:
            if path:
                self.query_one("#model-path", Input).value = path
                self.inspect(path)

        self.app.push_screen(FolderPicker(), picked)

    @on(Select.Changed, "#known")
    def known(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.query_one("#model-path", Input).value = event.value
            self.inspect(event.value)

    @on(Checkbox.Changed, "#trust")
    def trust(self, event: Checkbox.Changed) -> None:
        self.state.set("model.trust_remote_code", event.value)
        warning = self.query_one("#trust-warning", Static)
        warning.update("Only for repositories you trust: their Python code runs on this machine." if event.value
                       else "")
        warning.display = event.value

    def inspect(self, path: str) -> None:
        if not path:
            self.error("model-error", "type a model folder or a hub id (e.g. HuggingFaceTB/SmolVLM-Instruct)")
            return
        self.state.set("model.name_or_path", path)
        self.state.model_info = None
        self.state.plan = None
        self.error("model-error", None)
        self.query_one("#inspecting").display = True
        self.query_one("#model-summary", Static).update(plain(f"inspecting {path} …"))
        self._inspect(path, bool(self.state.get("model.trust_remote_code")))

    @work(thread=True, exclusive=True, group="inspect")
    def _inspect(self, path: str, trust: bool) -> None:
        try:
            from trainer_core.model.info import inspect_model

            info = inspect_model(path, trust_remote_code=trust)
        except Exception as exc:  # shown inline; the user fixes the path
            self.app.call_from_thread(self._failed, path, str(exc))
            return
        self.app.call_from_thread(self._inspected, path, info)

    def _failed(self, path: str, message: str) -> None:
        if self.state.get("model.name_or_path") != path:
            return
        self.query_one("#inspecting").display = False
        self.query_one("#model-summary", Static).update("")
        self.error("model-error", plain(message))

    def _inspected(self, path: str, info) -> None:  # noqa: ANN001
        if self.state.get("model.name_or_path") != path:
            return  # the user typed another model meanwhile
        self.state.model_info = info
        self.query_one("#inspecting").display = False
        lora = info.lora_params(int(self.state.get("lora.r", 16) or 16))
        from trainer_core.events.console import human_count

        lines = [f"{info.architecture} — {human_count(info.total_params)} parameters"
                 + (" (offline registry)" if info.source == "registry" else ""),
                 f"{'vision-language' if info.is_vlm else 'text'} model, {info.text.num_layers} layers, hidden "
                 f"{info.text.hidden_size}, heads {info.text.num_heads} (KV {info.text.num_kv_heads}), vocab "
                 f"{info.text.vocab_size:,}"]
        for name, n in info.params.items():
            if n:
                lines.append(f"  {name:11} {n:>15,}  {100 * n / info.total_params:5.1f}%")
        lines.append(f"  {'LoRA r=' + str(self.state.get('lora.r', 16)):11} {lora:>15,}  trainable "
                     f"({100 * lora / info.total_params:.2f}%), vision tower frozen")
        self.query_one("#model-summary", Static).update(plain("\n".join(lines)))
        self.app.step_finished_work()  # type: ignore[attr-defined]

    def blocked(self) -> str | None:
        if not self.state.get("model.name_or_path"):
            return "choose a model"
        if self.state.model_info is None:
            return "the model has not been inspected yet (or could not be: see the message)"
        return None
