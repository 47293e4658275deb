"""The planner knows each option: trainable counts equal PEFT's own (get_nb_trainable_parameters) on the demo
models, and DoRA, prompt tuning, padding-free, packing and image_max_pixels move the estimate as they should."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer_core.model.info import inspect_model
from trainer_core.plan.memory import TrainSettings, estimate_memory, trainable_params

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "lora": ["lora.r=8"],
    "dora": ["lora.r=8", "lora.use_dora=true"],
    "rslora": ["lora.r=8", "lora.use_rslora=true"],
    "dora+vision": ["lora.use_dora=true", "lora.train_vision_tower=true"],
    "prompt_tuning": ["adapter=prompt_tuning", "prompt_tuning.num_virtual_tokens=7"],
    "prefix_tuning": ["adapter=prefix_tuning", "prefix_tuning.num_virtual_tokens=5"],
    "prefix_projection": ["adapter=prefix_tuning", "prefix_tuning.prefix_projection=true"],
}


def peft_count(preset, model_dir):
    from peft import get_peft_model

    from trainer_core.config.library_args import lora_config
    from trainer_core.model.loading import load_model
    from trainer_core.model.lora_targets import auto_target_modules

    loaded = load_model(str(model_dir), precision="fp32")
    targets = auto_target_modules(loaded.model, include_vision=preset.lora.train_vision_tower)
    return get_peft_model(loaded.model, lora_config(preset, targets)).get_nb_trainable_parameters()[0]


def planned(preset, info):
    from trainer_core.plan.from_preset import plan_options

    o = plan_options(preset)
    s = TrainSettings(lora=preset.lora.enabled, lora_r=preset.lora.r, train_vision_tower=preset.lora.train_vision_tower,
                      adapter=o.adapter, use_dora=preset.lora.use_dora, virtual_tokens=o.virtual_tokens,
                      prefix_projection=o.prefix_projection)
    return trainable_params(info, s)


@pytest.mark.parametrize("case", list(CASES))
def test_trainable_counts_equal_peft_s(demo, demo_preset, case):
    text_only = case.startswith("pre") or case.startswith("prompt")
    name, model_dir = ("demo-text-sft", demo.text_model) if text_only else ("demo-sft", demo.model)
    if case == "dora+vision":
        name, model_dir = "demo-sft", demo.model
    elif not text_only:  # LoRA variants on both demo models
        for n, d in (("demo-text-sft", demo.text_model),):
            p = demo_preset(n, *CASES[case])
            assert planned(p, inspect_model(str(d))) == peft_count(p, d)
    preset = demo_preset(name, *CASES[case])
    assert planned(preset, inspect_model(str(model_dir))) == peft_count(preset, model_dir)


def test_dora_costs_more_memory_than_lora_and_prompt_tuning_lengthens_sequences(demo):
    info = inspect_model(str(demo.text_model))
    base = TrainSettings(precision="bf16", micro_batch_size=4, text_tokens=256)
    lora, dora = estimate_memory(info, base), estimate_memory(info, dataclasses.replace(base, use_dora=True))
    assert dora.components["activations"] > lora.components["activations"]
    assert dora.trainable_params > lora.trainable_params and any("DoRA" in n for n in dora.notes)
    pt = estimate_memory(info, dataclasses.replace(base, adapter="prompt_tuning", virtual_tokens=20))
    assert pt.seq_len == lora.seq_len + 20 and pt.trainable_params == 20 * info.text.hidden_size
    full = estimate_memory(info, dataclasses.replace(base, lora=False, adapter="none"))
    assert full.trainable_params == info.total_params


def test_padding_free_and_packing_change_the_planned_tokens(demo, demo_preset):
    from trainer_core.plan.from_preset import plan_preset_report

    def text_tokens(*sets):
        report = plan_preset_report(demo_preset("demo-text-sft", "training.max_length=512", *sets), gpu_mib=8192)
        return report.goal.text_tokens, report.plan.estimate.components["activations"]

    padded, padded_act = text_tokens()
    unpadded, unpadded_act = text_tokens("training.padding_free=true")
    packed, _ = text_tokens("training.packing=true")
    assert unpadded <= padded and unpadded_act <= padded_act  # p95 of the lengths instead of the longest
    assert packed == 512  # every packed row is filled to max_length


def test_plan_image_max_pixels_gives_fewer_image_tokens():
    def plan(*extra):
        out = subprocess.run([sys.executable, "-m", "tui.cli", "plan", "--model", "HuggingFaceTB/SmolVLM-Instruct",
                              "--gpu-mib", "24576", "--json", *extra], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    full, small = plan(), plan("--image-max-pixels", "147456")
    assert small["image_tokens_per_image"] < full["image_tokens_per_image"]
    assert small["image_tokens_per_image"] == 81  # one 384 px tile of 27x27 patches pooled 3x3
    assert small["memory"]["total_bytes"] < full["memory"]["total_bytes"]
    bad = subprocess.run([sys.executable, "-m", "tui.cli", "plan", "--model", "HuggingFaceTB/SmolVLM-Instruct",
                          "--gpu-mib", "24576", "--image-max-pixels", "10"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "--image-max-pixels must be at least 784" in bad.stderr


def test_image_max_pixels_in_each_processor_s_terms(demo):
    from transformers import AutoConfig

    from trainer_core.model.image_tokens import image_cost
    from trainer_core.model.loading import apply_image_max_pixels, load_processing_class

    config = AutoConfig.from_pretrained(str(demo.model))
    proc, _ = load_processing_class(str(demo.model), True)
    assert apply_image_max_pixels(proc, config, 64 * 64 * 4) is None
    assert proc.image_processor.size["longest_edge"] == 128  # 4 demo tiles of 32 px
    qwen = AutoConfig.for_model("qwen2_vl")
    assert image_cost(qwen, 1024, 1024, image_max_pixels=200_704).tokens < image_cost(qwen, 1024, 1024).tokens
    llava = AutoConfig.for_model("llava")
    assert image_cost(llava, 1024, 1024, image_max_pixels=200_704).tokens == image_cost(llava, 1024, 1024).tokens
    note = apply_image_max_pixels(proc, llava, 200_704)
    assert note and "has no effect on llava" in note


def test_a_tight_plan_offers_a_lower_resolution_with_its_effect():
    from trainer_core.plan.planner import PlanOptions, plan_for

    report = plan_for("HuggingFaceTB/SmolVLM-Instruct", "sft", gpu_mib=8192)
    offers = [s for s in report.plan.suggestions if s.startswith("data.image_max_pixels")]
    assert offers and "405 image tokens per image instead of 1377" in offers[0] and "GiB instead of" in offers[0]
    roomy = plan_for("HuggingFaceTB/SmolVLM-Instruct", "sft", gpu_mib=8192,
                     options=PlanOptions(image_max_pixels=147456))
    assert roomy.image.tokens == 81 and not any(s.startswith("data.image_max_pixels") for s in roomy.plan.suggestions)


def test_wandb_goes_offline_without_a_network_and_keeps_its_files_in_the_run(monkeypatch, tmp_path):
    from trainer_core.config.library_args import tracker_environment
    from trainer_core.config.presets import preset_from_dict

    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(key, "")  # recorded, so that what tracker_environment sets is undone after the test
        monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    raw = {"name": "t", "task": "sft", "model": {"name_or_path": "m"}, "data": {"path": "d"}}
    p = preset_from_dict(raw)
    p = dataclasses.replace(p, training=dataclasses.replace(p.training, report_to="wandb"))
    env = tracker_environment(p, tmp_path)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_DIR"] == str(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")  # online without a network would hang: offline wins
    assert tracker_environment(p, tmp_path)["WANDB_MODE"] == "offline"
    p = dataclasses.replace(p, training=dataclasses.replace(p.training, report_to="mlflow"))
    assert tracker_environment(p, tmp_path)["MLFLOW_TRACKING_URI"].startswith("file://")


def test_a_second_run_in_the_same_process_gets_its_own_tracker_folder(monkeypatch, tmp_path):
    from trainer_core.config.library_args import tracker_environment
    from trainer_core.config.presets import preset_from_dict

    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    raw = {"name": "t", "task": "sft", "model": {"name_or_path": "m"}, "data": {"path": "d"}}
    p = preset_from_dict({**raw, "training": {"report_to": "none"}})
    p = dataclasses.replace(p, training=dataclasses.replace(p.training, report_to="wandb"))
    assert tracker_environment(p, tmp_path / "a")["WANDB_DIR"] == str(tmp_path / "a")
    assert tracker_environment(p, tmp_path / "b")["WANDB_DIR"] == str(tmp_path / "b")
    monkeypatch.setenv("WANDB_DIR", "/users/own")  # the user's own setting is kept
    assert "WANDB_DIR" not in tracker_environment(p, tmp_path / "c")


def test_the_recommendation_never_checkpoints_prefix_tuning_and_names_the_adapter(demo):
    from trainer_core.config.presets import LoraSection
    from trainer_core.plan.planner import PlanOptions, plan_for

    report = plan_for(str(demo.text_model), "sft", gpu_mib=1, lora=LoraSection(),
                      options=PlanOptions(adapter="prefix_tuning", virtual_tokens=20))
    assert not report.plan.fits and not report.plan.settings.gradient_checkpointing
    assert "prefix tuning" in report.plan.suggestions[0]
    fits = plan_for(str(demo.text_model), "sft", gpu_mib=8192, lora=LoraSection(),
                    options=PlanOptions(adapter="prompt_tuning", virtual_tokens=20))
    assert any(r.startswith("adapter = prompt_tuning: 1,280 trainable parameters") for r in map(str, fits.plan.reasons))
