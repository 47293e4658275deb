"""Step 5: the recommendation beside the preset, as changes with their reasons that the user applies one by one or
all at once; every field editable, and the memory bar (docked, always in view) following each edit."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, LoadingIndicator, Select, Static, Switch

from tui.widgets import MemoryBar, plain
from tui.wizard.recommendation import Change, changes
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
    # the options of LLaMA-Factory / Unsloth users (PEFT's and TRL's names); the rest are in Review's YAML
    ("adapter", "adapter", ("lora", "prompt_tuning", "prefix_tuning", "none")),
    ("lora.use_dora", "DoRA", bool),
    ("lora.use_rslora", "rsLoRA", bool),
    ("data.image_max_pixels", "image max pixels", "optional int"),
    ("training.report_to", "tracker", ("none", "tensorboard", "trackio", "wandb", "mlflow")),
    # which parts of a vision-language model train (LLaMA-Factory's names); shown for VLMs only
    ("freeze_vision_tower", "freeze vision", bool),
    ("freeze_multi_modal_projector", "freeze connector", bool),
    ("freeze_language_model", "freeze language", bool),
]
VLM_ONLY = ("freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model", "data.image_max_pixels")


def _wid(path: str) -> str:
    return "f-" + path.replace(".", "-")


class PlanStep(Step):
    step_id = "plan"
    HELP = """
    **Plan.** The recommendation beside your preset: each field where they differ, with the reason. Enter on a
    row applies that change; "Apply all" applies every one. Nothing you chose is replaced without being shown
    here (a new preset's untouched defaults take the recommendation, and are listed). Every field can be
    edited; the memory bar at the bottom follows each edit and turns red, with the reason, when it no longer
    fits.
    """

    def compose(self) -> ComposeResult:
        yield LoadingIndicator(id="planning")
        yield Static("", id="plan-error", classes="error")
        yield Static("", id="plan-summary")
        yield DataTable(id="diff", cursor_type="row", zebra_stripes=True)
        yield Static("", id="diff-why", classes="hint")
        with Horizontal(classes="row"):
            yield Button("Apply all", id="reapply")
        with Vertical(id="plan-strip"):  # docked: the fit and the field's error stay in view while editing
            yield Static("", id="field-error", classes="error")
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
                elif kind == "optional int":
                    yield Input(id=_wid(path), type="integer", placeholder="the processor's own")
                else:
                    yield Input(id=_wid(path), type="integer" if kind is int else "number")
        yield Static("", id="reasons", classes="hint")

    def on_mount(self) -> None:
        table = self.query_one("#diff", DataTable)
        table.add_columns("field", "yours", "recommended")
        table.display = False
        self.query_one("#reapply").display = False  # shown with changes to apply; never the first focus by chance
        self._changes: list[Change] = []
        self.query_one("#planning").display = False
        self.error("plan-error", None)
        self.error("field-error", None)

    def on_show_step(self) -> None:
        dpo = self.state.get("task") == "dpo"
        for wid in (_wid("dpo.beta"), "l-" + _wid("dpo.beta")):
            self.query_one(f"#{wid}").display = dpo
        vlm = getattr(self.state.model_info, "is_vlm", True)
        for path in VLM_ONLY:
            for wid in (_wid(path), "l-" + _wid(path)):
                self.query_one(f"#{wid}").display = vlm
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
        # A new preset's defaults were never chosen: they take the recommendation, and the summary lists them.
        # Values the user chose (an opened preset, an edit, an applied change) stay until the user applies one.
        auto = [c for c in changes(report, self.state.get) if c.path not in self.state.owned]
        for c in auto:
            self.state.set(c.path, c.recommended)
        self._auto = auto
        lines = [str(r) for r in report.plan.reasons] + [f"- {s}" for s in report.plan.suggestions]
        if report.image is not None:  # the resolution's cost, the first lever against a VLM's memory
            limit = self.state.get("data.image_max_pixels")
            lines.insert(0, f"images: {report.image.tokens} tokens each ({report.image.how}) at "
                            + (f"image max pixels {limit:,}" if limit else "the processor's own resolution"))
        self.query_one("#reasons", Static).update(plain("Why:\n" + "\n".join(lines)))
        self.show_changes()
        self.fill_fields()
        self.update_memory()
        if self.app.current == "plan":  # type: ignore[attr-defined]
            # Focus starts on the changes (Enter applies the one highlighted), else on the first field.
            self.app._focus_step("plan")  # type: ignore[attr-defined]
        self.app.step_finished_work()  # type: ignore[attr-defined]

    def show_changes(self) -> None:
        """The fields where the draft and the recommendation differ, one row each."""
        report = self.state.plan
        self._changes = changes(report, self.state.get) if report is not None else []
        table = self.query_one("#diff", DataTable)
        table.clear()
        for c in self._changes:
            table.add_row(c.path, _show(c.current), _show(c.recommended))
        table.display = bool(self._changes)
        self.query_one("#reapply").display = bool(self._changes)
        auto = getattr(self, "_auto", [])
        applied = ("Set from the recommendation (new preset): "
                   + ", ".join(f"{c.path} {_show(c.recommended)}" for c in auto) + ".\n") if auto else ""
        if self._changes:
            n = len(self._changes)
            head = (f"The recommendation differs from your preset in {n} field{'s' * (n > 1)}: Enter on a row "
                    "applies it, or Apply all.")
        elif report is not None:
            head = "Your preset matches the recommendation."
        else:
            head = ""
        self.query_one("#plan-summary", Static).update(plain(applied + head))
        self._show_why(0)

    def _show_why(self, row: int) -> None:
        why = self.query_one("#diff-why", Static)
        if 0 <= row < len(self._changes):
            c = self._changes[row]
            why.update(plain(f"{c.path}: {_show(c.current)} -> {_show(c.recommended)} because {c.why}"))
        else:
            why.update("")

    @on(DataTable.RowHighlighted, "#diff")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_why(event.cursor_row)

    @on(DataTable.RowSelected, "#diff")
    def _apply_row(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self._changes):
            self.apply([self._changes[event.cursor_row]])

    def apply(self, chosen: list[Change]) -> None:
        for c in chosen:
            self.state.set(c.path, c.recommended)
            self.state.owned.add(c.path)
        self.show_changes()
        self.fill_fields()
        self._validate(None)
        self.update_memory()

    def apply_recommendation(self) -> None:
        """Every recommended value at once (the Apply all button)."""
        if self.state.plan is not None:
            self.apply(changes(self.state.plan, self.state.get))

    @on(Button.Pressed, "#reapply")
    def reapply(self) -> None:
        self.apply_recommendation()

    def fill_fields(self) -> None:
        # Values set here are the draft's own: prevent() keeps their Changed messages from reading as user edits
        # (they arrive later, after any flag would be reset).
        with self.prevent(Input.Changed, Select.Changed, Switch.Changed):
            for path, _label, kind in FIELDS:
                widget = self.query_one(f"#{_wid(path)}")
                value = self.state.get(path)
                if isinstance(kind, tuple):
                    widget.value = value if value in kind else kind[0]
                elif kind is bool:
                    widget.value = bool(value)
                elif kind is list:
                    widget.value = value if isinstance(value, str) else ",".join(value or [])
                elif kind == "optional int":
                    widget.value = "" if value is None else str(value)
                else:
                    widget.value = "" if value is None else str(value)

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
        match = next(((p, lbl, k) for p, lbl, k in FIELDS if _wid(p) == wid), None)
        if match is None:
            return
        path, label, kind = match
        try:
            value = self._parse(raw, kind)
        except ValueError:
            what = {int: "whole number", float: "number", list: "list: auto, or module names like q_proj,v_proj",
                    "optional int": "whole number (or empty for the processor's own)"}
            self.error("field-error", f"{label}: not a valid {what.get(kind, 'value')}")
            return
        if value == self.state.get(path) and path not in self.state.owned:
            return  # a widget reporting the draft's own value (e.g. a Select on mount): not the user's choice
        self.state.set(path, value)
        self.state.owned.add(path)
        self._validate(path)
        if path == "data.image_max_pixels" and not self.query_one("#field-error", Static).display:
            self.make_plan()  # a new resolution changes the image tokens the plan measured: plan again
            return
        self.show_changes()
        self.update_memory()

    def _validate(self, path: str | None) -> None:
        from trainer_core.config.presets import PresetError

        try:
            self.state.preset()
            self.error("field-error", None)
        except PresetError as exc:
            mine = [str(p) for p in exc.problems if path is None or p.path == path]
            self.error("field-error", "; ".join(mine) if mine else None)

    @staticmethod
    def _parse(raw, kind):  # noqa: ANN001, ANN205
        if isinstance(kind, tuple) or kind is bool:
            return raw
        text = str(raw).strip()
        if kind == "optional int":  # empty: the default (None)
            return int(text) if text else None
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
        if self.blocked() is None:  # a "can't go on" message from before this edit is no longer true
            self.app.query_one("#blocked", Static).update("")

    def blocked(self) -> str | None:
        if self.state.plan is None:
            return "still planning" if self.query_one("#planning").display else "no plan yet"
        if self.query_one("#field-error", Static).display:
            return f"a field has an error: {self.query_one('#field-error', Static).content}"
        if not getattr(self, "_fits", True):
            return "this configuration does not fit in memory (the bar is red): change a field"
        return None


def _show(value) -> str:  # noqa: ANN001
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
