"""The live monitor on the demo model: step events reach the chart, samples show, stop saves a checkpoint,
a failing run shows its error, and `monitor` on a finished run shows its final loss. Also the pure parts:
the history buffer, smoothing, and following a run directory with a half-written last line."""

from __future__ import annotations

import json
import re

import pytest
from pilot_helpers import wait_for

from trainer_core.events import Memory, StepLogged
from trainer_core.events.history import RunFollower, RunHistory, smooth
from tui.monitor.app import MonitorApp
from tui.monitor.redraw_budget import RedrawBudget


def test_smoothing_is_debiased_and_follows_the_data():
    assert smooth([4.0]) == [4.0]
    out = smooth([4.0, 2.0, 0.0, 0.0, 0.0])
    assert out[0] == 4.0 and out[-1] < 1.0 and all(a >= b for a, b in zip(out, out[1:], strict=False))


def test_history_is_a_subscriber_and_snapshots_are_copies():
    h = RunHistory()
    h(StepLogged(step=1, max_steps=10, epoch=0.1, loss=2.0, learning_rate=1e-3, grad_norm=1.0,
                 samples_per_second=5.0, tokens_per_second=50.0, elapsed=1.0, memory=Memory(device="cpu", rss=5)))
    v = h.snapshot()
    assert v.loss == [(1, 2.0)] and v.step == 1 and v.memory["rss"] == 5 and v.eta_seconds == 9.0
    v.loss.append((2, 1.0))
    assert h.snapshot().loss == [(1, 2.0)]


def test_follower_skips_a_half_written_line_until_it_is_complete(tmp_path):
    h = RunHistory()
    f = RunFollower(tmp_path, h)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"type": "train", "step": 1, "loss": 3.0, "max_steps": 4}) + "\n"
                       + '{"type": "train", "step": 2, "lo')
    f.poll()
    assert h.snapshot().loss == [(1, 3.0)]
    with metrics.open("a") as out:
        out.write('ss": 2.5, "max_steps": 4}\n')
    f.poll()
    assert h.snapshot().loss == [(1, 3.0), (2, 2.5)]
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed", "final_loss": 2.5}))
    f.poll()
    assert h.snapshot().status == "completed" and h.snapshot().final_loss == 2.5


@pytest.mark.slow
async def test_live_run_fills_chart_and_samples(demo_preset):
    preset = demo_preset("demo-sft", "training.max_steps=20", "samples.every_steps=10")
    app = MonitorApp(preset=preset)
    async with app.run_test(size=(80, 24)) as pilot:  # an SSH terminal: the log panel is ~38 columns wide
        await wait_for(pilot, lambda: app.result is not None)
        await pilot.pause(0.3)
        screen = app.screen
        v = app.history.snapshot()
        log = screen.query_one("#log")
        shown = [strip.text.rstrip() for strip in log.lines]
        # "step 20: checkpoint saved (checkpoint-20)" wraps in the panel instead of running off its edge
        assert max(len(line) for line in shown) <= log.scrollable_content_region.width, shown
        assert "(checkpoint-20)" in "".join(shown), shown
        assert [s for s, _ in v.loss] == list(range(1, 21))
        assert {s["step"] for s in v.samples} == {10, 20}
        assert "What is the value of B?" in str(screen.query_one("#samples").content)
        assert "completed: final loss" in str(screen.query_one("#run-title").content)
        assert str(screen.query_one("#run-progress").content).endswith(" 100%")
        assert not any("%|" in line for line in v.logs), v.logs  # no library progress bar in the log
        assert screen.query_one("#loss-plot").plt is not None
        # the memory gauge: RSS on CPU, against the machine's RAM from the engine's memory events
        stats = str(screen.query_one("#stats").content)
        assert "memory (RAM" in stats and re.search(r"RSS +[█▏▎▍▌▋▊▉]+·* +\d+\.\d\d G", stats), stats
    assert app.result.status == "completed"
    assert v.memory["total"] > v.memory["rss"] > 0


def _redraws(budget: RedrawBudget, cost: float, seconds: float, tick: float = 0.25, *,
             background: float = 0.0, light_cost: float = 0.0) -> list[tuple[float, str]]:
    """Ticks of a timer over `seconds`; each full redraw the budget allows costs `cost` seconds of UI CPU, each
    light one `light_cost`, and other UI work (timers, toasts) `background` per second."""
    cpu, drawn = 0.0, []
    for i in range(int(seconds / tick)):
        now = i * tick
        cpu += background * tick
        mode = budget.due(now, cpu)
        if mode:
            drawn.append((now, mode))
            cpu += cost if mode == "full" else light_cost
    return drawn


def _full(drawn: list[tuple[float, str]]) -> list[float]:
    return [t for t, mode in drawn if mode == "full"]


def test_redraw_budget_keeps_every_tick_when_redraws_are_cheap():
    drawn = _redraws(RedrawBudget(share=0.015, min_interval=0.25), cost=0.002, seconds=10)
    assert len(_full(drawn)) == 40  # a 2 ms redraw every 0.25 s is 0.8% of a core


