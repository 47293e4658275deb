"""`eval.every_steps`: the task metric while the demo trains, and the best step in summary.json."""

from __future__ import annotations

import json

import pytest

from trainer_core.events import EventStream
from trainer_core.events.types import TaskEvalScored
from trainer_core.run.engine import run_training

pytestmark = pytest.mark.slow


def test_every_steps_scores_and_records_the_best_step(demo_preset):
    events = EventStream()
    seen = []
    events.subscribe(seen.append)
    preset = demo_preset("demo-sft", "training.max_steps=4", "samples.every_steps=0", "eval.every_steps=2",
                         "eval.rows=3", "eval.max_new_tokens=4", "eval.metric=relaxed_accuracy")
    result = run_training(preset, events=events)
    assert result.status == "completed", result.error
    scored = [e for e in seen if isinstance(e, TaskEvalScored)]
    assert [e.step for e in scored] == [2, 4]
    assert all(e.metric == "relaxed_accuracy" and e.rows == 3 and 0.0 <= e.score <= 1.0 for e in scored)
    best = max(scored, key=lambda e: (e.score, -e.step))  # the first step that reached the best score
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["best_step"] == best.step == scored[-1].best_step
    assert summary["best_metric"] == {"name": "relaxed_accuracy", "score": round(best.score, 6), "rows": 3}


def test_an_unknown_metric_fails_the_run_before_training(demo_preset):
    result = run_training(demo_preset("demo-sft", "eval.every_steps=2", "eval.metric=bleu"))
    assert result.status == "failed" and result.steps == 0
    assert "'bleu'" in result.error and "relaxed_accuracy" in result.error
