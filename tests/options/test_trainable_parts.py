"""Which parts of a VLM train (freeze_vision_tower / freeze_multi_modal_projector / freeze_language_model,
LLaMA-Factory's names): the planner's trainable count equals the real model's parameters with requires_grad
(after PEFT wrapping for LoRA) on the demo VLM, LoRA adapts only the unfrozen parts, and the run trains them."""

from __future__ import annotations

import json

import pytest

from trainer_core.config.presets import PresetError

pytestmark = pytest.mark.slow
QUICK = ("training.max_steps=2", "samples.every_steps=0", "samples.prompts=[]", "data.eval_fraction=0")

CASES = {
    "lora defaults": [],
    "lora, vision tower unfrozen": ["freeze_vision_tower=false"],
    "lora, train_vision_tower (older field)": ["lora.train_vision_tower=true"],
    "lora, language frozen + connector": ["freeze_language_model=true", "freeze_multi_modal_projector=false"],
    "full, vision frozen (defaults)": ["adapter=none"],
    "full, everything": ["adapter=none", "freeze_vision_tower=false", "freeze_multi_modal_projector=false"],
    "full, language frozen + connector": ["adapter=none", "freeze_language_model=true",
                                          "freeze_multi_modal_projector=false"],
}


def real_count(preset):
    """The demo VLM prepared as the engine prepares it (auto targets of the trained parts / freeze_parts)."""
    from peft import get_peft_model

    from trainer_core.config.library_args import lora_config
    from trainer_core.model.freeze import freeze_parts
    from trainer_core.model.loading import load_model
    from trainer_core.model.lora_targets import auto_target_modules, parts_of

    model = load_model(preset.model.name_or_path, precision="fp32").model
    parts = parts_of(preset)
    if preset.lora.enabled:
        model = get_peft_model(model, lora_config(preset, auto_target_modules(model, parts=parts)))
    else:
        freeze_parts(model, parts)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def planned(preset):
    """The planner's estimate of the preset as written (the settings `vlmtune plan` and the fit check use)."""
    from trainer_core.model.info import inspect_model
    from trainer_core.plan.from_preset import plan_preset_report, settings_for
    from trainer_core.plan.memory import estimate_memory

    report = plan_preset_report(preset, gpu_mib=24576)
    return estimate_memory(inspect_model(preset.model.name_or_path), settings_for(preset, report))


@pytest.mark.parametrize("case", list(CASES))
def test_planned_trainable_count_equals_the_real_model_s(demo_preset, case):
    preset = demo_preset("demo-sft", *CASES[case])
    assert planned(preset).trainable_params == real_count(preset)


def test_memory_follows_the_parts(demo, demo_preset):
    from trainer_core.model.info import inspect_model

    info = inspect_model(str(demo.model))
    lora, vision = planned(demo_preset("demo-sft")), planned(demo_preset("demo-sft", "freeze_vision_tower=false"))
    assert lora.components["vision_activations"] == 0 < vision.components["vision_activations"]
    assert vision.components["optimizer"] > lora.components["optimizer"]
    full = planned(demo_preset("demo-sft", "adapter=none"))
    everything = planned(demo_preset("demo-sft", "adapter=none", "freeze_vision_tower=false",
                                     "freeze_multi_modal_projector=false"))
    assert everything.trainable_params == info.total_params
    assert full.trainable_params == info.total_params - info.params["vision"] - info.params["connector"]
    assert full.components["optimizer"] < everything.components["optimizer"]
    assert full.components["vision_activations"] == 0 < everything.components["vision_activations"]
    # The LM head's fp32 gradient is built only when the language model trains.
    connector = planned(demo_preset("demo-sft", "adapter=none", "freeze_language_model=true",
                                    "freeze_multi_modal_projector=false"))
    assert connector.trainable_params == info.params["connector"]
    assert connector.components["logits"] < full.components["logits"]


