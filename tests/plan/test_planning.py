"""Model inspection, the memory estimate and the recommendation: exact where counting is exact, sensible
(monotonic, fitting) where it is a model, and checked against real tensors on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from trainer_core.model.info import inspect_model
from trainer_core.plan.memory import GIB, TrainSettings, estimate_memory
from trainer_core.plan.recommend import Goal, Target, recommend

SMOLVLM = "HuggingFaceTB/SmolVLM-Instruct"
IDEFICS3_8B = "HuggingFaceM4/Idefics3-8B-Llama3"
QWEN2VL_7B = "Qwen/Qwen2-VL-7B-Instruct"


@pytest.fixture(scope="module")
def registry():
    cache = {}

    def get(model_id):
        if model_id not in cache:
            cache[model_id] = inspect_model(model_id)
        return cache[model_id]

    return get


# ------------------------------------------------------------------ exact counts on the demo models


@pytest.mark.parametrize("which", ["model", "text_model"])
def test_counts_equal_the_real_model_and_peft(demo, which):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from trainer_core.model.lora_targets import auto_target_modules

    path = getattr(demo, which)
    info = inspect_model(str(path))
    auto = AutoModelForImageTextToText if info.is_vlm else AutoModelForCausalLM
    model = auto.from_pretrained(path)
    assert info.total_params == model.num_parameters()
    assert sum(info.params.values()) == info.total_params
    assert (info.params["vision"] > 0) == info.is_vlm
    for r, targets in ((16, "auto"), (8, ["q_proj", "v_proj"])):
        peft_targets = auto_target_modules(model) if targets == "auto" else targets
        peft_model = get_peft_model(auto.from_pretrained(path), LoraConfig(r=r, target_modules=peft_targets))
        assert info.lora_params(r, targets) == peft_model.get_nb_trainable_parameters()[0]


def test_exact_bytes_against_real_tensors_on_cpu(demo):
    """Weights, LoRA weights and AdamW states: the estimate equals what the tensors really take."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from trainer_core.model.lora_targets import auto_target_modules

    info = inspect_model(str(demo.model))
    est = estimate_memory(info, TrainSettings(precision="fp32", lora_r=16))
    model = AutoModelForImageTextToText.from_pretrained(demo.model, dtype=torch.float32)
    assert est.components["weights"] == sum(p.numel() * p.element_size() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=16, target_modules=auto_target_modules(model)))
    lora = [p for p in peft_model.parameters() if p.requires_grad]
    assert est.components["lora"] == sum(p.numel() * p.element_size() for p in lora)
    opt = torch.optim.AdamW(lora, lr=1e-3)
    for p in lora:
        p.grad = torch.zeros_like(p)
    opt.step()
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                      if torch.is_tensor(t) and t.dim() > 0)
    assert est.components["optimizer"] == state_bytes


def test_image_tokens_match_the_real_processor(demo):
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    from trainer_core.model.image_tokens import image_cost

    proc = AutoProcessor.from_pretrained(demo.model)
    config = AutoConfig.from_pretrained(demo.model)
    img = Image.open(demo.data / "images" / "chart_000.png").convert("RGB")
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}])
    ids = proc(text=[text], images=[[img]], return_tensors="pt")["input_ids"][0]
    cost = image_cost(config, *img.size, processor={"do_image_splitting": False})
    assert cost.tokens == int((ids == proc.image_token_id).sum())


def test_image_tokens_per_architecture():
    from trainer_core.model.image_tokens import image_cost
    from trainer_core.model.known import known_config

    # measured with the real Idefics3 processor on the H100 run (bench/memory_accuracy_h100.json)
    assert image_cost(known_config(SMOLVLM), 768, 768).tokens == 1377
    assert image_cost(known_config("HuggingFaceTB/SmolVLM-256M-Instruct"), 512, 512).tokens == 1088
    assert image_cost(known_config("Qwen/Qwen2-VL-2B-Instruct"), 448, 448).tokens == 256  # 16x16 after 2x2 merge
    assert image_cost(known_config("llava-hf/llava-1.5-7b-hf"), 1000, 700).tokens == 576


