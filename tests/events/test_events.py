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
from trainer_core.run.folder import RunPaths, RunRecorder


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


def test_queue_subscriber_keeps_order_once_overflowing():
    from trainer_core.events import LogMessage

    q = QueueSubscriber(maxsize=1)
    q(step(1))
    q(LogMessage(level="warning", message="a"))  # overflows
    q.queue.get_nowait()  # the consumer frees a slot...
    q(RunFinished(status="completed", run_dir="r", steps=1, final_loss=0.1, adapter=None))  # ...but order holds
    q(CheckpointSaved(step=1, path="p"))
    assert [type(e).__name__ for e in q.drain()] == ["LogMessage", "RunFinished", "CheckpointSaved"]


def test_an_incomplete_checkpoint_is_never_resumed(tmp_path):
    from trainer_core.run.folder import latest_checkpoint

    for n, complete in ((5, True), (10, False)):
        d = tmp_path / "checkpoints" / f"checkpoint-{n}"
        d.mkdir(parents=True)
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "checkpoint-5"


def test_atomic_files_are_readable_like_any_other(tmp_path):
    import os

    from trainer_core.base.atomic import atomic_write_dir, atomic_write_text

    mask = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "a.yaml", "x: 1\n")
        d = atomic_write_dir(tmp_path / "adapter", lambda p: (p / "w").write_text("w"))
    finally:
        os.umask(mask)
    assert f.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert d.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
