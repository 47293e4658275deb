"""The command line as a user runs it: real subprocesses, exit codes and messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets")


def vlmtune(*args: str, cwd: Path | None = None, timeout: int = 300, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


def imported_by(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print('MODULES:', ' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.rsplit("MODULES:", 1)[1].split())


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_nothing_heavy(flag):
    mods = imported_by(f"import sys; sys.argv=['vlmtune', '{flag}']\nfrom tui.cli import main\ntry:\n main()\n"
                       "except SystemExit:\n pass")
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_trainer_core_never_imports_textual():
    code = ("import importlib, pkgutil, trainer_core\n"
            "for m in pkgutil.walk_packages(trainer_core.__path__, 'trainer_core.'):\n"
            "    importlib.import_module(m.name)")
    mods = imported_by(code)
    assert not {m for m in mods if m == "textual" or m.startswith(("textual.", "tui"))}


def test_engine_modules_import_without_torch():
    # Presets, events and the CLI stay light; torch loads only inside the functions that need it.
    mods = imported_by("import trainer_core.config.presets, trainer_core.events, trainer_core.run.engine, trainer_core.run.folder")
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_version():
    out = vlmtune("--version")
    assert out.returncode == 0 and out.stdout.startswith("vlmtune 0.")


def test_check_reports_preset_errors_with_exit_2(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "task": "sft", "model": {"name_or_path": "m"},
                                 "data": {"path": "d"}, "trainig": {}}))
    out = vlmtune("check", str(f))
    assert out.returncode == 2
    assert "trainig: unknown key; did you mean 'training'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_flag_after_the_subcommand(tmp_path):
    out = vlmtune("check", str(tmp_path / "nope.yaml"), "--debug")
    assert "unrecognized arguments" not in out.stderr and "file not found" in out.stderr


def test_train_missing_preset_file(tmp_path):
    out = vlmtune("train", str(tmp_path / "nope.yaml"), "--headless")
    assert out.returncode == 2 and "file not found" in out.stderr and "Traceback" not in out.stderr


def test_train_bad_override(demo):
    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--set", "training.max_steps=lots", "--headless")
    assert out.returncode == 2
    assert "training.max_steps: expected an integer, got 'lots'" in out.stderr


@pytest.mark.slow
def test_hub_model_unreachable_is_explained(demo, tmp_path):
    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless",
                  "--set", "model.name_or_path=SomeOrg/some-model", "--set", f"output_dir={tmp_path}",
                  env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1
    assert "could not reach the model 'SomeOrg/some-model'" in out.stderr and "A local path works" in out.stderr
    assert "Traceback" not in out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_headless_train_chat_and_export(demo, tmp_path):
    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", "--set", f"output_dir={tmp_path}",
                  "--set", "training.max_steps=20")
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert "completed after 20 steps" in out.stderr and "loss" in out.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"

    image = demo.data / "images" / "chart_000.png"
    chat = vlmtune("chat", "--adapter", str(run_dir), "--prompt", "What is the value of B?", "--image", str(image),
                   "--max-new-tokens", "4")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip()  # an answer, whatever a 20-step tiny model says

    merged = tmp_path / "merged"
    exp = vlmtune("export", str(run_dir), "--out", str(merged))
    assert exp.returncode == 0, exp.stderr
    assert (merged / "model.safetensors").exists() and (merged / "processor_config.json").exists()
    again = vlmtune("export", str(run_dir), "--out", str(merged))
    assert again.returncode == 2 and "exists and is not empty" in again.stderr


def test_chat_errors(demo, tmp_path):
    out = vlmtune("chat", "--model", str(demo.model), "--prompt", "hi", "--image", str(tmp_path / "no.png"))
    assert out.returncode == 2 and "image not found" in out.stderr
    out = vlmtune("chat", "--adapter", str(tmp_path), "--prompt", "hi")
    assert out.returncode == 1 and "holds no LoRA adapter" in out.stderr


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resume_continues(demo, tmp_path):
    # A long run, interrupted as a user would with Ctrl-C once training is under way.
    cmd = [sys.executable, "-m", "tui.cli", "train", str(demo.presets / "demo-sft.yaml"), "--headless",
           "--set", f"output_dir={tmp_path}", "--set", "training.max_steps=100000", "--set", "samples.every_steps=0",
           "--set", "data.eval_fraction=0", "--set", "training.save_steps=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        found = list(tmp_path.glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            metrics = found[0]
            break
        time.sleep(0.2)
    assert metrics is not None, "training did not start"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    run_dir = metrics.parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped", summary
    stopped_at = summary["steps"]
    assert (run_dir / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()

    out = vlmtune("train", "--resume", str(run_dir), "--headless", "--set", f"training.max_steps={stopped_at + 3}")
    assert out.returncode == 0, out.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == stopped_at + 3
