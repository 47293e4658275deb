"""The wizard driven as a user drives it (Textual Pilot): the whole flow for SFT and DPO on the demo, edits,
the saved preset, training starting, the error paths that block "next", and a first frame without torch."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pilot_helpers import CPU_MACHINE, make_app, open_preset, wait_for

from tui.wizard.app import VlmtuneApp


async def walk_to_plan(pilot, app) -> None:
    """From the machine step, next through model, data and plan, waiting for each step's work."""
    for step, ready in (("model", lambda: app.state.model_info is not None),
                        ("data", lambda: app.state.data_report is not None),
                        ("plan", lambda: app.state.plan is not None)):
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda s=step: app.current == s)
        await wait_for(pilot, ready)
    await pilot.pause(0.2)


async def walk_to_review(pilot, app) -> None:
    await walk_to_plan(pilot, app)
    await pilot.press("ctrl+n")
    await wait_for(pilot, lambda: app.current == "review")


@pytest.mark.parametrize(("preset", "task"), [("demo-sft", "sft"), ("demo-dpo", "dpo")])
async def test_whole_flow_edit_save_and_train(demo, tmp_path, monkeypatch, preset, task):
    monkeypatch.chdir(tmp_path)
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, preset)
        await walk_to_review(pilot, app)
        assert app.state.data_report.ok and app.state.plan.plan.fits
        # go back to the plan, edit fields as a user types, come back: state is kept
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: app.current == "plan")
        steps_input = app.query_one("#f-training-max_steps")
        steps_input.value = "3"
        app.query_one("#f-lora-r").value = "8"
        app.query_one("#f-training-micro_batch_size").value = "2"
        if task == "dpo":
            app.query_one("#f-dpo-beta").value = "0.2"
        await pilot.pause(0.2)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.current == "review")
        app.query_one("#name").value = f"wizard-{task}"
        await pilot.pause(0.1)
        app.query_one("#train").press()
        await wait_for(pilot, lambda: app.last_result is not None, timeout=120)
        await pilot.pause(0.3)  # the monitor's timer draws the end
        assert app.screen.__class__.__name__ == "MonitorScreen"
        status = str(app.screen.query_one("#run-title").content)
        await pilot.press("escape")  # back to the wizard, which kept its state
        await wait_for(pilot, lambda: app.screen.__class__.__name__ != "MonitorScreen")
        assert app.current == "review"
    saved = tmp_path / "out" / f"wizard-{task}.yaml"
    raw = yaml.safe_load(saved.read_text())
    assert raw["name"] == f"wizard-{task}" and raw["task"] == task
    assert raw["training"]["max_steps"] == 3 and raw["lora"]["r"] == 8 and raw["training"]["micro_batch_size"] == 2
    assert raw["model"]["name_or_path"] == str(demo.model)
    if task == "dpo":
        assert raw["dpo"]["beta"] == 0.2
    assert app.last_result.status == "completed" and app.last_result.steps == 3
    assert "completed: final loss" in status and "step 3/3" in status


async def test_first_screen_lists_presets_and_runs_without_torch(demo, tmp_path):
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from tui.wizard.app import VlmtuneApp\n"
        "async def main():\n"
        f"    app = VlmtuneApp(preset_folders=[Path({str(demo.presets)!r})])\n"
        "    async with app.run_test() as pilot:\n"
        "        await pilot.pause()\n"
        "        assert app.query_one('#presets').option_count == 4\n"
        "        print('HEAVY', app.heavy_at_first_frame, 'MS', round(app.startup_ms))\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


async def test_missing_model_path_blocks_next(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.query_one("#new").press()
        await wait_for(pilot, lambda: app.current == "machine")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.current == "model")
        field = app.query_one("#model-path")
        field.value = str(tmp_path / "no-such-model")
        field.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one("#model-error").display)
        assert "model folder not found" in str(app.query_one("#model-error").content)
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert app.current == "model"
        assert "not been inspected" in str(app.query_one("#blocked").content)


async def test_data_with_problems_blocks_next_until_skip(demo, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": ""}\n')
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-text-sft")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.state.model_info is not None)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.state.data_report is not None)
        path = app.query_one("#data-path")
        path.value = str(bad)
        path.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.state.data_report is not None and app.state.data_report.source == str(bad))
        await pilot.pause(0.1)
        assert "line 2, column 'completion': is empty" in str(app.query_one("#problems").content)
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert app.current == "data" and "rows have problems" in str(app.query_one("#blocked").content)
        app.query_one("#skip").value = True
        await pilot.pause(0.1)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.current == "plan")


async def test_unreadable_dataset_shows_its_message(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.state.model_info is not None)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.current == "data")
        path = app.query_one("#data-path")
        path.value = str(tmp_path / "missing.jsonl")
        path.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one("#problems").display)
        assert "file not found" in str(app.query_one("#problems").content)
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert app.current == "data"