def test_image_tokens_survive_unusual_configs():
    from types import SimpleNamespace

    from trainer_core.model.image_tokens import image_cost

    internvl_like = SimpleNamespace(model_type="internvl", vision_config=SimpleNamespace(image_size=(448, 448),
                                                                                         patch_size=(14, 14)))
    assert image_cost(internvl_like).tokens == 1024
    gemma_like = SimpleNamespace(model_type="gemma3", mm_tokens_per_image=256,
                                 vision_config=SimpleNamespace(image_size=896, patch_size=14))
    assert image_cost(gemma_like).tokens == 256


def test_registry_breakdown(registry):
    info = registry(SMOLVLM)
    assert info.source == "registry" and info.is_vlm
    assert 0.35e9 < info.params["vision"] < 0.45e9 and info.params["connector"] > 0
    assert info.text.hidden_size == 2048 and info.text.num_layers == 24
    llama = registry("meta-llama/Llama-3.2-1B-Instruct")
    assert llama.tie_word_embeddings and llama.params["lm_head"] == 0  # tied: counted once, with embeddings


# ------------------------------------------------------------------ monotonic properties of the estimate


def test_weights_shrink_with_quantization(registry):
    info = registry(SMOLVLM)
    w = {q: estimate_memory(info, TrainSettings(precision=p, quantization=q)).components["weights"]
         for q, p in (("4bit", "bf16"), ("8bit", "bf16"), ("none", "bf16"))}
    fp32 = estimate_memory(info, TrainSettings(precision="fp32")).components["weights"]
    assert w["4bit"] < w["8bit"] < w["none"] < fp32
    assert fp32 == 2 * w["none"] == 4 * info.total_params


def test_activations_grow_with_batch_and_length_and_shrink_with_checkpointing(registry):
    info = registry("Qwen/Qwen2.5-1.5B-Instruct")
    base = TrainSettings(micro_batch_size=2, text_tokens=512)
    act = lambda s: estimate_memory(info, s).components["activations"]  # noqa: E731
    assert act(replace(base, micro_batch_size=4)) > act(base)
    assert act(replace(base, text_tokens=1024)) > act(base)
    assert act(replace(base, gradient_checkpointing=True)) < act(base) / 4


def test_dpo_needs_more_than_sft_at_the_same_batch(registry):
    info = registry(SMOLVLM)
    s = TrainSettings(micro_batch_size=2, text_tokens=300, images_per_sample=1, image_tokens_per_image=1377,
                      vision_patches_per_image=17 * 729)
    assert estimate_memory(info, replace(s, task="dpo")).peak_allocated > estimate_memory(info, s).peak_allocated


def test_optimizer_variants(registry):
    info = registry("Qwen/Qwen2.5-0.5B-Instruct")
    full = TrainSettings(lora=False, precision="bf16")
    adam = estimate_memory(info, full).components["optimizer"]
    adam8 = estimate_memory(info, replace(full, optimizer="paged_adamw_8bit")).components["optimizer"]
    assert adam == 2 * 2 * info.total_params and adam8 == 2 * info.total_params


# ------------------------------------------------------------------ recommendations on simulated GPUs


def plan(registry, model_id, gib, **goal):
    return recommend(registry(model_id), Target(f"{gib} GiB", gib * GIB, "cuda", True),
                     Goal(text_tokens=goal.pop("text_tokens", 512), **goal))


@pytest.mark.parametrize("gib", [8, 16, 24, 40, 80])
@pytest.mark.parametrize("model_id", [SMOLVLM, QWEN2VL_7B, "meta-llama/Llama-3.1-8B-Instruct",
                                      "Qwen/Qwen2.5-0.5B-Instruct"])
def test_plans_fit_their_gpu_and_keep_the_effective_batch(registry, model_id, gib):
    p = plan(registry, model_id, gib)
    if p.fits:
        assert p.estimate.required <= 0.9 * gib * GIB
        s = p.settings
        assert s.micro_batch_size * s.gradient_accumulation_steps >= 16
        assert p.reasons and all(r.why for r in p.reasons)
    else:
        assert p.suggestions


