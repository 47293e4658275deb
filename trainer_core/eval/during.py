"""The task metric during training (preset `eval.every_steps`): a TrainerCallback that scores the model being
trained on the first few held-out rows, emits a TaskEvalScored event and keeps the best step in the summary.

The loss says the model fits its data; this says whether its answers got better, and at which step they were
best (often before the last one, on small data). Only the tuned model is scored: the base does not change.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from transformers import TrainerCallback

from trainer_core.eval.evaluate import EvalError, ModelUnderTest, check_metric, to_rows
from trainer_core.eval.heldout import rows_from_dataset
from trainer_core.eval.metrics import SFT_METRICS, choose_metric
from trainer_core.events import LogMessage
from trainer_core.events.types import TaskEvalScored


def score_tuned(model: ModelUnderTest, rows: list, task: str, metric: str, max_new_tokens: int, batch_size: int = 8) -> float:
    """The mean `metric` of the model as it is now (adapter on) over `rows`."""
    scores = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        if task == "dpo":
            chosen = model.logps(chunk, [r.reference for r in chunk], True)
            rejected = model.logps(chunk, [r.rejected for r in chunk], True)
            scores += [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
        else:
            tuned = model.generate_tuned(chunk, max_new_tokens)
            scores += [SFT_METRICS[metric](a, r.reference) for a, r in zip(tuned, chunk, strict=True)]
    return sum(scores) / len(scores)


class TaskEvalCallback(TrainerCallback):
    def __init__(self, preset: Any, events: Any, ctx: Any, summary: dict[str, Any]) -> None:
        check_metric(preset.eval.metric, preset.task)  # a typo fails before any step, not at the first eval
        self.preset, self.events, self.ctx, self.summary = preset, events, ctx, summary
        self.rows: list | None = None
        self.metric = preset.eval.metric or ("preference_accuracy" if preset.task == "dpo" else None)
        self.best: tuple[int, float] | None = None

    def _rows(self) -> list:
        if self.rows is None:
            data = self.ctx.inputs.data.eval if self.ctx.inputs is not None else None
            if data is None:
                raise EvalError("eval.every_steps needs held-out rows: set data.eval_fraction above 0")
            n = min(self.preset.eval.rows, len(data))
            self.rows = to_rows(rows_from_dataset(data.select(range(n))), self.preset.task, "the eval split")
            self.metric = self.metric or choose_metric([r.reference for r in self.rows])
        return self.rows

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        every = self.preset.eval.every_steps
        if not every or state.global_step % every or not state.is_world_process_zero or self.ctx.world_size > 1:
            return  # several processes: a forward on one rank alone would stall sharded models
        model = kwargs.get("model")
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            rows = self._rows()
            loaded = SimpleNamespace(model=model, processing_class=self.ctx.processing_class, is_vlm=self.ctx.is_vlm)
            score = score_tuned(ModelUnderTest(loaded), rows, self.preset.task, self.metric, self.preset.eval.max_new_tokens)
        except Exception as exc:  # a failed evaluation is a warning, never the end of the run
            self.events.emit(LogMessage(level="warning", message=f"eval.every_steps: scoring failed: {exc}"))
            return
        finally:
            if was_training:
                model.train()
        if self.best is None or score > self.best[1]:
            self.best = (state.global_step, score)
            self.summary["best_step"] = state.global_step
            self.summary["best_metric"] = {"name": self.metric, "score": round(score, 6), "rows": len(rows)}
        self.events.emit(TaskEvalScored(step=state.global_step, metric=self.metric, score=score, rows=len(rows),
                                        seconds=time.perf_counter() - start, best_step=self.best[0],
                                        best_score=self.best[1]))
