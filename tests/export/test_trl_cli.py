"""Export to TRL's own CLI: the YAML parses with TRL's parser, the data round-trips, and TRL's scripts train on it.

Real stack (TRL, PEFT, transformers, datasets) with the tiny demo models, on CPU. Every parse passes
--use_cpu true, as a user on a CPU-only machine would (TrainingArguments refuses bf16 without it).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer_core.config.presets import PresetError, load_preset
from trainer_core.export.trl_cli import trl_cli_config, write_trl_config

pytestmark = pytest.mark.slow

# TrainingArguments fields that must come out of TRL's parser exactly as the engine sets them.
SAME_AS_ENGINE = ["per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                  "learning_rate", "max_steps", "num_train_epochs", "max_length", "warmup_steps",
                  "lr_scheduler_type", "optim", "weight_decay", "max_grad_norm", "logging_steps", "save_strategy",
                  "save_steps", "save_total_limit", "seed", "bf16", "fp16", "eval_strategy", "eval_steps",
                  "activation_checkpointing", "activation_checkpointing_kwargs", "ddp_find_unused_parameters"]


def preset_of(demo, name: str, runs: Path, *overrides: str):
    return load_preset(demo.presets / f"{name}.yaml", [f"output_dir={runs}", *overrides])


def parse(path: Path, command: str, *cli: str):
    """TRL's own script parser, as `trl <command> --config path` builds it (unknown keys fail)."""
    script = importlib.import_module(f"trl.scripts.{command}")
    return script.make_parser().parse_args_and_config(["--config", str(path), "--use_cpu", "true", *cli])


def engine_args(preset, has_eval: bool):
    from trainer_core.config.library_args import trainer_args
    from trainer_core.model.loading import resolve_precision

    return trainer_args(preset, checkpoints_dir=Path(preset.output_dir), has_eval=has_eval, use_cpu=True,
                        precision=resolve_precision(preset.precision, preset.quantization))