def test_smolvlm_on_24_gib_trains_in_bf16_lora(registry):
    p = plan(registry, SMOLVLM, 24, images_per_sample=1, image_tokens_per_image=1377,
             vision_patches_per_image=17 * 729)
    assert p.fits and p.settings.quantization == "none" and p.settings.precision == "bf16"


@pytest.mark.parametrize("model_id", [IDEFICS3_8B, QWEN2VL_7B])
def test_an_8b_vlm_on_16_gib_needs_4bit(registry, model_id):
    p = plan(registry, model_id, 16)
    assert p.fits and p.settings.quantization == "4bit"
    assert any("4bit" in str(r) and "needed because" in r.why for r in p.reasons)
    big = plan(registry, model_id, 80)
    assert big.settings.quantization == "none"


def test_more_memory_never_gives_a_slower_setup(registry):
    """With more memory: quantization and checkpointing only ever switch off; for the same setup the
    micro-batch only grows."""
    plans = [plan(registry, "meta-llama/Llama-3.1-8B-Instruct", g).settings for g in (12, 16, 24, 40, 80)]
    heaviness = [(s.quantization != "none", s.gradient_checkpointing) for s in plans]
    assert heaviness == sorted(heaviness, reverse=True)
    for a, b in zip(plans, plans[1:], strict=False):
        if (a.quantization, a.gradient_checkpointing) == (b.quantization, b.gradient_checkpointing):
            assert b.micro_batch_size >= a.micro_batch_size
    assert plans[0].quantization == "4bit" and plans[-1].quantization == "none"


def test_nothing_fits_says_what_would(registry):
    p = plan(registry, IDEFICS3_8B, 3)
    assert not p.fits
    text = " ".join(p.suggestions)
    assert "a GPU with at least" in text and "needs" in text


def test_cpu_target_plans_fp32_without_quantization(registry):
    p = recommend(registry("Qwen/Qwen2.5-0.5B-Instruct"), Target("cpu", 20 * GIB, "cpu", False), Goal())
    assert p.settings.precision == "fp32" and p.settings.quantization == "none"


# ------------------------------------------------------------------ the command


def run(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=300)


def test_plan_json_and_gpu_mib_changes_the_plan():
    small = json.loads(run("plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu-mib", "12288",
                           "--json").stdout)
    big = json.loads(run("plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu-mib", "81920",
                         "--json").stdout)
    for d in (small, big):
        assert {"params", "memory", "available_bytes", "fits", "recommendation", "reasons"} <= d.keys()
        assert d["params"]["total"] == 8_030_261_248 and "total_bytes" in d["memory"]
    assert small["recommendation"]["quantization"] == "4bit"
    assert big["recommendation"]["quantization"] == "none"
    assert small["available_bytes"] == 12288 * 2**20


def test_plan_writes_a_preset_that_loads(demo, tmp_path):
    from trainer_core.config.presets import load_preset

    out = tmp_path / "planned.yaml"
    res = run("plan", str(demo.presets / "demo-sft.yaml"), "--write", str(out))
    assert res.returncode == 0, res.stderr
    assert "data" in res.stdout and "recommendation" in res.stdout
    preset = load_preset(out)
    assert preset.training.micro_batch_size >= 1 and preset.training.max_length >= 32


def test_plan_usage_errors():
    res = run("plan")
    assert res.returncode == 2 and "give a preset, or --model" in res.stderr
    res = run("plan", "--model", "SomeOrg/unknown-model", "--gpu-mib", "8000")
    assert res.returncode == 1 and "could not reach the model" in res.stderr


def test_probe_on_this_machine():
    res = run("probe", "--json")
    d = json.loads(res.stdout)
    assert d["backend"] in ("cpu", "cuda", "mps") and {"gpus", "cpu", "ram", "disk"} <= d.keys()