async def test_plan_that_does_not_fit_turns_red_and_blocks(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        app.state.gpu_mib = 1  # a 1 MiB GPU: nothing fits
        app.state.machine = CPU_MACHINE
        await walk_to_plan(pilot, app)
        assert not app.state.plan.plan.fits
        assert "does NOT fit" in str(app.query_one("#memory").content)
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert app.current == "plan" and "does not fit" in str(app.query_one("#blocked").content)


async def test_invalid_field_is_shown_inline(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        await walk_to_review(pilot, app)
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: app.current == "plan")
        app.query_one("#f-lora-r").value = "0"
        await pilot.pause(0.1)
        assert "lora.r: must be a positive integer" in str(app.query_one("#field-error").content)
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert app.current == "plan"


@pytest.mark.parametrize("size", [(100, 30), (80, 24)])
async def test_every_step_draws_at_both_sizes(demo, tmp_path, size):
    """Each step renders without errors at 100x30 and 80x24 (screenshots kept for a look)."""
    app = make_app(demo, tmp_path)
    async with app.run_test(size=size) as pilot:
        await open_preset(pilot, app, "demo-sft")
        shots = [app.save_screenshot(str(tmp_path / f"machine-{size[0]}.svg"))]
        await walk_to_review(pilot, app)
        for step in ("model", "data", "plan", "review"):
            app.goto(step)
            await pilot.pause(0.1)
            shots.append(app.save_screenshot(str(tmp_path / f"{step}-{size[0]}.svg")))
    assert all(Path(s).stat().st_size > 1000 for s in shots)


async def test_quit_while_training_asks_then_stops_the_run_cleanly(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-text-sft")
        await walk_to_review(pilot, app)
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: app.current == "plan")
        app.query_one("#f-training-max_steps").value = "100000"
        app.state.set("name", "quit-test")  # saved as a new preset: the shared demo's own stays as it is
        await pilot.pause(0.1)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: app._progress.get("step", 0) >= 2 if hasattr(app, "_progress") else False,
                       timeout=120)
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
        assert app.screen.__class__.__name__ == "ConfirmQuit" and app.training
        app.screen.query_one("#yes").press()
        await wait_for(pilot, lambda: app.last_result is not None, timeout=120)
    assert app.last_result.status == "stopped" and app.last_result.steps < 100000
    assert (app.last_result.run_dir / "adapter" / "adapter_model.safetensors").exists()


async def test_run_in_background_then_watch_it(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-text-sft")
        await walk_to_review(pilot, app)
        app.query_one("#name").value = "bg-run"
        await pilot.pause(0.1)
        area = app.query_one("#yaml")  # a short run, set as a user would in the YAML
        area.text = re.sub(r"max_steps: -?\d+", "max_steps: 6", area.text)
        await pilot.pause(0.2)
        assert app.state.get("training.max_steps") == 6
        app.query_one("#background").press()
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "MonitorScreen")
        run_dir, pid = app.background_runs[0]
        try:
            await wait_for(pilot, lambda: app.screen.history.snapshot().status == "completed", timeout=420)
        finally:  # a detached run outlives a failed test: it must not go on using the cores of the next ones
            import os
            import signal

            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await pilot.pause(0.3)
        assert "completed: final loss" in str(app.screen.query_one("#run-title").content)
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["pid"] == pid  # the run was the detached process
    assert (tmp_path / "out" / "bg-run.yaml").exists()


async def test_wizard_plans_a_preset_as_vlmtune_plan_does(demo, tmp_path):
    """A preset opened in the wizard gets the recommendation and memory figures `vlmtune plan` gives it: its
    LoRA targets and dropout, and its data as the preset reads it (max_samples), are planned as written."""
    from trainer_core.config.presets import load_preset
    from trainer_core.plan.from_preset import plan_preset_report, settings_for

    preset = load_preset(demo.presets / "demo-sft.yaml", ["lora.target_modules=[q_proj, v_proj]",
                                                          "lora.dropout=0.1", "data.max_samples=24"])
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "bridge.yaml").write_text(preset.to_yaml())
    app = VlmtuneApp(preset_folders=[folder], run_folders=[tmp_path / "runs"], presets_dir=tmp_path / "out",
                     machine=CPU_MACHINE)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "bridge")
        await walk_to_plan(pilot, app)
        report, draft, rows = app.state.plan, app.state.draft, app.state.data_report.rows
    assert rows == 24  # the data step read the rows training will read
    assert report.goal.lora_targets == ["q_proj", "v_proj"] and report.goal.lora_dropout == 0.1
    assert report == plan_preset_report(preset, machine=CPU_MACHINE)
    assert settings_for(draft, report) == report.plan.settings  # the memory bar shows the plan's own figures


async def test_reapplied_recommendation_sets_alpha_with_the_rank(demo, tmp_path):
    app = make_app(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_preset(pilot, app, "demo-sft")
        await walk_to_plan(pilot, app)
        planned = app.state.plan.plan.settings.lora_r
        app.query_one("#f-lora-alpha").value = "7"
        await pilot.pause(0.1)
        app.query_one("#reapply").press()
        await pilot.pause(0.1)
        assert (app.state.get("lora.r"), app.state.get("lora.alpha")) == (planned, 7)  # rank kept: alpha too
        app.query_one("#f-lora-r").value = str(4 * planned)
        await pilot.pause(0.1)
        assert app.state.get("lora.r") == 4 * planned
        app.query_one("#reapply").press()
        await pilot.pause(0.1)
        assert (app.state.get("lora.r"), app.state.get("lora.alpha")) == (planned, 2 * planned)
        assert app.query_one("#f-lora-alpha").value == str(2 * planned)
