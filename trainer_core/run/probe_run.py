"""`vlmtune plan --probe-run`: a few real steps at the recommended size on the GPU, measured against the plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer_core.plan.planner import PlanReport


@dataclass(frozen=True)
class ProbeRun:
    micro_batch_size: int
    gradient_accumulation_steps: int
    measured_peak: int
    predicted_peak: int
    fits: bool


def probe_run(preset: Any, report: PlanReport, steps: int = 3) -> list[ProbeRun]:
    """Run `steps` real steps at the recommended size on the GPU and halve the micro-batch (doubling the
    accumulation) while the measured peak leaves less than the plan's margin free."""
    import gc
    import tempfile

    import torch

    from trainer_core.config.presets import preset_from_dict
    from trainer_core.plan.from_preset import settings_for
    from trainer_core.plan.memory import CUDA_CONTEXT_BYTES, FRAGMENTATION, estimate_memory
    from trainer_core.run.engine import run_training

    if not torch.cuda.is_available():
        raise RuntimeError("--probe-run needs a CUDA GPU on this machine")
    fields = report.plan.preset_fields()
    budget = report.plan.target.available_bytes * (1 - report.goal.margin)
    micro = fields["training"]["micro_batch_size"]
    effective = micro * fields["training"]["gradient_accumulation_steps"]
    runs: list[ProbeRun] = []
    with tempfile.TemporaryDirectory(prefix="vlmtune-probe-run-") as tmp:
        while True:
            raw = preset.to_dict()
            raw.update(precision=fields["precision"], quantization=fields["quantization"], output_dir=tmp)
            raw["training"].update(fields["training"], micro_batch_size=micro,
                                   gradient_accumulation_steps=max(1, effective // micro), max_steps=steps,
                                   save_steps=10 * steps, eval_steps=None)
            if fields["lora"].get("enabled") and fields["lora"]["r"] != raw["lora"]["r"]:
                raw["lora"].update(fields["lora"])  # the plan lowered the rank to fit: probe that rank
            raw["data"]["eval_fraction"] = 0.0
            raw["samples"] = {"every_steps": 0, "prompts": []}
            trial = preset_from_dict(raw)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            result = run_training(trial)
            status, error, oom = result.status, result.error, "out of memory" in (result.error or "")
            del result  # its exception's frames hold the model and activations: free them before the next try
            peak = torch.cuda.max_memory_allocated()
            if status == "failed" and not oom:
                raise RuntimeError(f"the probe run failed: {error}")
            predicted = estimate_memory(report.model, settings_for(trial, report)).peak_allocated
            ok = status == "completed" and peak * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES <= budget
            runs.append(ProbeRun(micro, max(1, effective // micro), peak, predicted, ok))
            if ok or micro == 1:
                return runs
            micro //= 2
