"""Step 2: what the probe found, which GPU to use, or a GPU size to plan for."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.widgets import Input, Label, LoadingIndicator, Select, Static

from tui.wizard.steps.base import Step


class MachineStep(Step):
    step_id = "machine"
    HELP = """
    **Machine.** What the probe found: GPUs and free memory, bf16, RAM, disk. Type a GPU size to plan for
    another machine (the plan and memory bar follow it).
    """

    def compose(self) -> ComposeResult:
        yield LoadingIndicator(id="probing")
        yield Static("", id="machine-summary")
        yield Label("GPU to use", classes="section")
        yield Select([], id="gpu", prompt="(no GPU found)", allow_blank=True)
        yield Label("Plan for a GPU of this size instead (GiB, optional)", classes="section")
        yield Input(placeholder="e.g. 24 for an L4 / RTX 4090", id="gpu-gib", type="number")
        yield Static("", id="gpu-gib-error", classes="error")

    def on_mount(self) -> None:
        self.error("gpu-gib-error", None)
        if self.state.machine is not None:
            self.show_machine()

    def probe_if_needed(self) -> None:
        """Started by the app once its first frame is on screen (the probe may import torch)."""
        if self.state.machine is None:
            self.probe()

    @work(thread=True, exclusive=True, group="probe")
    def probe(self) -> None:
        from trainer_core.plan.probe import probe

        info = probe(self.state.get("output_dir", "runs"))
        self.app.call_from_thread(self._probed, info)

    def _probed(self, info) -> None:  # noqa: ANN001
        self.state.machine = info
        self.show_machine()
        self.app.step_finished_work()  # type: ignore[attr-defined]

    def show_machine(self) -> None:
        from trainer_core.plan.probe import format_machine

        info = self.state.machine
        self.query_one("#probing").display = False
        self.query_one("#machine-summary", Static).update(format_machine(info))
        gpus = self.query_one("#gpu", Select)
        gpus.set_options([(f"GPU {g.index}: {g.name} ({(g.free_bytes or 0) / 2**30:.1f} GiB free)", g.index)
                          for g in info.gpus])
        if info.gpus:
            gpus.value = min(self.state.gpu_index, len(info.gpus) - 1)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "gpu-gib":
            return
        text = event.value.strip()
        if not text:
            self.state.gpu_mib = None
            self.error("gpu-gib-error", None)
            return
        try:
            gib = float(text)
            if gib <= 0:
                raise ValueError
        except ValueError:
            self.error("gpu-gib-error", "a positive number of GiB, e.g. 24")
            return
        self.state.gpu_mib = int(gib * 1024)
        self.error("gpu-gib-error", None)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "gpu" and isinstance(event.value, int):
            self.state.gpu_index = event.value

    def blocked(self) -> str | None:
        if self.state.machine is None:
            return "still probing the machine"
        if self.query_one("#gpu-gib-error", Static).display:
            return "the GPU size is not a number"
        return None
