"""Resume that a user can trust, on real demo runs: a checkpoint damaged after it was saved is skipped for the
newest intact one (and said so), and a preset that does not fit the run is refused before any weights load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer_core.config.presets import load_preset, save_preset
from trainer_core.events import EventStream, LogMessage, RunStarted, StepLogged
from trainer_core.run.checkpoints import MANIFEST
from trainer_core.run.engine import run_training
from trainer_core.run.resume import ResumeRefused, check_preset

pytestmark = pytest.mark.slow

QUIET = ["samples.every_steps=0", "samples.prompts=[]", "data.eval_fraction=0"]


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """One finished demo run of 6 steps with checkpoints at 3 and 6, trained once for the module."""
    preset = load_preset(demo.presets / "demo-sft.yaml", [f"output_dir={tmp_path_factory.mktemp('runs')}",
                                                          "training.max_steps=6", "training.save_steps=3", *QUIET])
    result = run_training(preset)
    assert result.status == "completed", result.error
    return result.run_dir


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run for one test to damage."""
    return Path(shutil.copytree(trained, tmp_path / trained.name))


def resume(run_dir: Path, *overrides: str):
    seen = []
    events = EventStream()
    events.subscribe(seen.append)
    preset = load_preset(run_dir / "preset.yaml", list(overrides))
    return run_training(preset, events=events, resume=run_dir), seen


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def cut_in_half(path: Path) -> tuple[int, int]:
    full = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(full // 2)
    return full // 2, full


def assert_resumed_from_3_to_9(result, seen, run_dir: Path) -> None:
    assert result.status == "completed", result.error
    assert result.steps == 9
    assert next(e for e in seen if isinstance(e, RunStarted)).resumed_from_step == 3
    assert [e.step for e in seen if isinstance(e, StepLogged)] == list(range(4, 10))
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))  # steps 4-6 of the first session were dropped, then trained again
    assert summary(run_dir)["resumed_from"]["step"] == 3


def test_each_checkpoint_lists_its_files_as_saved(trained):
    for ckpt in (trained / "checkpoints").glob("checkpoint-*"):
        listed = json.loads((ckpt / MANIFEST).read_text())["files"]
        on_disk = {p.relative_to(ckpt).as_posix(): p.stat().st_size for p in ckpt.rglob("*")
                   if p.is_file() and p.name != MANIFEST}
        assert {name: f["size"] for name, f in listed.items()} == on_disk
        assert "adapter_model.safetensors" in listed and "optimizer.pt" in listed