@pytest.fixture(scope="module")
def sft_export(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-export")
    preset = preset_of(demo, "demo-sft", root / "runs")
    path, config = write_trl_config(preset, root / "out")
    return preset, path, config


@pytest.fixture(scope="module")
def dpo_export(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo-export")
    preset = preset_of(demo, "demo-dpo", root / "runs")
    path, config = write_trl_config(preset, root / "out")
    return preset, path, config


# ---------------------------------------------------------------- the YAML through TRL's parser


def test_vlm_sft_yaml_parses_with_trl_and_keeps_the_preset_values(sft_export):
    preset, path, config = sft_export
    assert path.name == "trl-sft.yaml" and config.command == "sft"
    assert yaml.safe_load(path.read_text()) == config.values
    script_args, training_args, model_args, _ = parse(path, "sft")

    t, lora = preset.training, preset.lora
    assert training_args.per_device_train_batch_size == t.micro_batch_size == 4
    assert training_args.gradient_accumulation_steps == t.gradient_accumulation_steps
    assert training_args.learning_rate == t.learning_rate == 3e-3
    assert training_args.max_steps == t.max_steps == 40
    assert training_args.seed == t.seed
    assert (model_args.use_peft, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) == (
        True, lora.r, lora.alpha, lora.dropout)
    assert model_args.model_name_or_path == preset.model.name_or_path
    assert model_args.dtype == "float32"  # precision auto on a CPU machine, as the engine resolves it
    assert script_args.dataset_name == str(path.parent / "data")
    assert (script_args.dataset_train_split, script_args.dataset_test_split) == ("train", "test")
    engine = engine_args(preset, has_eval=True)
    assert {f: getattr(training_args, f) for f in SAME_AS_ENGINE} == {f: getattr(engine, f) for f in SAME_AS_ENGINE}
    assert any(n.startswith("precision: auto resolved to fp32") for n in config.notes)
    assert any(n.startswith("samples:") for n in config.notes)


def test_vlm_dpo_yaml_parses_with_trl_and_keeps_the_preset_values(dpo_export):
    preset, path, config = dpo_export
    assert path.name == "trl-dpo.yaml" and config.command == "dpo"
    _, training_args, model_args, _ = parse(path, "dpo")
    assert training_args.beta == preset.dpo.beta == 0.1
    assert training_args.loss_type == [preset.dpo.loss_type]
    assert training_args.per_device_train_batch_size == preset.training.micro_batch_size == 8
    assert training_args.learning_rate == preset.training.learning_rate == 1e-3
    assert training_args.max_steps == 30
    assert (model_args.lora_r, model_args.lora_alpha) == (preset.lora.r, preset.lora.alpha)
    engine = engine_args(preset, has_eval=True)
    fields = SAME_AS_ENGINE + ["beta", "loss_type"]
    assert {f: getattr(training_args, f) for f in fields} == {f: getattr(engine, f) for f in fields}


def test_auto_lora_targets_are_the_engines_language_model_layers(demo, sft_export):
    from transformers import AutoModelForImageTextToText

    from trainer_core.model.lora_targets import auto_target_modules, linear_layers

    _, _, config = sft_export
    regex = config.values["lora_target_modules"]
    model = AutoModelForImageTextToText.from_pretrained(str(demo.model))
    assert regex == auto_target_modules(model)
    matched = [n for n in linear_layers(model) if re.fullmatch(regex, n)]
    assert matched and all(".text_model." in n for n in matched)
    assert not any("vision" in n or "connector" in n or n.endswith("lm_head") for n in matched)


def test_quantization_checkpointing_targets_and_extra_carry_over(demo, sft_export, tmp_path):
    from trl import get_peft_config, get_quantization_config

    from trainer_core.model.loading import quantization_config

    preset = preset_of(demo, "demo-sft", tmp_path / "runs", "quantization=4bit", "precision=bf16",
                       "training.gradient_checkpointing=true", "lora.target_modules=[q_proj]",
                       "training.extra.assistant_only_loss=true")
    _, sft_path, _ = sft_export
    config = trl_cli_config(preset, sft_path.parent / "data")
    path = tmp_path / "trl-sft.yaml"
    path.write_text(yaml.safe_dump(config.values, sort_keys=False))

    _, training_args, model_args, _ = parse(path, "sft")
    assert training_args.bf16 and not training_args.fp16 and model_args.dtype == "bfloat16"
    assert training_args.activation_checkpointing
    assert training_args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert training_args.assistant_only_loss is True
    # The same BitsAndBytesConfig as the engine's QLoRA (NF4, double quantization, bf16 compute and storage).
    assert get_quantization_config(model_args).to_dict() == quantization_config("4bit", "bf16").to_dict()
    # A one-item list keeps PEFT's list meaning (a name suffix), though TRL turns it into a regex.
    target = get_peft_config(model_args).target_modules
    assert re.fullmatch(target, "model.text_model.layers.0.self_attn.q_proj")
    assert re.fullmatch(target, "q_proj") and not re.fullmatch(target, "model.layers.0.self_attn.xq_proj")


def test_no_eval_split_means_no_evaluation(demo, tmp_path):
    preset = preset_of(demo, "demo-text-sft", tmp_path / "runs", "data.eval_fraction=0")
    path, config = write_trl_config(preset, tmp_path / "out")
    assert not (tmp_path / "out" / "data" / "test.parquet").exists()
    assert config.values["eval_strategy"] == "no" and "dataset_test_split" not in config.values
    _, training_args, model_args, _ = parse(path, "sft")
    assert training_args.eval_strategy == "no"
    assert model_args.model_name_or_path == str(demo.text_model)


def test_distributed_presets_get_the_engines_accelerate_config(demo, tmp_path):
    preset = preset_of(demo, "demo-text-dpo", tmp_path / "runs", "distributed.num_processes=2",
                       "distributed.strategy=fsdp")
    path, config = write_trl_config(preset, tmp_path / "out")
    launch = yaml.safe_load((tmp_path / "out" / "accelerate.yaml").read_text())
    # fp32 here (CPU): TRL's bundled fsdp2.yaml would turn on bf16 mixed precision behind the YAML's back.
    assert (launch["num_processes"], launch["distributed_type"], launch["mixed_precision"]) == (2, "FSDP", "no")
    assert any(n.startswith("distributed:") and "--accelerate_config accelerate.yaml" in n for n in config.notes)
    _, training_args, _, _ = parse(path, "dpo")  # the launch layout is not in the YAML: it still parses
    assert training_args.ddp_find_unused_parameters is False


def test_preset_problems_are_preset_errors(demo, tmp_path):
    data_dir = tmp_path / "missing"
    bad = preset_of(demo, "demo-sft", tmp_path, "training.optimizer=adamw_tourch")
    with pytest.raises(PresetError, match="training.optimizer"):
        trl_cli_config(bad, data_dir)
    owned = preset_of(demo, "demo-sft", tmp_path, "training.extra.output_dir=elsewhere")
    with pytest.raises(PresetError, match="training.extra.output_dir"):
        trl_cli_config(owned, data_dir)


# ---------------------------------------------------------------- the exported data


def test_sft_data_round_trips_with_images(demo, sft_export):
    import datasets
    from PIL import Image

    from trainer_core.export.trl_cli import _prepare

    preset, path, _ = sft_export
    loaded = datasets.load_dataset(str(path.parent / "data"))
    prepared = _prepare(preset)
    assert set(loaded) == {"train", "test"}
    assert (len(loaded["train"]), len(loaded["test"])) == (len(prepared.train), len(prepared.eval))
    assert set(loaded["train"].column_names) == {"messages", "images"}
    assert loaded["train"]["messages"] == prepared.train["messages"]
    image = loaded["train"][0]["images"][0]
    assert isinstance(image, Image.Image)
    undecoded = datasets.List(datasets.Image(decode=False))
    source = prepared.train.cast_column("images", undecoded)[0]["images"][0]["path"]
    with Image.open(source) as original:
        assert image.tobytes() == original.convert(image.mode).tobytes()
    # The bytes live in the parquet file: no path back to this machine's data folder.
    stored = loaded["train"].cast_column("images", undecoded)[0]["images"][0]
    assert stored["bytes"] and not os.path.isabs(stored["path"] or "")


def test_dpo_data_has_trls_preference_columns(dpo_export):
    import datasets
    from PIL import Image

    _, path, _ = dpo_export
    loaded = datasets.load_dataset(str(path.parent / "data"))
    assert len(loaded["train"]) + len(loaded["test"]) == 96  # the demo's 48 charts x 2 questions
    assert set(loaded["train"].column_names) == {"prompt", "chosen", "rejected", "images"}
    row = loaded["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert isinstance(row["images"][0], Image.Image)


# ---------------------------------------------------------------- TRL's scripts train on it


def test_trl_sft_script_reproduces_the_engines_first_steps(sft_export, tmp_path):
    from trl.scripts.sft import main

    from trainer_core.events import EventStream, StepLogged
    from trainer_core.run.engine import run_training

    preset, path, config = sft_export
    out = tmp_path / "trl-run"
    main(*parse(path, "sft", "--max_steps", "2", "--save_steps", "2", "--output_dir", str(out),
                "--disable_tqdm", "true"))
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["target_modules"] == config.values["lora_target_modules"] and adapter["r"] == preset.lora.r

    # Same model, data, LoRA and values: vlmtune's own run gives the same losses.
    events, seen = EventStream(), []
    events.subscribe(seen.append)
    result = run_training(preset.replace(training=dataclasses.replace(preset.training, max_steps=2)), events=events)
    assert result.status == "completed", result.error
    engine_losses = [e.loss for e in seen if isinstance(e, StepLogged)]
    trl_losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert trl_losses == pytest.approx(engine_losses, rel=1e-5)


def test_trl_dpo_script_trains_on_the_export(dpo_export, tmp_path):
    from trl.scripts.dpo import main

    _, path, _ = dpo_export
    out = tmp_path / "trl-run"
    main(*parse(path, "dpo", "--max_steps", "2", "--save_steps", "2", "--output_dir", str(out),
                "--disable_tqdm", "true"))
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "adapter_model.safetensors").exists()


def test_the_trl_command_line_runs_the_yaml(sft_export, tmp_path):
    """The user's own command: `trl sft --config FILE` (through accelerate launch, in a new process)."""
    _, path, _ = sft_export
    out = tmp_path / "cli-run"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "trl.cli.main", "sft", "--config", str(path), "--max_steps", "2",
                           "--save_steps", "2", "--output_dir", str(out), "--use_cpu", "true",
                           "--disable_tqdm", "true"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_export_follows_the_adapter_and_the_parts_that_train(demo, tmp_path):
    """TRL's CLI gets DoRA, rsLoRA and the trained parts' layers; what it has no flag for is refused, not lost."""
    from trainer_core.export.trl_cli import NotExportable

    runs = tmp_path / "runs"
    config = trl_cli_config(preset_of(demo, "demo-sft", runs, "lora.use_dora=true", "lora.use_rslora=true",
                                      "freeze_vision_tower=false"), tmp_path / "data")
    assert config.values["use_dora"] is True and config.values["use_rslora"] is True
    parse_path = tmp_path / "trl.yaml"
    parse_path.write_text(yaml.safe_dump(config.values))
    parse(parse_path, "sft")  # TRL's own parser takes the keys
    from transformers import AutoModelForImageTextToText

    from trainer_core.model.lora_targets import linear_layers

    model = AutoModelForImageTextToText.from_pretrained(str(demo.model))
    matched = [n for n in linear_layers(model) if re.fullmatch(config.values["lora_target_modules"], n)]
    assert any("vision" in n for n in matched) and any(".text_model." in n for n in matched)
    with pytest.raises(NotExportable, match="adapter: prompt_tuning: TRL's CLI"):
        trl_cli_config(preset_of(demo, "demo-text-sft", runs, "adapter=prompt_tuning"), tmp_path / "data")
    with pytest.raises(NotExportable, match="freeze_"):
        trl_cli_config(preset_of(demo, "demo-sft", runs, "adapter=none"), tmp_path / "data")
