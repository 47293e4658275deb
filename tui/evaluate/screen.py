"""The evaluation screen: base | tuned | delta for each metric, then a pager through the held-out examples side by
side (thumbnail, question, reference, both answers and their scores), filterable to the rows tuning fixed or
broke. Opens on the run's last eval.json, or evaluates (in a thread worker, stoppable, keeping what is done)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui.evaluate.view import FILTERS, filtered, metric_rows, read_evaluation, sample_text
from tui.widgets import ImagePreview, plain


class EvalScreen(Screen):
    HELP = """
    **Evaluation.** The tuned model against its base (the adapter switched off) on the run's held-out rows:
    each metric with its delta and 95% interval, then the examples side by side. Left/right page through
    them, `f` shows only those tuning fixed or broke, `r` evaluates again, `s` stops an evaluation (what is
    done is kept).
    """
    BINDINGS = [
        Binding("left", "page(-1)", "Prev"),
        Binding("right", "page(1)", "Next"),
        Binding("f", "filter", "Filter"),
        Binding("r", "evaluate", "Evaluate again"),
        Binding("s", "stop", "Stop"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, run_dir: str | Path, *, trust_remote_code: bool = False) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.trust_remote_code = trust_remote_code
        self.report: dict[str, Any] | None = None
        self.samples: list[dict[str, Any]] = []
        self.filter = FILTERS[0]
        self.index = 0
        self.running = False
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static("", id="eval-title")
        yield DataTable(id="eval-table", cursor_type="none", zebra_stripes=True)
        yield Static("", id="eval-pager", classes="hint")
        with Horizontal(id="eval-example"):
            yield ImagePreview(id="eval-image")
            yield Static("", id="eval-sample")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#eval-table", DataTable).add_columns("metric", "base", "tuned", "delta [95% CI]")
        found = read_evaluation(self.run_dir)
        if found is None:
            self.action_evaluate()
        else:
            self.show(*found)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.running
        if action == "evaluate":
            return not self.running
        if action in ("page", "filter"):
            return bool(self.samples) or None
        return True

    # -- evaluation in a thread worker
    def action_evaluate(self) -> None:
        if self.running:
            return
        self.running = True
        self._stop.clear()
        self._set_title(f"evaluating {self.run_dir.name}: loading the model …")
        self.refresh_bindings()
        self._evaluate()

    def action_stop(self) -> None:
        self._stop.set()
        self._set_title("stopping after this batch (what is done is kept) …")

    @work(thread=True, exclusive=True, group="eval", exit_on_error=False)
    def _evaluate(self) -> None:
        from trainer_core.base.errors import VlmtuneError
        from trainer_core.eval.evaluate import evaluate_run

        def progress(p) -> None:  # noqa: ANN001
            rate = p.done / p.seconds if p.seconds else 0
            self.app.call_from_thread(self._set_title, f"evaluating {self.run_dir.name}: {p.done}/{p.total} rows, "
                                                       f"base and tuned ({rate:.1f} rows/s) · s stops")

        try:
            result = evaluate_run(self.run_dir, progress=progress, stop=self._stop,
                                  trust_remote_code=self.trust_remote_code)
        except VlmtuneError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        except Exception as exc:  # shown on the screen, never a traceback over it
            self.app.call_from_thread(self._failed, f"{type(exc).__name__}: {exc}")
            return
        self.app.call_from_thread(self.show, result.report, result.samples)

    def _failed(self, message: str) -> None:
        self.running = False
        self.refresh_bindings()
        self._set_title(f"could not evaluate: {message}")

    # -- drawing
    def _set_title(self, text: str) -> None:
        self.query_one("#eval-title", Static).update(plain(text))

    def show(self, report: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        self.running = False
        self.report, self.samples = report, samples
        where = "held-out rows" if "heldout" in str(report.get("source", "")) else str(report.get("source", ""))
        partial = " (stopped early: partial)" if report.get("partial") else ""
        self._set_title(f"{self.run_dir.name}: {report.get('n')} {where}, {report.get('metric')}{partial}")
        table = self.query_one("#eval-table", DataTable)
        table.clear()
        for row in metric_rows(report):
            table.add_row(*row)
        self.index = 0
        self._draw_sample()
        self.refresh_bindings()

    def _shown(self) -> list[dict[str, Any]]:
        return filtered(self.samples, self.filter)

    def _draw_sample(self) -> None:
        shown = self._shown()
        pager = self.query_one("#eval-pager", Static)
        image = self.query_one("#eval-image", ImagePreview)
        if not shown:
            pager.update(plain(f"no examples ({self.filter}) · f changes the filter"))
            self.query_one("#eval-sample", Static).update("")
            image.load(None)
            return
        self.index %= len(shown)
        s = shown[self.index]
        pager.update(plain(f"example {self.index + 1}/{len(shown)} · showing {self.filter} · ←/→ page, f filter"))
        self.query_one("#eval-sample", Static).update(plain(sample_text(s)))
        path = s.get("image")
        image.display = bool(path)
        image.load(self._image_path(path) if path else None)

    def _image_path(self, path: str) -> str | None:
        p = Path(path)
        if not p.is_absolute():
            p = self.run_dir / p
        return str(p) if p.is_file() else None

    def action_page(self, step: int) -> None:
        self.index += step
        self._draw_sample()

    def action_filter(self) -> None:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        self.index = 0
        self._draw_sample()
