"""What the Pilot tests share: waiting for a worker's result to reach the screen, the wizard on a fixed CPU
machine, and opening one of its presets."""

from __future__ import annotations

from trainer_core.plan.probe import MachineInfo
from tui.wizard.app import VlmtuneApp


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the app")


CPU_MACHINE = MachineInfo(backend="cpu", gpus=[], cpu={"cores_physical": 2, "cores_logical": 2, "model": "test"},
                          ram={"total_bytes": 16 * 2**30, "available_bytes": 12 * 2**30},
                          disk={"path": "/", "free_bytes": 100 * 2**30, "total_bytes": 200 * 2**30}, notes=[])


def make_app(demo, tmp_path, **kw) -> VlmtuneApp:
    return VlmtuneApp(preset_folders=[demo.presets], run_folders=[tmp_path / "runs"], presets_dir=tmp_path / "out",
                      machine=kw.pop("machine", CPU_MACHINE), **kw)




async def open_preset(pilot, app, name: str) -> None:
    lst = app.query_one("#presets")
    ids = [o.id for o in lst._options]
    lst.focus()
    lst.highlighted = ids.index(str((app.preset_folders[0] / f"{name}.yaml").resolve()))
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.current == "machine")
