"""Preset loading and validation: every error a user can make in a preset file gets its message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainer_core.config.presets import PresetError, load_preset, preset_from_dict

MINIMAL = {"name": "x", "task": "sft", "model": {"name_or_path": "m"}, "data": {"path": "d.jsonl"}}
REPO = Path(__file__).resolve().parents[2]


def problems(raw, overrides=None, tmp_path=None) -> str:
    with pytest.raises(PresetError) as info:
        preset_from_dict(raw)
    return str(info.value)


def test_minimal_preset_gets_defaults():
    p = preset_from_dict(MINIMAL)
    assert p.task == "sft" and p.precision == "auto" and p.quantization == "none"
    assert p.lora.enabled and p.lora.r == 16 and p.lora.target_modules == "auto"
    assert p.model.trust_remote_code is False
    assert p.training.micro_batch_size == 1 and p.training.max_steps == -1


def test_unknown_key_suggests_closest_name():
    msg = problems({**MINIMAL, "training": {"max_stepz": 5}})
    assert "training.max_stepz: unknown key; did you mean 'max_steps'?" in msg


def test_unknown_top_level_key_suggests_closest():
    msg = problems({**MINIMAL, "quantisation": "4bit"})
    assert "quantisation: unknown key; did you mean 'quantization'?" in msg


def test_wrong_type_names_field_and_expected_type():
    msg = problems({**MINIMAL, "training": {"micro_batch_size": "four"}})
    assert "training.micro_batch_size: expected an integer, got 'four' (text)" in msg


def test_bool_is_not_an_integer():
    msg = problems({**MINIMAL, "lora": {"r": True}})
    assert "lora.r: expected an integer" in msg


def test_missing_required_fields_are_all_reported():
    msg = problems({"name": "x"})
    for field in ("task", "model", "data"):
        assert f"{field}: required field is missing" in msg


def test_missing_nested_required_field():
    msg = problems({**MINIMAL, "model": {"trust_remote_code": False}})
    assert "model.name_or_path: required field is missing" in msg


def test_bad_choice_suggests_valid_value():
    msg = problems({**MINIMAL, "quantization": "4-bit"})
    assert "quantization: '4-bit' is not one of 'none', '8bit', '4bit'; did you mean '4bit'?" in msg


def test_scientific_notation_without_dot_is_a_number():
    # YAML 1.1 reads 2e-4 as a string; users write it all the time.
    raw = yaml.safe_load("name: x\ntask: sft\nmodel: {name_or_path: m}\ndata: {path: d}\ntraining: {learning_rate: 2e-4}")
    assert preset_from_dict(raw).training.learning_rate == pytest.approx(2e-4)


def test_trl_names_are_accepted_as_aliases():
    p = preset_from_dict({**MINIMAL, "training": {"per_device_train_batch_size": 8, "num_train_epochs": 2,
                                                   "optim": "adamw_8bit"}, "lora": {"lora_alpha": 64}})
    assert p.training.micro_batch_size == 8 and p.training.epochs == 2.0
    assert p.training.optimizer == "adamw_8bit" and p.lora.alpha == 64


def test_alias_and_name_together_is_an_error():
    msg = problems({**MINIMAL, "training": {"per_device_train_batch_size": 8, "micro_batch_size": 2}})
    assert "given twice" in msg


def test_range_checks():
    msg = problems({**MINIMAL, "lora": {"r": 0}, "data": {"path": "d", "eval_fraction": 1.5},
                    "training": {"learning_rate": -1}})
    assert "lora.r: must be a positive integer" in msg
    assert "data.eval_fraction: must be at least 0 and below 1" in msg
    assert "training.learning_rate: must be positive" in msg


def test_quantization_needs_lora():
    msg = problems({**MINIMAL, "quantization": "4bit", "lora": {"enabled": False}})
    assert "quantization: quantized weights cannot be trained directly" in msg


def test_yaml_not_a_mapping(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(PresetError, match="the YAML must be a mapping of sections.*but it is a list"):
        load_preset(f)


def test_empty_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("")
    with pytest.raises(PresetError, match="but it is empty"):
        load_preset(f)


def test_file_not_yaml_gives_line_and_column(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("name: x\ntask: [sft\n")
    with pytest.raises(PresetError, match=r"not valid YAML: line \d+, column \d+"):
        load_preset(f)


def test_file_not_found(tmp_path):
    with pytest.raises(PresetError, match="file not found"):
        load_preset(tmp_path / "nope.yaml")


def test_yaml_tags_are_refused(tmp_path):
    # safe_load only: a python tag must not construct anything
    f = tmp_path / "p.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(PresetError, match="not valid YAML"):
        load_preset(f)


def test_set_overrides_and_validates(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(MINIMAL))
    p = load_preset(f, ["training.max_steps=20", "lora.target_modules=[q_proj, v_proj]", "precision=bf16"])
    assert p.training.max_steps == 20 and p.lora.target_modules == ["q_proj", "v_proj"] and p.precision == "bf16"
    with pytest.raises(PresetError, match="training.max_step: unknown key; did you mean 'max_steps'"):
        load_preset(f, ["training.max_step=20"])
    with pytest.raises(PresetError, match="training.max_steps: expected an integer, got 'many'"):
        load_preset(f, ["training.max_steps=many"])
    with pytest.raises(PresetError, match="is not key=value"):
        load_preset(f, ["training.max_steps"])
    with pytest.raises(PresetError, match="name: is not a section"):
        load_preset(f, ["name.first=1"])


def test_relative_paths_resolve_against_preset_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.jsonl").write_text("{}\n")
    sub = tmp_path / "presets"
    sub.mkdir()
    (sub / "p.yaml").write_text(yaml.safe_dump({**MINIMAL, "data": {"path": "../data/d.jsonl"}}))
    p = load_preset(sub / "p.yaml")
    assert p.data.path == str((tmp_path / "data" / "d.jsonl").resolve())
    assert p.model.name_or_path == "m"  # not a local path: kept as a hub id


def test_round_trip_through_yaml():
    p = preset_from_dict({**MINIMAL, "samples": {"every_steps": 5, "prompts": [{"text": "hi", "image": "a.png"}]}})
    assert preset_from_dict(yaml.safe_load(p.to_yaml())) == p


@pytest.mark.parametrize("path", sorted((REPO / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_presets_are_valid(path):
    p = load_preset(path)
    assert p.name and p.model.trust_remote_code is False


def test_demo_presets_are_valid(demo):
    for path in demo.presets.glob("*.yaml"):
        assert load_preset(path).training.max_steps > 0


def test_set_overrides_a_trl_alias_in_the_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({**MINIMAL, "training": {"per_device_train_batch_size": 2}}))
    assert load_preset(f, ["training.micro_batch_size=8"]).training.micro_batch_size == 8


def test_invalid_required_value_is_reported_once():
    msg = problems({**MINIMAL, "task": "sfT"})
    assert "task: 'sfT' is not one of" in msg and "task: required field is missing" not in msg


def test_non_finite_numbers_are_refused():
    assert "expected a number" in problems({**MINIMAL, "training": {"learning_rate": "inf"}})


def test_fp16_full_fine_tuning_is_refused():
    msg = problems({**MINIMAL, "precision": "fp16", "lora": {"enabled": False}})
    assert "precision: full fine-tuning in fp16 fails" in msg
