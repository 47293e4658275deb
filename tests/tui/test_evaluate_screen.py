"""The evaluation in the app: `e` on a finished run's monitor evaluates the tuned model against its base on the
held-out rows (for real, on the demo), shows base | tuned | delta, and pages through the examples, filterable
to those tuning fixed or broke. Snapshots from a run folder with fixed figures, at 80x24 and 100x30."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from pilot_helpers import wait_for

from tui.evaluate.screen import EvalScreen
from tui.evaluate.view import filtered, headline, metric_rows
from tui.monitor.app import MonitorApp

ROOT = Path(tempfile.gettempdir()) / "vlmtune-snapshots-eval"


async def test_e_on_a_finished_run_evaluates_it_and_pages_the_examples(demo_preset, tmp_path):
    from trainer_core.run.engine import run_training

    result = run_training(demo_preset("demo-text-sft", "training.max_steps=3", "samples.every_steps=0",
                                      "data.eval_fraction=0.1"))
    assert result.status == "completed"
    app = MonitorApp(follow=result.run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.history.status == "completed")
        await pilot.pause(0.3)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.report is not None or "could not" in str(
            screen.query_one("#eval-title").content), timeout=300)
        assert screen.report is not None, screen.query_one("#eval-title").content
        table = screen.query_one("#eval-table")
        assert table.row_count >= 1 and str(table.get_row_at(0)[0]).startswith(screen.report["metric"])
        assert (result.run_dir / "eval.json").is_file()
        n = len(screen.samples)
        assert f"example 1/{n}" in str(screen.query_one("#eval-pager").content)
        await pilot.press("right")
        assert (f"example {min(2, n)}/{n}" if n > 1 else "example 1/1") in str(screen.query_one("#eval-pager").content)
        await pilot.press("f")
        assert "fixed by tuning" in str(screen.query_one("#eval-pager").content)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, EvalScreen))


async def test_a_run_that_cannot_be_evaluated_says_why_on_the_screen(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "completed", "name": "r", "steps": 1}))
    app = MonitorApp(follow=run)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.push_screen(EvalScreen(run))
        screen = app.screen
        await wait_for(pilot, lambda: "could not evaluate" in str(screen.query_one("#eval-title").content))
        assert not screen.running and screen.check_action("evaluate", ())


def _fixed_report():
    samples = [
        {"prompt": "What is the value of B?", "image": None, "reference": "7", "base": "3", "tuned": "7",
         "base_score": 0.0, "tuned_score": 1.0},
        {"prompt": "Which bar is the highest?", "image": None, "reference": "B", "base": "B", "tuned": "C",
         "base_score": 1.0, "tuned_score": 0.0},
        {"prompt": "What is the value of C?", "image": None, "reference": "5", "base": "1", "tuned": "5",
         "base_score": 0.0, "tuned_score": 1.0},
    ]
    report = {"n": 3, "metric": "relaxed_accuracy", "base": {"score": 1 / 3, "ci": [0.0, 1.0]},
              "tuned": {"score": 2 / 3, "ci": [0.0, 1.0]}, "delta": 1 / 3, "ci": [-0.667, 1.0],
              "also": {"exact_match": {"base": 1 / 3, "tuned": 2 / 3}}, "task": "sft", "partial": False,
              "source": "heldout.jsonl"}
    return report, samples


def test_metric_rows_and_filters_follow_the_files():
    report, samples = _fixed_report()
    rows = metric_rows(report)
    assert rows[0] == ("relaxed_accuracy (n=3)", "0.333", "0.667", "+0.333 [-0.667, +1.000]")
    assert rows[1] == ("exact_match", "0.333", "0.667", "+0.333")
    assert [s["reference"] for s in filtered(samples, "fixed by tuning")] == ["7", "5"]
    assert [s["reference"] for s in filtered(samples, "broken by tuning")] == ["B"]
    assert headline(report) == "relaxed_accuracy 0.33 -> 0.67"


@pytest.fixture(scope="module")
def evaluated_run():
    shutil.rmtree(ROOT, ignore_errors=True)
    run = ROOT / "demo-sft-20261201-120000"
    run.mkdir(parents=True)
    report, samples = _fixed_report()
    (run / "eval_samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run / "eval.json").write_text(json.dumps(report))
    (run / "summary.json").write_text(json.dumps({"status": "completed", "name": "demo-sft", "steps": 40}))
    return run


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
def test_evaluation_snapshot(evaluated_run, snap_compare, size):
    from textual.app import App

    class One(App):
        CSS_PATH = str(Path(__file__).parents[2] / "tui" / "styles" / "app.tcss")

        def on_mount(self) -> None:
            self.push_screen(EvalScreen(evaluated_run))

    async def run_before(pilot) -> None:
        await pilot.pause(0.3)
        await pilot.press("right")  # the second example: one tuning broke
        await pilot.pause(0.2)

    assert snap_compare(One(), terminal_size=size, run_before=run_before)
