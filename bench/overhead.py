"""vlmtune's overhead over plain TRL: the same tiny SFT run both ways, in one process, steps/s ratio.

    python bench/overhead.py [--steps 60] [--repeats 3] [--model vlm|text]

Both sides time from the Trainer's on_train_begin to its last step (model loading and saving
excluded); runs alternate so drift on the machine hits both alike. Target: vlmtune >= 0.98x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def plain_trl(preset, data_train, processing_class, model_path: str, is_vlm: bool, out: Path) -> float:
    """The script a TRL user would write by hand for the same config."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    from trainer_core.model.lora_targets import auto_target_modules

    auto = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = auto.from_pretrained(model_path)
    t = preset.training
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=t.micro_batch_size,
                     gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
                     max_steps=t.max_steps, max_length=t.max_length, lr_scheduler_type=t.lr_scheduler,
                     logging_steps=t.logging_steps, save_strategy="no", report_to="none", disable_tqdm=True,
                     activation_checkpointing=False, use_cpu=True, dataloader_pin_memory=False, seed=t.seed,
                     bf16=False, fp16=False)  # the same fp32 as vlmtune resolves on CPU (TRL defaults to bf16)
    lora = LoraConfig(r=preset.lora.r, lora_alpha=preset.lora.alpha, lora_dropout=preset.lora.dropout,
                      target_modules=auto_target_modules(model), task_type="CAUSAL_LM")
    clock = make_clock()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data_train, processing_class=processing_class,
                         peft_config=lora, callbacks=[clock])
    trainer.train()
    return clock.steps_per_second()


def make_clock(warmup_steps: int = 0):
    """The same stopwatch on both sides: from on_train_begin (or the end of step `warmup_steps`, to leave out
    start-up work that overlaps the first steps) to the last on_step_end."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        start = end = 0.0
        steps = 0

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            self.end, self.steps = time.perf_counter(), state.global_step
            if state.global_step == warmup_steps:
                self.start = self.end

        def steps_per_second(self) -> float:
            return (self.steps - warmup_steps) / (self.end - self.start)

    return Clock()


def vlmtune_run(preset) -> float:
    from trainer_core.run.engine import run_training

    clock = make_clock()
    result = run_training(preset, callbacks=[clock])
    assert result.status == "completed", result.error
    return clock.steps_per_second()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", choices=["vlm", "text"], default="vlm")
    a = ap.parse_args()

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from trainer_core.config.presets import load_preset
    from trainer_core.data.prepare import prepare_dataset
    from trainer_core.demo import build_demo
    from trainer_core.model.loading import load_processing_class

    tmp = Path(tempfile.mkdtemp(prefix="vlmtune-bench-"))
    demo = build_demo(tmp / "demo")
    name = "demo-sft" if a.model == "vlm" else "demo-text-sft"
    preset = load_preset(demo.presets / f"{name}.yaml", [
        f"output_dir={tmp / 'runs'}", f"training.max_steps={a.steps}", "samples.every_steps=0",
        "samples.prompts=[]", "data.eval_fraction=0", f"training.save_steps={a.steps * 10}"])
    is_vlm = a.model == "vlm"
    proc, tok = load_processing_class(preset.model.name_or_path, is_vlm)
    data = prepare_dataset(preset.data, "sft", conversational=bool(tok.chat_template), is_vlm=is_vlm)

    ours, theirs = [], []
    for i in range(a.repeats):
        # Alternate who goes first, and pair each round: drift on a shared machine hits both sides alike.
        if i % 2:
            ours.append(vlmtune_run(preset))
            theirs.append(plain_trl(preset, data.train, proc, preset.model.name_or_path, is_vlm, tmp / f"p{i}"))
        else:
            theirs.append(plain_trl(preset, data.train, proc, preset.model.name_or_path, is_vlm, tmp / f"p{i}"))
            ours.append(vlmtune_run(preset))
        print(f"round {i + 1}: plain TRL {theirs[-1]:.1f} steps/s, vlmtune {ours[-1]:.1f} steps/s, "
              f"ratio {ours[-1] / theirs[-1]:.3f}")
    o, t = statistics.median(ours), statistics.median(theirs)
    paired = statistics.median(x / y for x, y in zip(ours, theirs, strict=True))
    print(f"\n{a.model} SFT, {a.steps} steps x {a.repeats} rounds")
    print(f"plain TRL  {t:8.2f} steps/s (median)")
    print(f"vlmtune    {o:8.2f} steps/s (median)")
    print(f"ratio      {paired:8.3f}x  median of paired rounds (target >= 0.98x)")


if __name__ == "__main__":
    main()