def test_a_truncated_checkpoint_is_skipped_for_the_intact_one_before_it(run):
    half, full = cut_in_half(run / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors")

    result, seen = resume(run, "training.max_steps=9")

    assert_resumed_from_3_to_9(result, seen, run)
    reason = f"adapter_model.safetensors is {half:,} bytes, {full:,} when saved"
    assert summary(run)["skipped_checkpoints"] == [{"checkpoint": "checkpoint-6", "reason": reason}]
    warnings = [e.message for e in seen if isinstance(e, LogMessage) and e.level == "warning"]
    assert f"checkpoint-6 is damaged ({reason}): resuming from checkpoint-3 instead" in warnings
    # The next save at step 6 replaced the damaged checkpoint: a later resume needs no skip.
    assert (run / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors").stat().st_size == full


def test_a_checkpoint_from_before_manifests_is_checked_by_its_headers(run):
    for manifest in (run / "checkpoints").glob(f"checkpoint-*/{MANIFEST}"):
        manifest.unlink()  # as saved by an older version
    half, _ = cut_in_half(run / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors")

    result, seen = resume(run, "training.max_steps=9")

    assert_resumed_from_3_to_9(result, seen, run)  # checkpoint-3 has no manifest either, and is accepted
    (skipped,) = summary(run)["skipped_checkpoints"]
    assert skipped["checkpoint"] == "checkpoint-6"
    assert skipped["reason"].startswith(f"adapter_model.safetensors is {half:,} bytes, its header needs ")


def test_no_intact_checkpoint_names_each_and_why(run):
    half, full = cut_in_half(run / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors")
    optimizer = run / "checkpoints" / "checkpoint-3" / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    data[-100] ^= 0xFF  # same size, one byte flipped near the end
    optimizer.write_bytes(bytes(data))

    result, _ = resume(run, "training.max_steps=9")

    assert result.status == "failed"
    assert f"no checkpoint of {run} is intact, so it cannot be resumed (" in result.error
    assert f"checkpoint-6: adapter_model.safetensors is {half:,} bytes, {full:,} when saved" in result.error
    assert "checkpoint-3: optimizer.pt has changed since it was saved (same size, other content)" in result.error
    assert result.traceback is None  # a known failure: explained, no traceback


def vlmtune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=300)


def test_resume_with_another_lora_rank_is_refused_then_resumes_with_its_own(run):
    refused = vlmtune("train", "--headless", "--resume", str(run), "--set", "lora.r=4",
                      "--set", "training.max_steps=9")

    assert refused.returncode == 2, refused.stderr[-2000:]
    assert (f"error: cannot resume {run} with this preset: lora.r is 4 here and 16 in the run (the adapter's "
            f"shape).") in refused.stderr
    assert "May change on resume: training.max_steps, training.epochs, training.learning_rate" in refused.stderr
    assert "SafetensorError" not in refused.stderr and "state_dict" not in refused.stderr
    assert "r: 16" in (run / "preset.yaml").read_text()  # the run's preset is left as it was
    assert summary(run)["status"] == "completed"

    ok = vlmtune("train", "--headless", "--resume", str(run), "--set", "training.max_steps=9")

    assert ok.returncode == 0, ok.stderr[-2000:]
    s = summary(run)
    assert s["status"] == "completed" and s["steps"] == 9 and s["resumed_from"]["step"] == 6
    assert s["skipped_checkpoints"] == []


def test_the_engine_refuses_too_and_keeps_the_run_preset(run):
    result, seen = resume(run, "lora.r=4", "lora.target_modules=[q_proj]", "training.max_steps=9")

    assert result.status == "failed" and isinstance(result.exception, ResumeRefused)
    assert "lora.r is 4 here and 16 in the run (the adapter's shape)" in result.error
    assert 'lora.target_modules is ["q_proj"] here and "auto" in the run (the layers the adapter holds)' in result.error
    assert not any(isinstance(e, RunStarted) for e in seen)  # refused before any weights load
    assert "r: 16" in (run / "preset.yaml").read_text()


def test_what_may_change_on_resume(demo_preset, tmp_path):
    save_preset(demo_preset("demo-sft"), tmp_path / "preset.yaml")

    allowed = demo_preset("demo-sft", "training.max_steps=50", "training.learning_rate=0.0001",
                          "training.max_length=256", "training.save_steps=5", "samples.every_steps=2",
                          f"output_dir={tmp_path / 'elsewhere'}")
    changes = check_preset(allowed, tmp_path)
    assert "training.max_steps: 40 -> 50" in changes and "training.max_length: 128 -> 256" in changes
    assert len(changes) == 6

    fixed = demo_preset("demo-sft", "model.name_or_path=other/model", "quantization=4bit", "lora.alpha=8",
                        "training.optimizer=adafactor", "task=dpo")
    with pytest.raises(ResumeRefused) as refused:
        check_preset(fixed, tmp_path)
    named = [d.split(" is ")[0] for d in refused.value.differences]
    assert named == ["task", "model.name_or_path", "quantization", "lora.alpha", "training.optimizer"]


def test_full_fine_tuning_ignores_the_unused_lora_fields(demo_preset, tmp_path):
    save_preset(demo_preset("demo-sft", "lora.enabled=false"), tmp_path / "preset.yaml")

    assert check_preset(demo_preset("demo-sft", "lora.enabled=false", "lora.r=4"), tmp_path) == []
    with pytest.raises(ResumeRefused, match=r"lora.enabled is true here and false in the run"):
        check_preset(demo_preset("demo-sft", "lora.r=4"), tmp_path)


def test_what_trains_is_fixed_on_resume_but_an_older_run_without_the_field_resumes(run):
    import yaml

    from trainer_core.config.presets import load_preset
    from trainer_core.run.resume import ResumeRefused, check_preset

    preset = load_preset(run / "preset.yaml")
    changed = load_preset(run / "preset.yaml", ["freeze_vision_tower=false"])
    with pytest.raises(ResumeRefused) as err:
        check_preset(changed, run)
    assert "freeze_vision_tower is false here and true in the run (the layers the checkpoint trains)" in str(err.value)
    # a run saved before these fields existed trained with their defaults: it resumes
    older = run.parent / "older"
    older.mkdir()
    saved = yaml.safe_load((run / "preset.yaml").read_text())
    for key in ("adapter", "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model"):
        saved.pop(key, None)
    saved["lora"].pop("use_dora", None)
    (older / "preset.yaml").write_text(yaml.safe_dump(saved))
    assert check_preset(preset, older) == []
