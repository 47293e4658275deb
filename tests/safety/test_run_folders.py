"""vlmtune writes only into folders it made (marked) or empty ones, one run at a time, and never trains on
unrecorded: each case feeds the real command line (or the engine) the input and checks that nothing is lost
and the message says what to do. Run folders (--run-dir, --resume, output_dir with ~), the demo's --out, two
runs on one folder, a run record that cannot be written, and the monitor app when the folder cannot be made."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pilot_helpers import wait_for

QUIET = ["--set", "samples.every_steps=0", "--set", "samples.prompts=[]", "--set", "data.eval_fraction=0"]
SHORT = [*QUIET, "--set", "training.max_steps=2", "--set", "training.save_steps=2"]


def vlmtune(*args: str, cwd: Path | None = None, home: Path | None = None, timeout: int = 300):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (hidden ones too): equal before and after means untouched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def user_folder(root: Path, demo) -> Path:  # noqa: ANN001
    """A folder of someone's: results of their own, with a higher-numbered checkpoint than any run would make."""
    for name, data in {"notes.txt": b"mine", "adapter/adapter_model.safetensors": b"my adapter",
                       "checkpoints/checkpoint-900/trainer_state.json": b"{}", "summary.json": b'{"mine": 1}'}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def demo_copy(root: Path, demo) -> Path:  # noqa: ANN001
    """The demo folder (vlmtune-demo): its model/ is the base model every demo preset trains."""
    shutil.copytree(demo.root, root, ignore=shutil.ignore_patterns("runs"))
    return root


# -- 1. --run-dir: a folder vlmtune did not make for this run is refused, untouched

@pytest.mark.parametrize("make", [user_folder, demo_copy], ids=["user-files", "demo-folder"])
def test_run_dir_that_is_not_a_vlmtune_run_is_refused_untouched(demo, tmp_path, make):
    folder = make(tmp_path / "folder", demo)
    before = tree(folder)
    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", "--run-dir", str(folder), *SHORT)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: {folder} is not this run's folder" in out.stderr
    assert "--resume RUN_DIR" in out.stderr and "new or empty folder" in out.stderr
    if make is demo_copy:
        assert "it is the vlmtune demo (its model/ is the demo's base model" in out.stderr
    assert tree(folder) == before  # no adapter, model, checkpoint or summary replaced, no file added


@pytest.mark.slow
def test_run_dir_empty_is_used_and_another_run_is_refused(demo, tmp_path):
    run = tmp_path / "run"
    run.mkdir()  # an empty folder is fine
    first = vlmtune("train", str(demo.presets / "demo-text-sft.yaml"), "--headless", "--run-dir", str(run), *SHORT)
    assert first.returncode == 0, first.stderr[-2000:]
    assert summary(run)["status"] == "completed" and (run / ".vlmtune-run").read_text() == "demo-text-sft\n"
    before = tree(run)

    other = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", "--run-dir", str(run), *SHORT)
    assert other.returncode == 2, other.stderr[-2000:]
    assert f"{run} is not this run's folder: it holds a run of 'demo-text-sft', not of 'demo-sft'" in other.stderr
    again = vlmtune("train", str(demo.presets / "demo-text-sft.yaml"), "--headless", "--run-dir", str(run), *SHORT)
    assert again.returncode == 2, again.stderr[-2000:]
    assert "it holds a run of 'demo-text-sft' already (adapter/, checkpoints, metrics.jsonl)" in again.stderr
    assert f"Continue it with `vlmtune train --resume {run}`" in again.stderr
    assert tree(run) == before


def test_resume_of_a_folder_that_is_no_run_is_refused_untouched(demo, tmp_path):
    from trainer_core.config.presets import load_preset
    from trainer_core.run.engine import run_training
    from trainer_core.run.folder import NotThisRunsFolder

    folder = user_folder(tmp_path / "folder", demo)
    (folder / "preset.yaml").write_bytes((demo.presets / "demo-sft.yaml").read_bytes())  # not a run for all that
    before = tree(folder)
    with pytest.raises(NotThisRunsFolder, match="is not a vlmtune run folder"):
        run_training(load_preset(folder / "preset.yaml"), resume=folder)
    assert tree(folder) == before


# -- 2. vlmtune demo --out

def test_demo_out_refuses_a_folder_that_is_not_a_demo(tmp_path):
    folder = tmp_path / "mine"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model-00001-of-00002.safetensors").write_bytes(b"someone's weights")
    (folder / "data.jsonl").write_text("{}\n")
    before = tree(folder)
    for force in ([], ["--force"]):
        out = vlmtune("demo", "--out", str(folder), "--no-app", *force)
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"error: {folder} is not a vlmtune demo" in out.stderr
        assert "--force rebuilds only a demo" in out.stderr and "new or empty folder" in out.stderr
        assert tree(folder) == before


@pytest.mark.slow
def test_demo_force_rebuilds_a_demo_and_keeps_its_runs(demo, tmp_path):
    folder = demo_copy(tmp_path / "vlmtune-demo", demo)
    (folder / ".vlmtune-demo").unlink()  # a demo built before the marker: known by its contents
    (folder / "runs").mkdir()
    (folder / "runs" / "kept.txt").write_text("a run of mine")
    out = vlmtune("demo", "--out", str(folder), "--no-app", "--force")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (folder / ".vlmtune-demo").is_file() and (folder / "model" / "config.json").is_file()
    assert (folder / "runs" / "kept.txt").read_text() == "a run of mine"


# -- 3. one run at a time in a run folder

