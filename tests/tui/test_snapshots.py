"""Snapshot tests of every wizard step at 100x30 and 80x24 (pytest-textual-snapshot).

The demo is built at a fixed path and the machine is a fixed CPU, so every figure and path on screen is
the same on any machine. Update after an intended change: pytest tests/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from trainer_core.plan.probe import MachineInfo

ROOT = Path(tempfile.gettempdir()) / "vlmtune-snapshots"
MACHINE = MachineInfo(backend="cpu", gpus=[], cpu={"cores_physical": 2, "cores_logical": 2, "model": "CPU"},
                      ram={"total_bytes": 16 * 2**30, "available_bytes": 12 * 2**30},
                      disk={"path": "/", "free_bytes": 100 * 2**30, "total_bytes": 200 * 2**30},
                      notes=["No GPU found: training runs on the CPU (slow; fine for the tiny demo)."])
SIZES = [(100, 30), (80, 24)]
STEPS = ["start", "machine", "model", "data", "plan", "review"]


@pytest.fixture(scope="module")
def fixed_demo():
    from trainer_core.demo import build_demo

    shutil.rmtree(ROOT, ignore_errors=True)
    return build_demo(ROOT / "demo")


def app_at(step: str):
    from tui.wizard.app import VlmtuneApp

    app = VlmtuneApp(preset_folders=[ROOT / "demo" / "presets"], run_folders=[ROOT / "no-runs"],
                     presets_dir=ROOT / "out", machine=MACHINE)

    async def run_before(pilot) -> None:
        if step == "start":
            return
        app.state.load_preset_file(ROOT / "demo" / "presets" / "demo-sft.yaml")
        app.goto("machine")
        waits = {"model": lambda: app.state.model_info is not None,
                 "data": lambda: app.state.data_report is not None,
                 "plan": lambda: app.state.plan is not None}
        for s in STEPS[2:STEPS.index(step) + 1]:
            app.goto(s)
            for _ in range(600):
                if s not in waits or waits[s]():
                    break
                await pilot.pause(0.05)
        await pilot.pause(0.2)
        app.query_one("#blocked").update("")
        from textual.widgets import Input

        for field in app.query(Input):  # focus lands in a field now: a blinking cursor would make frames differ
            field.cursor_blink = False
        await pilot.pause(0.05)

    return app, run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("step", STEPS)
def test_step_snapshot(fixed_demo, snap_compare, step, size):
    app, run_before = app_at(step)
    assert snap_compare(app, terminal_size=size, run_before=run_before)
