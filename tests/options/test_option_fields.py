"""The training options as preset fields: each accepted by its PEFT/TRL name, each mistake refused with a message
that names the field and what to do. No model loads here (the preset check runs without torch)."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from trainer_core.config.presets import INIT_LORA_WEIGHTS, INIT_NEEDS_SETUP, PresetError, preset_from_dict

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "task": "sft", "model": {"name_or_path": "m"}, "data": {"path": "d.jsonl"}}


def load(**sections):
    raw = {**BASE}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return preset_from_dict(raw)


def refused(**sections) -> str:
    with pytest.raises(PresetError) as err:
        load(**sections)
    return str(err.value)


def test_defaults_change_nothing():
    p = load()
    assert p.adapter is None and p.adapter_type == "lora" and p.lora.enabled
    assert (p.lora.use_dora, p.lora.use_rslora, p.lora.init_lora_weights) == (False, False, True)
    t = p.training
    assert (t.report_to, t.use_liger_kernel, t.packing, t.padding_free) == ("none", False, False, False)
    assert p.data.image_max_pixels is None


def test_lora_enabled_false_and_adapter_none_are_the_same():
    old, new = load(lora={"enabled": False}), load(adapter="none")
    assert (old.adapter_type, old.lora.enabled) == ("none", False) == (new.adapter_type, new.lora.enabled)
    # Unset, `adapter` leaves lora.enabled to decide: the wizard's LoRA switch works on a saved preset.
    saved = old.to_dict()
    saved["lora"]["enabled"] = True
    assert preset_from_dict(saved).adapter_type == "lora"
    pt = load(adapter="prompt_tuning", prompt_tuning={"num_virtual_tokens": 8, "init_text": "Answer briefly"})
    assert pt.prompt_tuning.num_virtual_tokens == 8 and pt.prompt_tuning.prompt_tuning_init_text == "Answer briefly"


def test_adapter_mistakes_are_refused_by_name():
    assert "'prompt_tunning' is not one of" in refused(adapter="prompt_tunning")
    assert "did you mean 'prompt_tuning'" in refused(adapter="prompt_tunning")
    msg = refused(adapter="prompt_tuning", lora={"enabled": False})
    assert "lora.enabled: false means full fine-tuning (adapter: none)" in msg
    assert "contradicts adapter: lora" in refused(adapter="lora", lora={"enabled": False})
    assert "prompt_tuning.num_virtual_tokens: must be a positive integer" in refused(
        adapter="prompt_tuning", prompt_tuning={"num_virtual_tokens": 0})
    assert "prefix_tuning.num_virtual_tokens" in refused(prefix_tuning={"num_virtual_tokens": -1})


@pytest.mark.parametrize("value", [True, False, "gaussian", "pissa", "pissa_niter_4", "olora", "orthogonal"])
def test_peft_initialisations_are_accepted(value):
    assert load(lora={"init_lora_weights": value}).lora.init_lora_weights == value


def test_our_initialisations_are_peft_s_own():
    from peft import LoraConfig

    literal = [a for a in typing.get_args(typing.get_type_hints(LoraConfig)["init_lora_weights"]) if a is not bool]
    peft_names = set(typing.get_args(literal[0]))
    assert set(INIT_LORA_WEIGHTS) <= peft_names
    assert set(INIT_NEEDS_SETUP) <= peft_names | {"lora_ga"}  # lora_ga: in PEFT's code, not its type hint


def test_initialisation_mistakes_are_refused():
    assert "did you mean 'gaussian'?" in refused(lora={"init_lora_weights": "gausian"})
    assert "pissa_niter_N" in refused(lora={"init_lora_weights": "pissa_niter_"})
    assert "needs PEFT's own setup first" in refused(lora={"init_lora_weights": "eva"})
    msg = refused(lora={"init_lora_weights": "pissa"}, quantization="4bit")
    assert "lora.init_lora_weights: PiSSA decomposes the full-precision weights" in msg
    assert "lora.use_dora: expected true/false, got 'yes please' (text)" in refused(lora={"use_dora": "yes please"})


def test_tracker_choices():
    assert "'tensorbord' is not one of" in refused(training={"report_to": "tensorbord"})
    assert "did you mean 'tensorboard'" in refused(training={"report_to": "tensorbord"})


@pytest.mark.parametrize("tracker", ["wandb", "trackio", "mlflow"])
def test_a_tracker_that_is_not_installed_is_refused_naming_its_extra(tracker):
    if importlib.util.find_spec(tracker):
        pytest.skip(f"{tracker} is installed here")
    msg = refused(training={"report_to": tracker})
    assert f"training.report_to: {tracker} is not installed" in msg
    assert f"pip install 'vlmtune[{tracker}]'" in msg


def test_tensorboard_is_accepted_when_installed():
    pytest.importorskip("tensorboard")
    assert load(training={"report_to": "tensorboard"}).training.report_to == "tensorboard"


def test_liger_without_the_package_is_refused():
    if importlib.util.find_spec("liger_kernel"):
        pytest.skip("liger-kernel is installed here")
    msg = refused(training={"use_liger_kernel": True})
    assert "training.use_liger_kernel: Liger kernels are not installed" in msg and "vlmtune[speed]" in msg


def test_vlmtune_check_refuses_liger_on_this_machine():
    if importlib.util.find_spec("liger_kernel"):
        pytest.skip("liger-kernel is installed here (the run itself refuses it without CUDA: see below)")
    out = subprocess.run([sys.executable, "-m", "tui.cli", "check", "presets/demo-sft.yaml", "--set",
                          "training.use_liger_kernel=true"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "Liger" in out.stderr and "pip install 'vlmtune[speed]'" in out.stderr and "CUDA GPU" in out.stderr
    assert "Traceback" not in out.stderr


def test_liger_on_a_machine_without_cuda_is_refused_before_loading(tmp_path):
    import torch

    from trainer_core.config.library_args import trainer_args

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    p = load()
    p = dataclasses.replace(p, training=dataclasses.replace(p.training, use_liger_kernel=True))
    with pytest.raises(PresetError, match="Liger's kernels are Triton GPU kernels and this machine has no CUDA GPU"):
        trainer_args(p, checkpoints_dir=tmp_path / "c", precision="fp32", has_eval=False, use_cpu=True)


def test_packing_mistakes():
    assert "training.packing: only for SFT" in refused(task="dpo", training={"packing": True})
    assert "set training.max_length" in refused(training={"packing": True, "max_length": None})
    assert load(task="dpo", training={"padding_free": True}).training.padding_free  # TRL's DPO has it


def test_image_max_pixels_is_not_the_safety_limit():
    p = load(data={"image_max_pixels": 147456})
    assert p.data.image_max_pixels == 147456 and p.data.max_image_pixels > 147456
    assert "data.image_max_pixels: must be at least 784" in refused(data={"image_max_pixels": 100})


def test_extra_names_a_field_of_its_own(tmp_path):
    from trainer_core.config.library_args import trainer_args

    p = load(training={"extra": {"report_to": "wandb", "packing": True}})
    with pytest.raises(PresetError) as err:
        trainer_args(p, checkpoints_dir=tmp_path / "c", precision="fp32", has_eval=False, use_cpu=True)
    assert "training.extra.report_to: is a preset field of its own: use training.report_to" in str(err.value)
    assert "training.extra.packing: is a preset field of its own: use training.packing" in str(err.value)


def test_the_options_reach_trl(tmp_path):
    from trainer_core.config.library_args import lora_config, trainer_args

    p = load(training={"packing": True, "padding_free": True}, lora={"use_dora": True, "use_rslora": True,
                                                                      "init_lora_weights": "gaussian"})
    args = trainer_args(p, checkpoints_dir=tmp_path / "c", precision="fp32", has_eval=False, use_cpu=True)
    assert args.packing and args.padding_free and args.report_to == []
    cfg = lora_config(p, ["q_proj"])
    assert cfg.use_dora and cfg.use_rslora and cfg.init_lora_weights == "gaussian"
    pt = lora_config(load(adapter="prompt_tuning", prompt_tuning={"init_text": "Answer:"}), "auto")
    assert pt.peft_type.value == "PROMPT_TUNING" and pt.prompt_tuning_init.value == "TEXT"
    assert pt.tokenizer_name_or_path == "m"
    pre = lora_config(load(adapter="prefix_tuning", prefix_tuning={"prefix_projection": True}), "auto")
    assert pre.peft_type.value == "PREFIX_TUNING" and pre.prefix_projection


def test_check_for_model_refuses_text_only_options_for_a_vlm():
    from trainer_core.config.library_args import check_for_model

    for sections, where in (({"adapter": "prompt_tuning"}, "adapter: prompt_tuning is for text models"),
                            ({"adapter": "prefix_tuning"}, "adapter: prefix_tuning is for text models"),
                            ({"training": {"packing": True}}, "training.packing: TRL supports it for text data only"),
                            ({"training": {"padding_free": True}}, "training.padding_free: TRL supports it")):
        with pytest.raises(PresetError, match=where):
            check_for_model(load(**sections), is_vlm=True)
        check_for_model(load(**sections), is_vlm=False)


def test_prefix_tuning_with_checkpointing_is_refused():
    msg = refused(adapter="prefix_tuning", training={"gradient_checkpointing": True})
    assert "training.gradient_checkpointing: cannot go with adapter: prefix_tuning" in msg
    assert load(adapter="prompt_tuning", training={"gradient_checkpointing": True}).adapter == "prompt_tuning"
