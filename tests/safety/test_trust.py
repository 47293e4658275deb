"""Trust, asked for out loud: a preset's trust_remote_code runs nothing until the user confirms it, each time
(a CLI flag, or a question in the app whose safe answer is the default), and `check` says it."""

from __future__ import annotations

import yaml
from pilot_helpers import make_app, wait_for

from tui.widgets import ConfirmStop, ConfirmTrust


def trusting_preset(demo, tmp_path):
    from trainer_core.config.presets import load_preset

    preset = load_preset(demo.presets / "demo-sft.yaml", ["model.trust_remote_code=true",
                                                         f"output_dir={tmp_path / 'runs'}"])
    path = tmp_path / "presets" / "shared.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({**preset.to_dict(), "name": "shared"}), encoding="utf-8")
    return path


def test_commands_that_load_the_model_ask_for_the_flag(demo, tmp_path, cli):
    preset = trusting_preset(demo, tmp_path)
    for command in (["train", str(preset), "--headless"], ["export-config", str(preset), "--out", str(tmp_path / "x")],
                    ["plan", str(preset), "--gpu-mib", "24576"]):
        result = cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "model.trust_remote_code: true" in result.stderr and "--trust-remote-code" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()  # refused before anything ran
    checked = cli("check", str(preset))
    assert checked.returncode == 0 and "warning: model.trust_remote_code is true" in checked.stderr


async def test_opening_a_trusting_preset_asks_and_enter_keeps_it_off(demo, tmp_path):
    path = trusting_preset(demo, tmp_path)
    app = make_app(demo, tmp_path)
    app.preset_folders = [path.parent]
    async with app.run_test(size=(100, 30)) as pilot:
        lst = app.query_one("#presets")
        await wait_for(pilot, lambda: lst.option_count == 1)
        lst.focus()
        lst.highlighted = 0
        await pilot.pause(0.2)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmTrust))
        assert app.state.get("model.trust_remote_code") is False  # off while asking
        await wait_for(pilot, lambda: app.focused is not None and app.focused.id == "no")  # the safe answer first
        await pilot.press("enter")  # the safe answer
        await wait_for(pilot, lambda: app.current == "machine")
        assert app.state.get("model.trust_remote_code") is False

        app.goto("start")
        await pilot.pause(0.2)
        lst.focus()
        lst.highlighted = 0
        await pilot.pause(0.2)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmTrust))
        await pilot.press("y")  # asked again, and said yes by name
        await wait_for(pilot, lambda: app.current == "machine")
        assert app.state.get("model.trust_remote_code") is True


async def test_stop_question_defaults_to_keep_training(demo, tmp_path):
    app = make_app(demo, tmp_path)
    answers = []
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ConfirmStop(), answers.append)
        await pilot.pause(0.2)
        await pilot.press("enter")
        await pilot.pause(0.2)
        app.push_screen(ConfirmStop(), answers.append)
        await pilot.pause(0.2)
        await pilot.press("y")
        await pilot.pause(0.2)
    assert answers == [False, True]
