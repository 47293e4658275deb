"""The event stream: fan-out, isolation from broken subscribers, and a queue that never blocks."""

from __future__ import annotations

import json
import threading

from trainer_core.events import (
    CheckpointSaved,
    EventStream,
    Memory,
    QueueSubscriber,
    RunFinished,
    StepLogged,
    StopSignal,
)
from trainer_core.run_files import RunPaths, RunRecorder


def step(n: int) -> StepLogged:
    return StepLogged(step=n, max_steps=10, epoch=0.1 * n, loss=1.0 / n, learning_rate=1e-3, grad_norm=0.5,
                      samples_per_second=10.0, tokens_per_second=100.0, elapsed=float(n),
                      memory=Memory(device="cpu", rss=123), extra={"entropy": 2.0})


def test_every_subscriber_gets_every_event_in_order():
    stream, a, b = EventStream(), [], []
    stream.subscribe(a.append)
    unsubscribe = stream.subscribe(b.append)
    stream.emit(step(1))
    unsubscribe()
    stream.emit(step(2))
    assert [e.step for e in a] == [1, 2] and [e.step for e in b] == [1]


def test_a_failing_subscriber_is_detached_and_others_continue():
    stream, good = EventStream(), []

    def broken(event):
        raise RuntimeError("boom")

    stream.subscribe(broken)
    stream.subscribe(good.append)
    stream.emit(step(1))
    stream.emit(step(2))
    assert [e.step for e in good] == [1, 2]


def test_queue_subscriber_never_blocks_and_keeps_important_events():
    q = QueueSubscriber(maxsize=3)
    for n in range(1, 11):
        q(step(n))  # would block forever with a plain put() and no consumer
    q(CheckpointSaved(step=10, path="x"))
    q(RunFinished(status="completed", run_dir="r", steps=10, final_loss=0.1, adapter=None))
    got = q.drain()
    assert q.dropped == 7
    assert [type(e).__name__ for e in got] == ["StepLogged"] * 3 + ["CheckpointSaved", "RunFinished"]


def test_stop_signal_across_threads():
    stop = StopSignal()
    t = threading.Thread(target=stop.request, args=("from the UI",))
    t.start()
    t.join()
    assert stop.requested and stop.reason == "from the UI"


def test_recorder_writes_flat_metrics_rows(tmp_path):
    rec = RunRecorder(RunPaths(tmp_path))
    rec(step(1))
    rec(CheckpointSaved(step=1, path="p"))
    rec(RunFinished(status="completed", run_dir=str(tmp_path), steps=1, final_loss=1.0, adapter=None))
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["step"] == 1 and row["loss"] == 1.0 and row["memory_rss"] == 123 and row["entropy"] == 2.0
    kinds = [json.loads(x)["event"] for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert kinds == ["checkpoint", "run_finished"]
