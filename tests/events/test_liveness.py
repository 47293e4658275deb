"""A followed run never shows "running" forever: a deleted run folder, or a process that ended without finishing
(killed, or a background child that died at start), is said as such, with the way to continue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import psutil

from trainer_core.events.history import RunFollower, RunHistory


def a_running_run(tmp_path, pid: int):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 1, "max_steps": 9, "loss": 1.0}) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "running", "name": "r", "pid": pid}))
    return run


def ended_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_process_keeps_its_run_running(tmp_path):
    history = RunHistory()
    RunFollower(a_running_run(tmp_path, os.getpid()), history).poll()
    assert history.status == "running"


def test_a_run_whose_process_ended_says_so_and_how_to_continue(tmp_path):
    run = a_running_run(tmp_path, ended_pid())
    history = RunHistory()
    RunFollower(run, history).poll()
    view = history.snapshot()
    assert view.status == "failed" and "ended without finishing" in view.error
    assert f"vlmtune train --resume {run} --headless" in view.error


def test_a_deleted_run_folder_says_so(tmp_path):
    run = a_running_run(tmp_path, os.getpid())
    history = RunHistory()
    follower = RunFollower(run, history)
    follower.poll()
    shutil.rmtree(run)
    follower.poll()
    assert history.status == "failed" and "no longer exists" in history.snapshot().error


def test_a_background_child_that_dies_at_start_is_seen_and_reaped(tmp_path, monkeypatch):
    from trainer_core.run.background import start_detached

    monkeypatch.chdir(tmp_path)
    run, pid = start_detached(tmp_path / "no-such-preset.yaml", tmp_path / "runs", "broken")
    history = RunHistory()
    follower = RunFollower(run, history)
    deadline = time.monotonic() + 120
    while history.status in ("starting", "running") and time.monotonic() < deadline:
        follower.poll()
        time.sleep(0.2)
    assert history.status == "failed" and "console.log" in history.snapshot().error
    assert "no-such-preset.yaml" in (run / "console.log").read_text()  # the child's own words, kept
    time.sleep(0.5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
