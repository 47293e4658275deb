"""Child processes run vlmtune's own code: a `tui/` or `trainer_core/` folder in the user's working directory
is not imported in its place (the background run and the multi-process launch use Python's safe path)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from trainer_core.config.presets import save_preset

pytestmark = pytest.mark.slow


def impostor(cwd: Path, module: str, marker: Path) -> None:
    """A package tree in `cwd` whose `module` writes `marker` when run: what a user's project folder may hold."""
    parts = module.split(".")
    folder = cwd
    for part in parts[:-1]:
        folder = folder / part
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text("")
    (folder / f"{parts[-1]}.py").write_text(f"open({str(marker)!r}, 'w').write('impostor ran')\n")


def wait_for_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already
            return
        if done:
            return
        time.sleep(0.2)
    raise AssertionError(f"process {pid} still running after {timeout} s")


def test_background_run_ignores_a_tui_folder_in_the_working_directory(demo_preset, tmp_path, monkeypatch):
    from trainer_core.run.background import start_detached

    cwd = tmp_path / "project"
    cwd.mkdir()
    marker = tmp_path / "impostor-ran"
    impostor(cwd, "tui.cli.__main__", marker)
    preset = demo_preset("demo-text-sft", "training.max_steps=1", "samples.every_steps=0")
    saved = save_preset(preset, tmp_path / "preset.yaml")
    monkeypatch.chdir(cwd)
    run_dir, pid = start_detached(saved, preset.output_dir, preset.name)
    wait_for_exit(pid, timeout=300)
    assert not marker.exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", (run_dir / "console.log").read_text()[-2000:]


def test_multi_process_launch_ignores_a_trainer_core_folder_in_the_working_directory(demo_preset, tmp_path,
                                                                                     monkeypatch):
    from trainer_core.run.distributed import rank_errors, start

    cwd = tmp_path / "project"
    cwd.mkdir()
    marker = tmp_path / "impostor-ran"
    impostor(cwd, "trainer_core.run.worker", marker)
    preset = demo_preset("demo-text-sft", "distributed.num_processes=2")
    run_dir = tmp_path / "run"
    monkeypatch.chdir(cwd)
    # A preset file that is gone: vlmtune's own worker says so on each rank (quickly), an impostor would not.
    launch = start(preset, tmp_path / "gone.yaml", run_dir, resume=False, precision="fp32",
                   log_file=tmp_path / "console.log")
    assert launch.process.wait(timeout=300) != 0
    assert not marker.exists()
    errors = rank_errors(run_dir)
    assert errors and all("could not read the preset" in error for _, error in errors), \
        (tmp_path / "console.log").read_text()[-2000:]
