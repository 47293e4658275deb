"""Step 5: the recommendation with its reasons; every field editable, the memory bar following each edit."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import Button, Input, Label, LoadingIndicator, Select, Static, Switch

from tui.widgets import MemoryBar
from tui.wizard.steps.base import Step

# (field in the draft, label, kind)
FIELDS = [
    ("precision", "precision", ("auto", "bf16", "fp16", "fp32")),
    ("quantization", "quantization", ("none", "8bit", "4bit")),
    ("lora.r", "LoRA r", int),
    ("lora.alpha", "LoRA alpha", int),
    ("lora.target_modules", "LoRA targets", list),
    ("training.micro_batch_size", "micro-batch", int),
    ("training.gradient_accumulation_steps", "accumulation", int),
    ("training.max_length", "max length", int),
    ("training.gradient_checkpointing", "checkpointing", bool),
    ("training.learning_rate", "learning rate", float),
    ("training.max_steps", "max steps (-1: epochs)", int),
    ("training.epochs", "epochs", float),
    ("dpo.beta", "DPO beta", float),
]


def _wid(path: str) -> str:
    return "f-" + path.replace(".", "-")


class PlanStep(Step):
    step_id = "plan"
    HELP = """
    **Plan.** The recommendation with its reasons. Every field can be edited; the memory bar follows each edit
    and turns red, with the reason, when it no longer fits. "Use the recommendation again" resets the fields.
    """

    def compose(self) -> ComposeResult:
        yield LoadingIndicator(id="planning")
        yield Static("", id="plan-error", classes="error")
        yield MemoryBar(id="memory")
        with Grid(id="fields"):
            for path, label, kind in FIELDS:
                yield Label(label, id=f"l-{_wid(path)}")
                if isinstance(kind, tuple):
                    yield Select([(k, k) for k in kind], id=_wid(path), allow_blank=False, value=kind[0])
                elif kind is bool:
                    yield Switch(id=_wid(path))
                elif kind is list:
                    yield Input(id=_wid(path), placeholder="auto, or q_proj,v_proj")
                else:
                    yield Input(id=_wid(path), type="integer" if kind is int else "number")
        yield Static("", id="field-error", classes="error")
        yield Button("Use the recommendation again", id="reapply")
        yield Static("", id="reasons")

    def on_mount(self) -> None:
        self.query_one("#planning").display = False
        self.error("plan-error", None)
        self.error("field-error", None)

    def on_show_step(self) -> None:
        dpo = self.state.get("task") == "dpo"
        for wid in (_wid("dpo.beta"), "l-" + _wid("dpo.beta")):
            self.query_one(f"#{wid}").display = dpo
        if self.state.plan is None:
            self.make_plan()
        else:
            self.fill_fields()
            self.update_memory()

    def make_plan(self) -> None:
        self.query_one("#planning").display = True
        self.error("plan-error", None)
        self.query_one("#reasons", Static).update("planning …")
        from trainer_core.plan.from_preset import plan_inputs

        try:  # read on this thread (the draft may change while the worker plans), as `vlmtune plan` reads it
            inputs = plan_inputs(self.state.draft)
        except (TypeError, ValueError) as exc:
            self._failed(str(exc))
            return
        self._plan(inputs, self.state.gpu_mib, self.state.machine, self.state.gpu_index)

    @work(thread=True, exclusive=True, group="plan")
    def _plan(self, inputs, gpu_mib, machine, gpu_index) -> None:  # noqa: ANN001
        try:
            from trainer_core.plan.from_preset import plan_report

            report = plan_report(inputs, gpu_mib=gpu_mib, machine=machine, gpu_index=gpu_index)
        except Exception as exc:  # shown inline
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._planned, report)

    def _failed(self, message: str) -> None:
        self.query_one("#planning").display = False
        self.error("plan-error", f"could not plan: {message}")

    def _planned(self, report) -> None:  # noqa: ANN001
        self.state.plan = report
        self.query_one("#planning").display = False
        self.apply_recommendation()
        self.app.step_finished_work()  # type: ignore[attr-defined]

    def apply_recommendation(self) -> None:
        report = self.state.plan
        if report is None:
            return
        fields = report.plan.preset_fields()
        for key in ("precision", "quantization"):
            self.state.set(key, fields[key])
        lora = fields["lora"]  # {"enabled": False} when the preset fine-tunes every weight
        if lora.get("enabled") and lora["r"] != self.state.get("lora.r"):
            # alpha follows the rank (2 x r), as the plan's own preset says; a kept rank keeps the user's alpha
            self.state.set("lora.r", lora["r"])
            self.state.set("lora.alpha", lora["alpha"])
        for key, value in fields["training"].items():
            self.state.set(f"training.{key}", value)
        lines = [str(r) for r in report.plan.reasons] + [f"- {s}" for s in report.plan.suggestions]
        self.query_one("#reasons", Static).update("\n".join(lines))
        self.fill_fields()
        self.update_memory()

    @on(Button.Pressed, "#reapply")
    def reapply(self) -> None:
        self.apply_recommendation()

    def fill_fields(self) -> None:
        self._filling = True
        try:
            for path, _label, kind in FIELDS:
                widget = self.query_one(f"#{_wid(path)}")
                value = self.state.get(path)
                if isinstance(kind, tuple):
                    widget.value = value if value in kind else kind[0]
                elif kind is bool:
                    widget.value = bool(value)
                elif kind is list:
                    widget.value = value if isinstance(value, str) else ",".join(value or [])
                else:
                    widget.value = "" if value is None else str(value)
        finally:
            self._filling = False

    @on(Input.Changed)
    def input_changed(self, event: Input.Changed) -> None:
        self._field_changed(event.input.id or "", event.value)

    @on(Select.Changed)
    def select_changed(self, event: Select.Changed) -> None:
        self._field_changed(event.select.id or "", event.value)

    @on(Switch.Changed)
    def switch_changed(self, event: Switch.Changed) -> None:
        self._field_changed(event.switch.id or "", event.value)

    def _field_changed(self, wid: str, raw) -> None:  # noqa: ANN001
        if getattr(self, "_filling", False):
            return
        match = next(((p, lbl, k) for p, lbl, k in FIELDS if _wid(p) == wid), None)
        if match is None:
            return
        path, label, kind = match
        try:
            value = self._parse(raw, kind)
        except ValueError:
            what = {int: "whole number", float: "number", list: "list: auto, or module names like q_proj,v_proj"}
            self.error("field-error", f"{label}: not a valid {what.get(kind, 'value')}")
            return
        self.state.set(path, value)
        from trainer_core.config.presets import PresetError

        try:
            self.state.preset()
            self.error("field-error", None)
        except PresetError as exc:
            mine = [str(p) for p in exc.problems if p.path == path]
            self.error("field-error", "; ".join(mine) if mine else None)
        self.update_memory()

    @staticmethod
    def _parse(raw, kind):  # noqa: ANN001, ANN205
        if isinstance(kind, tuple) or kind is bool:
            return raw
        text = str(raw).strip()
        if kind is list:  # "auto" (the language model's linear layers) or module names
            names = [t.strip() for t in text.split(",") if t.strip()]
            if not names:
                raise ValueError
            return "auto" if names == ["auto"] else names
        if not text:
            raise ValueError
        return int(text) if kind is int else float(text)

    def update_memory(self) -> None:
        report = self.state.plan
        if report is None:
            return
        from trainer_core.plan.from_preset import settings_for
        from trainer_core.plan.memory import estimate_memory

        target, goal = report.plan.target, report.goal
        try:  # the draft as it is now, mid-edit: the same mapping to the memory model as `vlmtune plan`
            est = estimate_memory(self.state.model_info or report.model, settings_for(self.state.draft, report))
        except (ValueError, TypeError, KeyError):
            return
        usable = int(target.available_bytes * (1 - goal.margin))
        reason = ""
        if est.required > usable:
            biggest = max(est.components, key=est.components.get)
            reason = (f"{biggest} is the largest part ({est.components[biggest] / 2**30:.1f} GiB): try a smaller "
                      "micro-batch, checkpointing or 4-bit")
        self.query_one("#memory", MemoryBar).show(est.components, est.required, usable, reason)
        self._fits = est.required <= usable

    def blocked(self) -> str | None:
        if self.state.plan is None:
            return "still planning" if self.query_one("#planning").display else "no plan yet"
        if self.query_one("#field-error", Static).display:
            return "a field has an error (see above)"
        if not getattr(self, "_fits", True):
            return "this configuration does not fit in memory (the bar is red): change a field"
        return None
