"""Runs are places in the app: a recent run opens as a run (its monitor), a run whose process is gone says so,
a background run started here can be stopped from its monitor, and a blocked "next" is not remembered."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from pilot_helpers import make_app, wait_for

from tui.monitor.screen import MonitorScreen


def a_run(folder, name: str, status: str, pid: int | None = None):
    run = folder / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 3, "max_steps": 9, "loss": 0.5}) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": status, "name": name, "steps": 3, "final_loss": 0.5,
                                                  "started": time.time(), **({"pid": pid} if pid else {})}))
    return run


async def test_a_recent_run_opens_its_monitor_and_esc_comes_back(demo, tmp_path):
    run = a_run(tmp_path / "runs", "demo-sft-20260101-000000", "completed")
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("tab")  # keyboard only: from the presets list to the runs list, whose first run is lit
        assert app.focused is app.query_one("#runs")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        assert app.screen.follower.run_dir == run and app.current == "start"  # no preset was loaded
        await wait_for(pilot, lambda: app.screen.history.status == "completed")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.screen_stack[0])


async def test_a_run_whose_process_is_gone_is_listed_as_such(demo, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    a_run(tmp_path / "runs", "demo-sft-20260101-000001", "running", pid=proc.pid)
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        label = str(app.query_one("#runs").get_option_at_index(0).prompt)
        assert "ended unfinished" in label and "running" not in label


async def test_a_blocked_next_is_not_remembered(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.click("#new")
        await wait_for(pilot, lambda: app.current == "machine")
        app.goto("model")
        await pilot.pause(0.1)
        await pilot.press("ctrl+n")  # no model yet: blocked, and nothing is working on this step
        await pilot.pause(0.1)
        assert app.current == "model" and "choose a model" in str(app.query_one("#blocked").content)
        app.query_one("#model-path").value = str(demo.model)
        await pilot.click("#inspect")
        await wait_for(pilot, lambda: app.state.model_info is not None)
        await pilot.pause(0.3)
        assert app.current == "model"  # the user was not carried on by a "next" that had been refused


@pytest.mark.slow
async def test_a_background_run_stops_cleanly_from_its_monitor(demo, tmp_path, monkeypatch):
    from trainer_core.config.presets import load_preset, save_preset
    from trainer_core.run.background import start_detached

    monkeypatch.chdir(tmp_path)
    preset = load_preset(demo.presets / "demo-sft.yaml", ["training.max_steps=5000", "samples.every_steps=0",
                                                         f"output_dir={tmp_path / 'runs'}"])
    run, pid = start_detached(save_preset(preset, tmp_path / "long.yaml"), tmp_path / "runs", preset.name)
    app = make_app(demo, tmp_path)
    app.background_runs.append((run, pid))  # as the Review step's "Run in background" records it
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(run)
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.history.snapshot().step > 0,
                       timeout=300)
        assert app.screen.check_action("stop", ())
        await pilot.press("s")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.screen.history.status == "stopped", timeout=300)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps"] < 5000 and (run / "adapter").is_dir(), summary
