"""One decoder: what a live run shows and what following its folder shows are the same history."""

from __future__ import annotations

from trainer_core.events import (
    CheckpointSaved,
    EvalLogged,
    LogMessage,
    Memory,
    OomBackoff,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
    TaskEvalScored,
)
from trainer_core.events.codec import decode, encode
from trainer_core.events.history import RunFollower, RunHistory
from trainer_core.run.folder import RunPaths, RunRecorder


def a_run(run_dir: str) -> list:
    mem = Memory(device="cpu", rss=123, total=456)
    steps = [StepLogged(step=n, max_steps=4, epoch=n / 4, loss=1.0 / n, learning_rate=1e-3, grad_norm=0.5,
                        samples_per_second=8.0, tokens_per_second=80.0, elapsed=float(n), memory=mem,
                        extra={"rewards/accuracies": 0.5}) for n in (1, 2, 3, 4)]
    return [
        RunStarted(run_dir=run_dir, name="demo", task="sft", model="m", is_vlm=True, trainable_params=10,
                   total_params=100, max_steps=4, world_size=1, resumed_from_step=0, summary={"precision": "fp32"}),
        steps[0], steps[1],
        LogMessage(level="warning", message="[/INST] looks like markup\nsecond line"),
        OomBackoff(step=2, before={"micro_batch_size": 4, "gradient_accumulation_steps": 1},
                   after={"micro_batch_size": 2, "gradient_accumulation_steps": 2}, memory_at_failure=99,
                   during="training"),
        EvalLogged(step=2, epoch=0.5, metrics={"eval_loss": 0.7}),
        SampleGenerated(step=2, prompt="What is B?", image="chart.png", output="7"),
        CheckpointSaved(step=2, path=f"{run_dir}/checkpoints/checkpoint-2"),
        TaskEvalScored(step=2, metric="relaxed_accuracy", score=0.5, rows=8, seconds=0.3, best_step=2,
                       best_score=0.5),
        steps[2], steps[3],
        RunFinished(status="completed", run_dir=run_dir, steps=4, final_loss=0.25, adapter=f"{run_dir}/adapter"),
    ]


def test_every_event_survives_the_round_trip():
    for event in a_run("/r"):
        kind, row = encode(event)
        assert decode(kind, row) == event


def test_a_followed_run_shows_what_the_live_run_showed(tmp_path):
    events = a_run(str(tmp_path))
    live, followed = RunHistory(), RunHistory()
    recorder = RunRecorder(RunPaths(tmp_path))
    for e in events:
        live(e)
        recorder(e)
    RunFollower(tmp_path, followed).poll()
    a, b = live.snapshot(), followed.snapshot()
    assert b.logs == a.logs and b.loss == a.loss and b.eval_loss == a.eval_loss
    assert b.samples == a.samples and b.checkpoints == a.checkpoints
    assert (b.status, b.step, b.total_steps, b.final_loss, b.summary) == (a.status, a.step, a.total_steps,
                                                                         a.final_loss, a.summary)
    assert any("checkpoint-2" in line for line in b.logs)
    assert b.task_scores == a.task_scores == [(2, 0.5)] and b.task_best == (2, 0.5)


def test_malformed_lines_are_skipped_not_fatal(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"type": "train", "step": "not a number"}\n[1, 2]\n{"type": "train", "step": 3, "loss": 0.5}\n'
        '{"type": "eval"}\nnot json\n', encoding="utf-8")
    (tmp_path / "events.jsonl").write_text('{"event": "checkpoint"}\n{"event": "log", "level": 3}\n',
                                           encoding="utf-8")
    history = RunHistory()
    RunFollower(tmp_path, history).poll()
    view = history.snapshot()
    assert view.loss == [(3, 0.5)] and view.step == 3
