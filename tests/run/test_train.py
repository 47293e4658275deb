"""The engine on the real stack (TRL, PEFT, transformers) with the tiny demo models, on CPU."""

from __future__ import annotations

import json

import pytest

from trainer_core.events import (
    CheckpointSaved,
    EventStream,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
    StopSignal,
)
from trainer_core.run.engine import run_training

pytestmark = pytest.mark.slow


def collect(preset, **kw):
    events = EventStream()
    seen = []
    events.subscribe(seen.append)
    result = run_training(preset, events=events, **kw)
    assert result.status != "failed", result.error
    return result, seen


def losses(seen):
    return [e.loss for e in seen if isinstance(e, StepLogged)]


def falls(values, factor=0.8):
    """The mean of the last quarter is well below the mean of the first quarter."""
    q = max(1, len(values) // 4)
    return sum(values[-q:]) / q < factor * sum(values[:q]) / q


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_vlm_sft_learns_and_writes_the_run_directory(demo_preset):
    preset = demo_preset("demo-sft", "samples.every_steps=20")
    result, seen = collect(preset)
    assert result.status == "completed" and result.steps == 40
    assert falls(losses(seen), 0.5), losses(seen)

    started = next(e for e in seen if isinstance(e, RunStarted))
    assert started.is_vlm and 0 < started.trainable_params < started.total_params
    assert isinstance(seen[-1], RunFinished) and seen[-1].status == "completed"
    assert [e.step for e in seen if isinstance(e, CheckpointSaved)] == [20, 40]
    assert {e.step for e in seen if isinstance(e, SampleGenerated)} == {20, 40}

    run = result.run_dir
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 40
    assert summary["trainable_params"] == started.trainable_params and summary["world_size"] == 1
    assert summary["final_loss"] == pytest.approx(losses(seen)[-1])
    metrics = [m for m in read_jsonl(run / "metrics.jsonl") if m["type"] == "train"]
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert all({"step", "loss", "learning_rate", "epoch", "time"} <= m.keys() for m in metrics)
    assert any(m["type"] == "eval" and "eval_loss" in m for m in read_jsonl(run / "metrics.jsonl"))
    assert len(read_jsonl(run / "samples.jsonl")) == 4
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert (run / "adapter" / "processor_config.json").exists()
    assert (run / "preset.yaml").exists() and (run / "checkpoints" / "checkpoint-40").is_dir()


def test_lora_targets_only_the_language_model(demo_preset):
    from peft import PeftConfig

    result, _ = collect(demo_preset("demo-sft", "training.max_steps=2", "samples.every_steps=0"))
    config = PeftConfig.from_pretrained(str(result.adapter))
    from safetensors import safe_open

    with safe_open(str(result.adapter / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("text_model" in k for k in keys), keys
    assert not any("vision_model" in k or "connector" in k or "lm_head" in k for k in keys)
    assert config.r == 16


def test_vlm_dpo_learns(demo_preset):
    result, seen = collect(demo_preset("demo-dpo", "training.micro_batch_size=8", "samples.every_steps=0"))
    assert result.status == "completed"
    assert losses(seen)[0] == pytest.approx(0.6931, abs=1e-3)  # log(2): policy == reference at the start
    assert falls(losses(seen), 0.8), losses(seen)
    last = [e for e in seen if isinstance(e, StepLogged)][-1]
    assert "rewards/accuracies" in last.extra


@pytest.mark.parametrize("name", ["demo-text-sft", "demo-text-dpo"])
def test_text_models_learn(demo_preset, name):
    result, seen = collect(demo_preset(name, "samples.every_steps=0"))
    assert not next(e for e in seen if isinstance(e, RunStarted)).is_vlm
    assert falls(losses(seen), 0.8), losses(seen)


def test_adapter_reloads_and_generates(demo_preset, demo):
    from trainer_core.chat import generate, load_for_chat

    result, seen = collect(demo_preset("demo-sft", "samples.every_steps=40"))
    loaded = load_for_chat(None, result.run_dir)  # the base model comes from the adapter config
    prompt = preset_prompt = demo_preset("demo-sft").samples.prompts[0]
    out = generate(loaded.model, loaded.processing_class, True, prompt.text, preset_prompt.image)
    during = [e.output for e in seen if isinstance(e, SampleGenerated) and e.prompt == prompt.text][-1]
    # Reloaded base + adapter answers exactly as the model did at the end of training (greedy).
    assert out == during


def test_stop_saves_a_checkpoint_and_resume_continues(demo_preset):
    preset = demo_preset("demo-sft", "training.max_steps=12", "training.save_steps=100", "samples.every_steps=0",
                         "data.eval_fraction=0")
    stop = StopSignal()
    events = EventStream()
    events.subscribe(lambda e: stop.request("test") if isinstance(e, StepLogged) and e.step == 5 else None)
    result = run_training(preset, events=events, stop=stop)
    assert result.status == "stopped" and result.steps == 5
    run = result.run_dir
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"
    assert (run / "checkpoints" / "checkpoint-5").is_dir()
    assert (run / "adapter" / "adapter_model.safetensors").exists()

    # As after a crash between checkpoints: rows past the checkpoint, and a half-written last line.
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"type": "train", "step": 6, "loss": 9.9}) + "\n" + '{"type": "train", "st')

    seen = []
    events2 = EventStream()
    events2.subscribe(seen.append)
    resumed = run_training(preset, events=events2, resume=run)
    assert resumed.status == "completed" and resumed.steps == 12 and resumed.run_dir == run
    assert next(e for e in seen if isinstance(e, RunStarted)).resumed_from_step == 5
    assert [e.step for e in seen if isinstance(e, StepLogged)] == list(range(6, 13))
    steps = [m["step"] for m in read_jsonl(run / "metrics.jsonl")]
    assert steps == list(range(1, 13))  # one file, global steps continue


