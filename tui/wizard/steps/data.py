"""Step 4: SFT or DPO, the dataset, its detected format and column mapping, a preview and its problems.

Everything shown from the data (rows, column names, paths, problems) goes through `plain`: dataset text such
as Llama-2's `[/INST]` is not Textual markup.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import (
    Button,
    Checkbox,
    Input,
    Label,
    LoadingIndicator,
    RadioButton,
    RadioSet,
    Select,
    Static,
)

from tui.widgets import ImagePreview, plain
from tui.wizard.steps.base import Step


class DataStep(Step):
    step_id = "data"
    HELP = """
    **Task & data.** SFT learns from answers, DPO from chosen vs rejected. Give a file, folder or hub id and
    Check: the format, the column mapping (change it with the selects), an example as the model sees it, and the
    problems by row.
    """

    def compose(self) -> ComposeResult:
        with RadioSet(id="task"):
            yield RadioButton("SFT: learn from answers", id="task-sft", value=True)
            yield RadioButton("DPO: learn from chosen vs rejected", id="task-dpo")
        yield Label("Dataset: a file, a folder or a hub id", classes="section")
        with Horizontal(classes="row"):
            yield Input(placeholder="data.jsonl / data.csv / folder / org/dataset", id="data-path")
            yield Button("Check", id="check", variant="primary")
        yield Static("", id="data-error", classes="error")
        yield LoadingIndicator(id="checking")
        yield Static("", id="data-summary")
        yield Horizontal(id="mapping", classes="row")
        with Horizontal(classes="row"):
            yield Static("", id="preview")
            yield ImagePreview(id="image")
        yield Static("", id="problems", classes="error")
        yield Checkbox("skip invalid rows (train without them)", id="skip")

    def on_mount(self) -> None:
        self.query_one("#checking").display = False
        self.error("data-error", None)
        self.query_one("#problems").display = False
        self.query_one("#image").display = False

    def on_show_step(self) -> None:
        path = self.state.get("data.path") or ""
        field = self.query_one("#data-path", Input)
        if field.value != path:
            field.value = path
        self.query_one("#task-dpo", RadioButton).value = self.state.get("task") == "dpo"
        self.query_one("#task-sft", RadioButton).value = self.state.get("task") != "dpo"
        self.query_one("#skip", Checkbox).value = bool(self.state.get("data.skip_invalid"))
        report = self.state.data_report
        if path and (report is None or report.source != path or report.task != self.state.get("task")):
            self.check()

    @on(RadioSet.Changed, "#task")
    def task_changed(self, event: RadioSet.Changed) -> None:
        task = "dpo" if event.pressed.id == "task-dpo" else "sft"
        if task != self.state.get("task"):
            self.state.set("task", task)
            self._forget_mapping()
            self.state.plan = None
            if self.state.get("data.path"):
                self.check()

    @on(Input.Submitted, "#data-path")
    @on(Button.Pressed, "#check")
    def check_pressed(self) -> None:
        path = self.query_one("#data-path", Input).value.strip()
        if path != self.state.get("data.path"):
            self._forget_mapping()
            self.state.set("data.subset", None)  # a hub subset names a part of the old dataset
        self.state.set("data.path", path)
        self.check()

    def _forget_mapping(self) -> None:
        """Other data or another task: the format and columns are detected afresh (the check reads them)."""
        self.state.set("data.columns", {})
        self.state.set("data.format", "auto")

    @on(Checkbox.Changed, "#skip")
    def skip(self, event: Checkbox.Changed) -> None:
        self.state.set("data.skip_invalid", event.value)

    def check(self) -> None:
        path = self.state.get("data.path") or ""
        if not path:
            self.error("data-error", "type the path of a dataset file or folder, or a hub dataset id")
            return
        self.error("data-error", None)
        self.state.data_report = None
        self.state.plan = None
        self.query_one("#checking").display = True
        self.query_one("#data-summary", Static).update(plain(f"checking {path} …"))
        model = self.state.get("model.name_or_path")
        from pathlib import Path

        local_model = model if model and Path(model).exists() else None
        # The rows training will read: the preset's format, subset, split and max_samples, as `vlmtune plan`.
        where = {"fmt": self.state.get("data.format") or "auto", "subset": self.state.get("data.subset"),
                 "split": self.state.get("data.split") or "train", "limit": self.state.get("data.max_samples")}
        self._check(path, self.state.get("task"), dict(self.state.get("data.columns") or {}), local_model,
                    self.state.get("data.image_dir"), where)

    @work(thread=True, exclusive=True, group="check")
    def _check(self, path: str, task: str, columns: dict, model: str | None, image_dir: str | None,
               where: dict) -> None:
        from trainer_core.data.check import check_data

        try:
            report = check_data(path, task, columns=columns, model=model, preview=1, image_dir=image_dir, **where)
        except Exception as exc:  # e.g. the model's tokenizer failed: say so inline
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._checked, report)

    def _failed(self, message: str) -> None:
        self.query_one("#checking").display = False
        self.query_one("#data-summary", Static).update("")
        self.error("data-error", plain(message))

    def _checked(self, report) -> None:  # noqa: ANN001
        if report.source != self.state.get("data.path") or report.task != self.state.get("task"):
            return
        self.state.data_report = report
        self.query_one("#checking").display = False
        lines = [f"{report.rows} rows, {report.valid_rows} usable"]
        if report.format:
            lines.append(f"format: {report.format} ({report.format_description})")
        if report.stats and report.format:
            s = report.stats
            lines.append(f"tokens: prompt p95 {s.prompt_tokens.p95}, answer p95 {s.answer_tokens.p95}, longest "
                         f"{s.total_tokens.max} ({s.token_source})")
        if report.images.get("count"):
            lines.append(f"images: {report.images['count']}, up to {report.images['width']['max']}x"
                         f"{report.images['height']['max']} px"
                         + (f", {report.images['tokens_per_image']} tokens each"
                            if "tokens_per_image" in report.images else ""))
        self.query_one("#data-summary", Static).update(plain("\n".join(lines)))
        self._show_mapping(report)
        preview = self.query_one("#preview", Static)
        preview.update(plain(report.previews[0] if report.previews else ""))
        image = self.query_one("#image", ImagePreview)
        path = report.first_image
        image.display = bool(path) and self.app.size.width >= 90  # pixels only where there is room
        if path and image.display:
            image.load(path)
        problems = self.query_one("#problems", Static)
        if report.problems:
            shown = [str(p) for p in report.problems[:8]]
            more = len(report.problems) - len(shown)
            problems.update(plain("problems:\n" + "\n".join(f"  - {p}" for p in shown)
                                  + (f"\n  … and {more} more" if more > 0 else "")))
        problems.display = bool(report.problems)
        self.app.step_finished_work()  # type: ignore[attr-defined]

    def _show_mapping(self, report) -> None:  # noqa: ANN001
        box = self.query_one("#mapping", Horizontal)
        box.remove_children()
        if not report.format:
            return
        options = [(plain(c), c) for c in report.columns_found]
        for role, column in report.columns.items():
            # no ids: the old selects are removed asynchronously while these mount
            select = Select(options, value=column, name=role, classes="map", prompt=role, allow_blank=False)
            select.border_title = plain(role)
            box.mount(select)

    @on(Select.Changed)
    def mapping_changed(self, event: Select.Changed) -> None:
        if not event.select.has_class("map") or not isinstance(event.value, str):
            return
        role = event.select.name or ""
        report = self.state.data_report
        if report is not None and report.columns.get(role) == event.value:
            return
        columns = dict(report.columns if report else {})
        columns[role] = event.value
        self.state.set("data.columns", columns)
        self.check()

    def blocked(self) -> str | None:
        if self.query_one("#checking").display:
            return "still checking the dataset"
        return self.state.data_blocks_next()