def test_lora_targets_are_the_unfrozen_parts_linear_layers(demo):
    from trainer_core.model.info import inspect_model
    from trainer_core.model.lora_targets import select_targets, trained_parts

    names = [ly.name for ly in inspect_model(str(demo.model)).linear_layers]

    def chosen(**freeze):
        return {("vision" if "vision_model" in n else "connector" if "connector" in n else "language")
                for n in select_targets(names, parts=trained_parts(**freeze))}

    assert chosen() == {"language"}
    assert chosen(freeze_vision_tower=False) == {"vision", "language"}
    assert chosen(freeze_language_model=True, freeze_multi_modal_projector=False) == {"connector"}
    assert chosen(train_vision_tower=True) == {"vision", "connector", "language"}
    assert not any("lm_head" in n for n in select_targets(names, parts=trained_parts()))


def test_a_wizard_draft_plans_its_parts_as_the_preset_would():
    from trainer_core.model.lora_targets import TrainedParts, parts_of

    draft = {"freeze_vision_tower": False, "freeze_language_model": True, "lora": {"r": 8}}
    assert parts_of(draft) == TrainedParts(vision=True, connector=False, language=False)
    assert parts_of({"lora": {"train_vision_tower": True}}) == TrainedParts(vision=True, connector=True)
    # A value still being typed plans as the default until the draft validates.
    assert parts_of({"freeze_vision_tower": "fal"}) == TrainedParts()


def test_a_run_with_the_vision_tower_unfrozen_adapts_it(demo_preset):
    from pathlib import Path

    from trainer_core.base.errors import EXIT_OK
    from tui.cli.train import train

    preset = demo_preset("demo-sft", *QUICK, "freeze_vision_tower=false")
    assert train(preset, None, headless=True) == EXIT_OK
    (run,) = sorted(Path(preset.output_dir).iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed", summary.get("error")
    targets = json.loads((run / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert "vision_model" in targets and "text_model" in targets and "connector" not in targets
    assert summary["trainable_params"] == planned(preset).trainable_params


def test_a_full_fine_tuning_run_trains_only_the_unfrozen_parts(demo_preset):
    from pathlib import Path

    from trainer_core.base.errors import EXIT_OK
    from tui.cli.train import train

    preset = demo_preset("demo-sft", *QUICK, "adapter=none")
    assert train(preset, None, headless=True) == EXIT_OK
    (run,) = sorted(Path(preset.output_dir).iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed", summary.get("error")
    assert summary["trainable_params"] == planned(preset).trainable_params < summary["total_params"]


@pytest.mark.parametrize("sets", [["freeze_language_model=true"],
                                  ["adapter=none", "freeze_language_model=true"]])
def test_freezing_everything_is_refused(demo_preset, sets):
    with pytest.raises(PresetError, match="freeze_language_model: with the vision tower and the connector "
                                          "frozen too, nothing would train"):
        demo_preset("demo-sft", *sets)
    # The older field still unfreezes the vision side, so this trains the vision tower and the connector.
    assert demo_preset("demo-sft", *sets, "lora.train_vision_tower=true").freeze_language_model


def test_explicit_lora_targets_with_trained_parts_are_refused(demo_preset):
    with pytest.raises(PresetError, match="freeze_vision_tower: chooses LoRA's layers only with "
                                          "lora.target_modules: auto"):
        demo_preset("demo-sft", "lora.target_modules=[q_proj]", "freeze_vision_tower=false")
    # Full fine-tuning has no targets: the parts decide alone.
    demo_preset("demo-sft", "adapter=none", "lora.target_modules=[q_proj]", "freeze_vision_tower=false")


def test_a_text_model_refuses_vision_parts_and_a_frozen_language_model(demo_preset):
    from trainer_core.config.library_args import check_for_model

    for field in ("freeze_vision_tower", "freeze_multi_modal_projector"):
        preset = demo_preset("demo-text-sft", f"{field}=false")
        with pytest.raises(PresetError, match=f"{field}: .* is a text model, with no vision tower or "
                                              f"connector; remove {field}"):
            check_for_model(preset, is_vlm=False)
        check_for_model(preset, is_vlm=True)
    preset = demo_preset("demo-text-sft", "freeze_language_model=true", "freeze_vision_tower=false")
    with pytest.raises(PresetError, match="freeze_language_model: .* all language model: nothing would train"):
        check_for_model(preset, is_vlm=False)
    check_for_model(demo_preset("demo-text-sft"), is_vlm=False)  # the defaults fit a text model