def test_redraw_budget_spaces_costly_redraws_to_its_share_of_a_core():
    budget = RedrawBudget(share=0.015, min_interval=0.25)
    drawn = _redraws(budget, cost=0.012, seconds=60)
    full = _full(drawn)
    # 12 ms each at 1.5% of a core: one full redraw per 0.8 s, so per second of the timer's grid
    assert 0.012 * len(full) / 60 <= 0.015
    assert 60 / 1.0 <= len(full) <= 60 / 0.8 + 1
    budget.reset()
    assert budget.due(full[-1] + 0.01, 0.012 * len(full)) == "full"  # a resize or a finished run: at once


def test_redraws_never_stop_when_other_ui_work_is_over_the_share():
    # The wizard's timers alone use 3% of a core, twice the monitor's share: before, redraws stopped for good.
    drawn = _redraws(RedrawBudget(share=0.015), cost=0.06, light_cost=0.004, seconds=60, background=0.03)
    times = [t for t, _ in drawn]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= 1.0  # the figures move every second
    full = _full(drawn)
    assert len(full) >= 60 / 5 - 1 and max(b - a for a, b in zip(full, full[1:], strict=False)) <= 5.0


def test_gauge_fills_in_eighths_and_marks_over_full():
    from tui.monitor.screen import _gauge

    assert _gauge(1, 2, 8) == "████····"
    assert _gauge(5, 16, 2) == "▋·"
    assert _gauge(3, 64, 2) == "▏·"
    assert _gauge(3, 2, 4) == "███!"
    assert _gauge(1, None, 3) == "···"


@pytest.mark.slow
async def test_stop_from_the_monitor_saves_a_checkpoint(demo_preset):
    preset = demo_preset("demo-text-sft", "training.max_steps=100000", "samples.every_steps=2",
                         "samples.max_new_tokens=4", "data.eval_fraction=0", "training.save_steps=100000")
    app = MonitorApp(preset=preset)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(app.history.snapshot().samples) >= 2)
        await pilot.pause(1.5)  # a redraw or two while training: panels update without a layout pass
        samples_rows = app.screen.query_one("#samples").size.height
        await pilot.press("c")  # checkpoint now: saved at the next step, training goes on
        await wait_for(pilot, lambda: app.history.snapshot().checkpoints)
        await pilot.press("s")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "ConfirmStop")
        question = app.screen.query_one("#confirm Label")
        rows, right = question.size.height, question.region.right
        app.screen.query_one("#yes").press()
        await wait_for(pilot, lambda: app.result is not None)
        await pilot.pause(0.3)
        title = str(app.screen.query_one("#run-title").content)
    # the samples panel kept its full height mid-run (it had shrunk to its first text's 2 lines, hiding answers)
    assert samples_rows >= 5, samples_rows
    # the whole question showed at 80x24: wrapped inside the dialog, not cut at its edge
    assert rows >= 2 and right <= 80, (rows, right)
    assert "[stopped]" in title and "ETA -" in title, title  # no time left to a run that ended
    r = app.result
    assert r.status == "stopped" and 3 < r.steps < 100000
    ckpts = sorted((r.run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(ckpts) == 2 and ckpts[-1].name == f"checkpoint-{r.steps}"


@pytest.mark.slow
async def test_failing_run_shows_the_error(demo_preset, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\n')
    app = MonitorApp(preset=demo_preset("demo-sft", f"data.path={bad}"))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.result is not None)
        await pilot.pause(0.3)
        title = str(app.screen.query_one("#run-title").content)
    assert "failed: " in title and "no columns fit sft" in title


@pytest.mark.slow
async def test_monitor_command_on_a_finished_run(demo_preset):
    from trainer_core.run.engine import run_training

    result = run_training(demo_preset("demo-sft", "training.max_steps=6", "samples.every_steps=3"))
    app = MonitorApp(follow=result.run_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.history.snapshot().status == "completed")
        await pilot.pause(0.3)
        title = str(app.screen.query_one("#run-title").content)
        v = app.history.snapshot()
    assert f"final loss {result.final_loss:.4f}" in title
    assert len(v.loss) == 6 and {s["step"] for s in v.samples} == {3, 6}


def test_an_oom_backoff_shows_in_the_log_and_the_batch_line(tmp_path):
    # as the engine writes it (tests/test_faults.py makes a real one under a memory limit)
    rows = [{"event": "run_started", "name": "r", "task": "sft", "run_dir": str(tmp_path), "max_steps": 6,
             "summary": {"micro_batch_size": 32, "gradient_accumulation_steps": 1, "effective_batch": 32}},
            {"event": "oom_backoff", "step": 2, "during": "training", "memory_at_failure": 5 * 2**20,
             "before": {"micro_batch_size": 32, "gradient_accumulation_steps": 1, "gradient_checkpointing": False},
             "after": {"micro_batch_size": 16, "gradient_accumulation_steps": 2, "gradient_checkpointing": False}}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    history = RunHistory()
    RunFollower(tmp_path, history).poll()
    v = history.snapshot()
    assert v.summary["micro_batch_size"] == 16 and v.summary["gradient_accumulation_steps"] == 2
    assert v.summary["effective_batch"] == 32
    assert "out of memory after step 2: micro-batch 32 -> 16, accumulation 1 -> 2" in v.logs