def test_resume_without_checkpoint_fails_clearly(demo_preset, tmp_path):
    run = tmp_path / "empty-run"
    run.mkdir()
    result = run_training(demo_preset("demo-sft"), resume=run)
    assert result.status == "failed" and "has no checkpoint to resume from" in result.error
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_failure_is_recorded_not_raised(demo_preset, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\n')
    result = run_training(demo_preset("demo-sft", f"data.path={bad}"))
    assert result.status == "failed" and "no columns fit sft: found foo" in result.error
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "no columns fit" in summary["error"]


def test_bad_scheduler_name_is_a_preset_error(demo_preset):
    result = run_training(demo_preset("demo-sft", "training.lr_scheduler=cosin"))
    assert result.status == "failed"
    assert "training.lr_scheduler: 'cosin' is not known; did you mean 'cosine'?" in result.error


def test_unknown_trl_extra_argument(demo_preset):
    result = run_training(demo_preset("demo-sft", "training.extra={packing_strategyy: bfd}"))
    assert "training.extra.packing_strategyy: not a SFTConfig argument; did you mean 'packing_strategy'?" in result.error


def test_qlora_4bit_on_cpu(demo_preset):
    from trainer_core.run.engine import count_parameters  # noqa: F401  (4-bit params are counted unpacked)

    result, seen = collect(demo_preset("demo-text-sft", "quantization=4bit", "training.max_steps=20",
                                       "samples.every_steps=0"))
    started = next(e for e in seen if isinstance(e, RunStarted))
    assert started.summary["quantization"] == "4bit" and started.summary["precision"] == "bf16"
    assert falls(losses(seen), 0.8), losses(seen)


def test_full_fine_tuning_without_lora(demo_preset):
    result, seen = collect(demo_preset("demo-text-sft", "lora.enabled=false", "training.max_steps=10",
                                       "training.learning_rate=1e-3", "samples.every_steps=0"))
    started = next(e for e in seen if isinstance(e, RunStarted))
    assert started.trainable_params == started.total_params
    assert (result.run_dir / "model" / "model.safetensors").exists()


def test_gradient_checkpointing_runs(demo_preset):
    result, seen = collect(demo_preset("demo-sft", "training.gradient_checkpointing=true", "training.max_steps=4",
                                       "samples.every_steps=0"))
    assert result.steps == 4


def test_export_merges_to_the_same_logits(demo_preset, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from trainer_core.export.merge import export_merged

    result, _ = collect(demo_preset("demo-sft", "training.max_steps=10", "samples.every_steps=0"))
    out = export_merged(result.run_dir, tmp_path / "merged")
    merged = AutoModelForImageTextToText.from_pretrained(out, dtype="auto")  # plain transformers, no PEFT
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # Export merges in the training precision (fp32 on CPU, bf16 on a bf16 GPU): compare like with like.
    dtype = merged.dtype
    base = AutoModelForImageTextToText.from_pretrained(demo_preset("demo-sft").model.name_or_path, dtype=dtype)
    tuned = PeftModel.from_pretrained(base, str(result.adapter)).eval()
    proc = AutoProcessor.from_pretrained(out)
    from PIL import Image

    img = Image.open(demo_preset("demo-sft").samples.prompts[0].image).convert("RGB")
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the value of B?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = proc(text=[text], images=[[img]], return_tensors="pt")
    with torch.no_grad():
        a = tuned(**inputs).logits
        b = merged.eval()(**inputs).logits
    # bf16 merges round each weight once: compare closely in fp32, loosely (but on average tightly) in bf16
    atol = 1e-4 if dtype == torch.float32 else 0.25
    assert torch.allclose(a.float(), b.float(), atol=atol), (a - b).abs().max()
    assert (a.float() - b.float()).abs().mean() < (1e-5 if dtype == torch.float32 else 0.03)
    # and the adapter did change the model
    with torch.no_grad(), tuned.disable_adapter():
        c = tuned(**inputs).logits
    assert not torch.allclose(a.float(), c.float(), atol=10 * atol)


def test_dpo_loss_type_typo_fails_before_loading(demo_preset):
    result = run_training(demo_preset("demo-dpo", "dpo.loss_type=sigmoidd"))
    assert result.status == "failed"
    assert "dpo.loss_type: 'sigmoidd' is not known; did you mean 'sigmoid'?" in result.error


def test_engine_owned_arguments_cannot_come_through_extra(demo_preset):
    result = run_training(demo_preset("demo-sft", "training.extra={output_dir: /tmp/elsewhere}"))
    assert "training.extra.output_dir: set by vlmtune itself" in result.error
