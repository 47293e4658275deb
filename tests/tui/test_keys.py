"""Screens own their keys: the wizard's keys act (and show) only while the wizard is in front, focus follows
the step shown, a finished run's monitor offers no stop, and Esc never leads to an empty screen."""

from __future__ import annotations

import json

from pilot_helpers import make_app, open_preset, wait_for

from trainer_core.events.history import RunHistory
from tui.monitor.app import MonitorApp
from tui.monitor.screen import MonitorScreen


def finished_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 1, "max_steps": 1, "loss": 1.0}) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "completed", "name": "r", "steps": 1, "final_loss": 1.0}))
    return run


async def test_wizard_keys_do_nothing_over_the_monitor(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        assert app.check_action("train", ()) and app.check_action("next", ())
        await app.push_screen(MonitorScreen(RunHistory(), follow=str(finished_run(tmp_path))))
        await pilot.pause(0.2)
        before = app.current
        await pilot.press("ctrl+t", "ctrl+n", "ctrl+b")
        await pilot.pause(0.3)
        assert not app.training and app.current == before  # nothing started, no step moved behind the monitor
        assert not app.check_action("train", ()) and not app.check_action("next", ())
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not any(t.startswith("Go to:") for t in titles) and "Start training" not in titles
        await pilot.press("escape")  # back to the wizard, whose keys work again
        await wait_for(pilot, lambda: app.screen is app.screen_stack[0])
        assert app.check_action("train", ())


async def test_focus_follows_the_step_shown(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        for step in ("model", "data", "machine"):
            app.goto(step)
            await pilot.pause(0.2)
            assert app.focused is not None and app.step(step) in app.focused.ancestors, (step, app.focused)
        assert app.check_action("back", ())  # a step behind the machine step
        app.goto("start")
        await pilot.pause(0.1)
        assert app.check_action("back", ()) is None  # nothing behind the first step: shown dimmed


async def test_a_finished_runs_monitor_offers_no_stop_and_esc_quits(tmp_path):
    app = MonitorApp(follow=finished_run(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.history.status == "completed")
        await pilot.pause(0.3)
        screen = app.screen
        assert screen.check_action("stop", ()) is False and screen.check_action("checkpoint", ()) is False
        assert screen.check_action("chat", ())
        await pilot.press("escape")  # nothing behind it: Esc quits instead of showing an empty screen
        await pilot.pause(0.3)
    assert app.return_code == 0 and not app.is_running


async def test_ctrl_q_in_the_monitor_asks_before_stopping_a_run(demo_preset):
    from tui.widgets import ConfirmQuit

    app = MonitorApp(preset=demo_preset("demo-sft", "training.max_steps=5000", "samples.every_steps=0"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.history.snapshot().step > 0)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuit))
        await pilot.press("enter")  # the safe answer: keep training
        await pilot.pause(0.3)
        assert app.training and not app.stop_signal.requested
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuit))
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, timeout=120)
    assert app.result.status == "stopped" and app.result.steps < 5000


async def test_f1_explains_the_current_step_and_its_keys(demo, tmp_path):
    from textual.widgets import HelpPanel, Markdown

    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        app.goto("model")
        await pilot.pause(0.2)
        await pilot.press("f1")
        await pilot.pause(0.3)
        panel = app.screen.query_one(HelpPanel)
        assert "Model." in panel.query_one(Markdown).source
        await pilot.press("f1")
        await pilot.pause(0.2)
        assert not app.screen.query(HelpPanel)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Help", "Runs"} <= set(titles)