@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_is_refused(demo, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "tui.cli", "train", str(demo.presets / "demo-sft.yaml"),
                              "--headless", "--run-dir", str(run), *QUIET, "--set", "training.max_steps=100000",
                              "--set", "training.save_steps=100000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.2)
        second = vlmtune("train", "--resume", str(run), "--headless", *QUIET)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"error: {run} is in use by another vlmtune (pid {first.pid})" in second.stderr
        assert summary(run)["status"] == "running" and summary(run)["pid"] == first.pid  # the second wrote nothing
    finally:
        first.send_signal(signal.SIGTERM)  # the first stops the clean way, its record whole
        _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err[-2000:]
    s = summary(run)
    assert s["status"] == "stopped" and steps(run) == list(range(1, s["steps"] + 1))


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from trainer_core.run.lock import RunLock
    RunLock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


def test_the_lock_of_a_killed_run_is_released(tmp_path):
    from trainer_core.run.lock import RunInUse, RunLock

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=rf"is in use by another vlmtune \(pid {holder.pid}\)"):
            RunLock.acquire(tmp_path)
    finally:
        holder.kill()  # kill -9: no handler runs, the OS drops the lock
        holder.wait()
    RunLock.acquire(tmp_path).release()


# -- 4. a run whose record cannot be written stops and fails, its checkpoints kept

def test_a_record_that_cannot_be_written_fails_the_run(demo_preset):
    from transformers import TrainerCallback

    from trainer_core.run.engine import run_training

    class MetricsFileBecomesADirectory(TrainerCallback):
        # as a stale mount or a swapped folder would leave it: the first step's row cannot be written
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            (Path(args.output_dir).parent / "metrics.jsonl").mkdir()

    preset = demo_preset("demo-sft", "training.max_steps=8", "training.save_steps=100", "samples.every_steps=0",
                         "data.eval_fraction=0")
    result = run_training(preset, callbacks=[MetricsFileBecomesADirectory()])
    run = result.run_dir
    assert result.status == "failed" and result.steps == 1  # stopped at the next step, not trained on unrecorded
    assert f"could not write the run's record metrics.jsonl in {run} (Is a directory)" in result.error
    assert "the run stopped at step 1" in result.error
    assert f"the checkpoints saved so far are kept (the newest: checkpoint-1) in {run / 'checkpoints'}" in result.error
    assert f"`vlmtune train --resume {run}`" in result.error
    s = summary(run)
    assert s["status"] == "failed" and s["error"] == result.error
    assert (run / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (run / "adapter").exists()


FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    from transformers import TrainerCallback
    from trainer_core.config.presets import load_preset
    from trainer_core.run.engine import run_training

    class DiskFills(TrainerCallback):
        # After step 3's checkpoint no file may grow: the next metrics row fails as on a full disk.
        def on_save(self, args, state, control, **kw):
            if state.global_step == 3:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
                size = (Path(args.output_dir).parent / "metrics.jsonl").stat().st_size
                resource.setrlimit(resource.RLIMIT_FSIZE, (size + 16, resource.RLIM_INFINITY))

    result = run_training(load_preset(sys.argv[1], sys.argv[2:]), callbacks=[DiskFills()])
    print("RUN", json.dumps({"status": result.status, "error": result.error, "run_dir": str(result.run_dir),
                             "steps": result.steps}))
""")


@pytest.mark.slow
def test_a_full_disk_while_recording_fails_the_run(demo, tmp_path):
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    out = subprocess.run([sys.executable, str(script), str(demo.presets / "demo-sft.yaml"),
                          f"output_dir={tmp_path / 'runs'}", "training.max_steps=12", "training.save_steps=3",
                          "samples.every_steps=0", "samples.prompts=[]", "data.eval_fraction=0"],
                         capture_output=True, text=True, timeout=300)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RUN ")), None)
    assert line, out.stderr[-3000:]
    result = json.loads(line[4:])
    run = Path(result["run_dir"])
    assert result["status"] == "failed" and result["steps"] <= 4, result
    assert "could not write the run's record" in result["error"] and "File too large" in result["error"]
    assert "the checkpoints saved so far are kept (the newest: checkpoint-3)" in result["error"]
    assert summary(run)["status"] != "completed"
    assert (run / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()


# -- 5. ~ in output_dir, --resume and --run-dir is the user's home

@pytest.mark.slow
def test_tilde_paths_land_in_home(demo, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    preset = str(demo.presets / "demo-sft.yaml")
    first = vlmtune("train", preset, "--headless", *SHORT, "--set", "output_dir=~/x", cwd=work, home=home)
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = (home / "x").iterdir()
    assert (run / "checkpoints" / "checkpoint-2").is_dir() and (run / "summary.json").is_file()
    assert not (work / "~").exists()

    resumed = vlmtune("train", "--resume", f"~/x/{run.name}", "--headless", *QUIET, "--set", "training.max_steps=3",
                      cwd=work, home=home)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert summary(run)["resumed_from"]["step"] == 2 and summary(run)["steps"] == 3
    refused = vlmtune("train", str(demo.presets / "demo-text-sft.yaml"), "--headless", "--run-dir", f"~/x/{run.name}",
                      cwd=work, home=home)
    assert refused.returncode == 2 and f"{run} is not this run's folder" in refused.stderr
    assert not (work / "~").exists()


# -- 6. the monitor app when the run cannot start

async def test_the_monitor_shows_a_run_that_cannot_start_and_quits(demo_preset, tmp_path):
    from tui.monitor.app import MonitorApp

    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    app = MonitorApp(preset=demo_preset("demo-sft", f"output_dir={in_the_way / 'runs'}"))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.result is not None, timeout=60)
        await pilot.pause(0.3)
        title = str(app.screen.query_one("#run-title").content)
        assert "failed: could not create the run folder" in title and "Not a directory" in title
        await pilot.press("ctrl+q")
        await pilot.pause(0.3)
    assert app.result.status == "failed" and not app.is_running
    assert in_the_way.read_text() == "not a folder"
