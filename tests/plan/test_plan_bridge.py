"""One bridge from a preset to the planner (trainer_core/plan/from_preset.py): the CLI, the wizard, the fit
check and the probe run read a preset the same way, and every figure describes the preset's own setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer_core.config.presets import load_preset
from trainer_core.plan.from_preset import plan_inputs, plan_preset_report, planned_precision, settings_for
from trainer_core.plan.memory import GIB, estimate_memory
from trainer_core.plan.planner import format_plan
from trainer_core.plan.recommend import Goal, Target, recommend

ROOT = Path(__file__).resolve().parents[2]
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def text_preset(tmp_path: Path, model: str, lora: str) -> Path:
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"question {i}?", "completion": f"answer {i}"}) + "\n"
                            for i in range(8)))
    path = tmp_path / "preset.yaml"
    path.write_text(f"name: bridge\ntask: sft\nmodel: {{name_or_path: {model}}}\ndata: {{path: {data}}}\n"
                    f"lora: {lora}\ntraining: {{micro_batch_size: 2, gradient_accumulation_steps: 8, "
                    "max_length: 512}\n")
    return path


# ------------------------------------------------------------------ the bridge itself


def test_a_preset_and_its_wizard_draft_give_the_same_planner_inputs(demo_preset, tmp_path):
    from tui.wizard.state import WizardState

    preset = demo_preset("demo-sft", "lora.target_modules=[q_proj, v_proj]", "lora.dropout=0.1",
                         "data.max_samples=20", "training.gradient_accumulation_steps=3")
    state = WizardState()
    (tmp_path / "bridge.yaml").write_text(preset.to_yaml())
    state.load_preset_file(tmp_path / "bridge.yaml")
    inputs = plan_inputs(preset)
    assert plan_inputs(state.draft) == inputs
    assert inputs.lora.target_modules == ["q_proj", "v_proj"] and inputs.lora.dropout == 0.1
    assert inputs.data.max_samples == 20 and inputs.effective_batch == 4 * 3
    assert inputs.max_length == preset.training.max_length


def test_cli_overrides_keep_the_rest_of_the_data_section(demo_preset, demo):
    preset = demo_preset("demo-sft", "data.max_samples=5", "data.format=messages")
    inputs = plan_inputs(preset, data=str(demo.data / "other.jsonl"), effective_batch=32, max_length=256)
    assert inputs.data.path.endswith("other.jsonl")
    assert (inputs.data.max_samples, inputs.data.format) == (5, "messages")
    assert (inputs.effective_batch, inputs.max_length) == (32, 256)


def test_precision_rule_lives_in_one_place():
    """auto follows the target; quantized layers compute in bf16 where the run says fp32."""
    bf16_gpu, old_gpu, cpu = (Target("a", GIB, "cuda", True), Target("b", GIB, "cuda", False),
                              Target("c", GIB, "cpu", False))
    assert [planned_precision("auto", "none", t) for t in (bf16_gpu, old_gpu, cpu)] == ["bf16", "fp16", "fp32"]
    assert planned_precision("auto", "4bit", cpu) == "bf16"
    assert planned_precision("fp32", "4bit", bf16_gpu) == "bf16"
    assert planned_precision("fp16", "4bit", old_gpu) == "fp16"


def test_settings_follow_the_preset_as_written(demo_preset):
    preset = demo_preset("demo-sft", "lora.target_modules=[q_proj, v_proj]", "lora.r=4", "precision=fp32",
                         "training.micro_batch_size=3", "training.gradient_checkpointing=true",
                         "training.optimizer=adafactor")
    report = plan_preset_report(preset, gpu_mib=80_000)
    s = settings_for(preset, report)
    assert (s.precision, s.quantization, s.lora_r, s.lora_targets) == ("fp32", "none", 4, ["q_proj", "v_proj"])
    assert (s.micro_batch_size, s.gradient_accumulation_steps) == (3, preset.training.gradient_accumulation_steps)
    assert s.gradient_checkpointing and s.optimizer == "adafactor"
    assert settings_for(preset, report, precision="bf16").precision == "bf16"  # a precision resolved elsewhere


def test_fit_check_estimate_comes_through_the_bridge(demo_preset):
    from trainer_core.run.fit_check import preset_estimate

    preset = demo_preset("demo-sft", "lora.target_modules=[q_proj, v_proj]")
    report = plan_preset_report(preset, gpu_mib=80_000)
    expected = estimate_memory(report.model, settings_for(preset, report, precision="fp32")).peak_allocated
    assert preset_estimate(preset, "fp32") == expected
    everything = demo_preset("demo-sft")
    assert preset_estimate(everything, "fp32") > expected  # all linear layers adapted: more to keep


# ------------------------------------------------------------------ every JSON figure is the preset's


def test_json_trainable_params_are_the_presets_targets(tmp_path):
    preset = load_preset(text_preset(tmp_path, LLAMA_8B, "{r: 8, target_modules: [q_proj, v_proj]}"))
    report = plan_preset_report(preset, gpu_mib=81_920)
    assert report.plan.settings.lora_r == 8 and report.plan.settings.lora_targets == ["q_proj", "v_proj"]
    out = report.to_dict()
    assert out["params"]["trainable"] == 3_407_872 == report.plan.estimate.trainable_params
    assert "3,407,872 trainable parameters" in format_plan(report)


def test_json_trainable_params_without_lora_are_every_weight(tmp_path):
    preset = load_preset(text_preset(tmp_path, "Qwen/Qwen2.5-0.5B-Instruct", "{enabled: false}"))
    out = plan_preset_report(preset, gpu_mib=81_920).to_dict()
    assert out["params"]["trainable"] == out["params"]["total"]


# ------------------------------------------------------------------ the micro-batch's reason is true


def micro_reason(plan) -> str:
    return next(r.why for r in plan.reasons if r.field == "micro_batch_size")


def test_micro_batch_capped_by_the_effective_batch_says_so():
    from trainer_core.model.info import inspect_model

    info = inspect_model("Qwen/Qwen2.5-0.5B-Instruct")
    capped = recommend(info, Target("80 GiB", 80 * GIB, "cuda", True), Goal(effective_batch=4, text_tokens=256))
    assert capped.settings.micro_batch_size == 4
    assert "capped by the effective batch 4" in micro_reason(capped)
    assert "largest that fits" not in micro_reason(capped)
    tight = recommend(info, Target("8 GiB", 8 * GIB, "cuda", True), Goal(effective_batch=64, text_tokens=2048))
    assert tight.fits and tight.settings.micro_batch_size < 64
    assert "the largest that fits" in micro_reason(tight) and "would need" in micro_reason(tight)


# ------------------------------------------------------------------ data that cannot be reached


def plan_offline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", "plan", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_unreachable_hub_data_plans_from_max_length():
    """The README's command: a hub dataset with no network still plans, from max_length, and says so."""
    res = plan_offline("presets/smolvlm-chartqa-qlora.yaml", "--gpu-mib", "24576")
    assert res.returncode == 0, res.stderr
    assert "the data was not measured: could not reach the hub dataset 'HuggingFaceM4/ChartQA'" in res.stdout
    assert "Planned from training.max_length (1024 tokens per sample)" in res.stdout
    res = plan_offline("presets/smolvlm-chartqa-qlora.yaml", "--gpu-mib", "24576", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["data"] is None and "the data was not measured" in out["data_note"]
    assert out["seq_len"] >= 1024  # max_length, with the images at the processor's default size


def test_a_mistyped_local_file_is_still_an_error(tmp_path, monkeypatch):
    """Only a hub dataset id falls back; a data file that is not there stays the user's error."""
    from trainer_core.data.problems import DataError

    monkeypatch.chdir(tmp_path)
    path = text_preset(tmp_path, "Qwen/Qwen2.5-0.5B-Instruct", "{r: 8}")
    path.write_text(path.read_text().replace(str(tmp_path / "qa.jsonl"), "missing/qa.jsonl"))
    with pytest.raises(DataError):
        plan_preset_report(load_preset(path), gpu_mib=24576)
