"""Snapshot tests of the monitor (following a finished run written with fixed figures) and of the chat pane
(loaded, before the first question), at 100x30."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(tempfile.gettempdir()) / "vlmtune-snapshots-monitor"


@pytest.fixture(scope="module")
def fixed_run():
    shutil.rmtree(ROOT, ignore_errors=True)
    run = ROOT / "demo-sft-20261123-120000"
    run.mkdir(parents=True)
    rows = [{"type": "train", "step": s, "max_steps": 40, "epoch": s / 22, "loss": 6.6 * 0.9**s + 0.2,
             "learning_rate": 3e-3, "samples_per_second": 100.0, "tokens_per_second": 2600.0, "elapsed": s * 0.06,
             "memory_device": "cpu", "memory_rss": 600 * 2**20, "memory_total": 2 * 2**30} for s in range(1, 41)]
    rows.insert(20, {"type": "eval", "step": 20, "epoch": 0.9, "eval_loss": 0.8})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 20, "prompt": "What is the value of B?", "image": "data/images/chart_000.png", "output": "6"},
        {"step": 40, "prompt": "What is the value of B?", "image": "data/images/chart_000.png", "output": "7"}]))
    (run / "events.jsonl").write_text(json.dumps({
        "event": "run_started", "name": "demo-sft", "task": "sft", "run_dir": str(run), "max_steps": 40,
        "summary": {"precision": "fp32", "quantization": "none", "micro_batch_size": 4,
                    "gradient_accumulation_steps": 1, "effective_batch": 4,
                    "memory_estimate": 450 * 2**20}}) + "\n"
        + json.dumps({"event": "checkpoint", "step": 20, "path": str(run / "checkpoints/checkpoint-20")}) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "completed", "name": "demo-sft", "steps": 40,
                                                  "final_loss": rows[-1]["loss"], "adapter": "adapter/"}))
    return run


def test_monitor_snapshot(fixed_run, snap_compare):
    from tui.monitor.app import MonitorApp

    async def run_before(pilot) -> None:
        for _ in range(100):
            if pilot.app.history.snapshot().status == "completed":
                break
            await pilot.pause(0.05)
        await pilot.pause(0.3)

    assert snap_compare(MonitorApp(follow=fixed_run), terminal_size=(100, 30), run_before=run_before)


def test_chat_snapshot(demo, snap_compare):
    from tui.chat.app import ChatApp

    shutil.rmtree(ROOT / "text-model", ignore_errors=True)
    model = shutil.copytree(demo.text_model, ROOT / "text-model")  # a fixed path on screen

    async def run_before(pilot) -> None:
        for _ in range(600):
            if pilot.app.screen.loaded is not None:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.3)

    assert snap_compare(ChatApp(str(model)), terminal_size=(100, 30), run_before=run_before)
