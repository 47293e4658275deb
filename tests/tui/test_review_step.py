"""The Review step: every preset field editable as YAML and checked as typed; Save writes the opened file, and
replaces another existing file only when the user says so."""

from __future__ import annotations

import shutil

import yaml
from pilot_helpers import CPU_MACHINE, wait_for
from test_wizard import walk_to_review

from tui.wizard.app import VlmtuneApp


def _app(demo, tmp_path) -> VlmtuneApp:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("demo-sft", "demo-text-sft"):
        text = (demo.presets / f"{name}.yaml").read_text()
        # the copies point at the demo's model and data wherever they are read from
        (folder / f"{name}.yaml").write_text(text.replace("../", f"{demo.root}/"))
    return VlmtuneApp(preset_folders=[folder], run_folders=[tmp_path / "runs"], presets_dir=tmp_path / "out",
                      machine=CPU_MACHINE)


async def _open(pilot, app, name: str) -> None:
    lst = app.query_one("#presets")
    lst.focus()
    lst.highlighted = [o.id for o in lst._options].index(str((app.preset_folders[0] / f"{name}.yaml").resolve()))
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.current == "machine")


async def test_yaml_edits_reach_the_draft_and_errors_name_their_place(demo, tmp_path):
    app = _app(demo, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _open(pilot, app, "demo-sft")
        await walk_to_review(pilot, app)
        area = app.query_one("#yaml")
        text = area.text
        # fields the other steps have no control for: the samples' schedule, warmup, DPO loss
        area.text = text.replace("warmup_ratio: 0.0", "warmup_ratio: 0.1") if "warmup_ratio: 0.0" in text else \
            text + "\n"
        data = yaml.safe_load(text)
        data["training"]["warmup_ratio"] = 0.1
        data["samples"]["every_steps"] = 7
        area.text = yaml.safe_dump(data, sort_keys=False)
        await pilot.pause(0.2)
        assert app.state.get("training.warmup_ratio") == 0.1 and app.state.get("samples.every_steps") == 7
        assert not app.query_one("#review-error").display
        # a YAML slip: the place, and the draft untouched
        area.text = "name: x\ntraining: [1, 2\n"
        await pilot.pause(0.2)
        error = str(app.query_one("#review-error").content)
        assert "line" in error and "not valid YAML" in error
        assert app.state.get("samples.every_steps") == 7
        # a bad value: the field named
        data["training"]["learning_rate"] = -1
        area.text = yaml.safe_dump(data, sort_keys=False)
        await pilot.pause(0.2)
        assert "training.learning_rate" in str(app.query_one("#review-error").content)
        # a new data path: the data is checked again before training
        data["training"]["learning_rate"] = 1e-4
        data["data"]["max_samples"] = 10
        area.text = yaml.safe_dump(data, sort_keys=False)
        await pilot.pause(0.2)
        assert app.state.get("data.max_samples") == 10 and app.state.data_report is None


async def test_save_writes_the_opened_file_and_asks_before_replacing_another(demo, tmp_path):
    app = _app(demo, tmp_path)
    opened = app.preset_folders[0] / "demo-text-sft.yaml"
    async with app.run_test(size=(80, 24)) as pilot:
        await _open(pilot, app, "demo-text-sft")
        await walk_to_review(pilot, app)
        assert app.query_one("#save-path").value == str(opened.resolve())
        data = yaml.safe_load(app.query_one("#yaml").text)
        data["training"]["warmup_ratio"] = 0.25
        app.query_one("#yaml").text = yaml.safe_dump(data, sort_keys=False)
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")  # the opened file: saved without a question
        await pilot.pause(0.2)
        assert yaml.safe_load(opened.read_text())["training"]["warmup_ratio"] == 0.25
        # another file that exists: asked, and Enter keeps it
        other = app.preset_folders[0] / "demo-sft.yaml"
        before = other.read_text()
        app.query_one("#save-path").value = str(other)
        await pilot.pause(0.1)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "Confirm")
        assert "exists" in str(app.screen.query_one("Label").content)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert other.read_text() == before
        # y replaces it
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "Confirm")
        await pilot.press("y")
        await pilot.pause(0.2)
        assert yaml.safe_load(other.read_text())["training"]["warmup_ratio"] == 0.25
    # paths in a saved preset work from anywhere
    saved = yaml.safe_load(other.read_text())
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(other, moved / "p.yaml")
    from trainer_core.config.presets import load_preset

    preset = load_preset(moved / "p.yaml")
    from pathlib import Path

    assert Path(preset.model.name_or_path).is_dir() and Path(preset.data.path).is_file()
    assert saved["model"]["name_or_path"] == preset.model.name_or_path
