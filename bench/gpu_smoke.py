"""What only a GPU shows, on the tiny demo: precision auto -> bf16, QLoRA (4-bit) and 8-bit loading,
peak VRAM and throughput, through the same engine and presets as on CPU.

    python bench/gpu_smoke.py [--steps 40]

Prints one row per run: status, resolved precision, quantization, steps/s, peak allocated, loss first->last.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()

    import datasets
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from trainer_core.config.presets import load_preset
    from trainer_core.demo import build_demo
    from trainer_core.events import EventStream, RunStarted, StepLogged
    from trainer_core.run.engine import run_training

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
    tmp = Path(tempfile.mkdtemp(prefix="vlmtune-gpu-"))
    demo = build_demo(tmp / "demo")
    runs = [
        ("demo-sft", []),
        ("demo-sft", ["quantization=4bit"]),
        ("demo-sft", ["quantization=8bit"]),
        ("demo-sft", ["training.gradient_checkpointing=true"]),
        ("demo-sft", ["precision=fp16"]),
        ("demo-dpo", []),
        ("demo-dpo", ["quantization=4bit"]),
        ("demo-text-sft", ["quantization=4bit"]),
        ("demo-text-dpo", []),
    ]
    print(f"{'preset':14} {'variant':34} {'status':9} {'prec':5} {'quant':5} {'steps/s':>8} {'peak MiB':>9} "
          f"{'loss first -> last':>20}")
    for name, extra in runs:
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
        preset = load_preset(demo.presets / f"{name}.yaml", [
            f"output_dir={tmp / 'runs'}", f"training.max_steps={a.steps}", "samples.every_steps=0", *extra])
        events = EventStream()
        seen: list = []
        events.subscribe(seen.append)
        result = run_training(preset, events=events)
        steps = [e for e in seen if isinstance(e, StepLogged)]
        started = [e for e in seen if isinstance(e, RunStarted)]
        if result.status != "completed" or not steps:
            print(f"{name:14} {' '.join(extra) or '-':34} {result.status:9} {result.error}")
            continue
        sps = (len(steps) - 1) / (steps[-1].elapsed - steps[0].elapsed) if len(steps) > 1 else float("nan")
        peak = max((s.memory.peak_allocated or 0) for s in steps) / 2**20
        s = started[0].summary
        print(f"{name:14} {' '.join(extra) or '-':34} {result.status:9} {s['precision']:5} {s['quantization']:5} "
              f"{sps:8.1f} {peak:9.1f} {steps[0].loss:9.3f} -> {steps[-1].loss:7.3f}")


if __name__ == "__main__":
    main()
