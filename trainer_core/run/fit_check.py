"""The fit check before step 1: one forward and backward pass on the longest rows of the data at the planned
micro-batch, its peak memory measured and set beside the estimate (docs/memory.md). An OOM here is caught by
the engine's back-off before any step is taken; the record in summary.json is how the estimate's accuracy
is measured on real runs."""

from __future__ import annotations

import json
import time
from typing import Any

from trainer_core.config.presets import Preset

# Rows looked at to find the longest: enough for any fine-tuning set we have seen, bounded for huge ones.
MAX_ROWS_SCANNED = 20_000
_IMAGE_WEIGHT = 5_000  # an image costs far more than a character of text; rows with more images come first


def _row_size(row: dict[str, Any]) -> int:
    size = 0
    for key, value in row.items():
        if key.endswith("input_ids") and isinstance(value, list):
            size += 4 * len(value)  # tokens ~ 4 characters
        elif key in ("images", "image"):
            size += _IMAGE_WEIGHT * (len(value) if isinstance(value, list) else int(value is not None))
        elif isinstance(value, (str, list, dict)):
            size += len(json.dumps(value, default=str))
    return size


def longest_rows(dataset: Any, n: int) -> list[int]:
    """Indices of the n largest rows (text length, plus images), without decoding any image."""
    image_columns = [c for c in ("images", "image") if c in dataset.column_names]
    view = dataset.select(range(min(len(dataset), MAX_ROWS_SCANNED)))
    counts = {c: [len(x) if isinstance(x, list) else int(x is not None)
                  for x in view.with_format("arrow")[c].to_pylist()] for c in image_columns} if image_columns else {}
    text = view.remove_columns(image_columns) if image_columns else view
    sizes = []
    for i, row in enumerate(text):
        size = _row_size(row) + sum(_IMAGE_WEIGHT * counts[c][i] for c in image_columns)
        sizes.append((size, i))
    return [i for _, i in sorted(sizes, reverse=True)[:n]]


def preset_estimate(preset: Preset, precision: str, **loaded: Any) -> int | None:
    """The memory model's peak for this preset as it will run (None when the model cannot be inspected).
    `loaded`: the run's config, processor and data stats, so nothing is read twice (see plan_for)."""
    try:
        from trainer_core.plan.from_preset import plan_preset_report, settings_for
        from trainer_core.plan.memory import estimate_memory

        # Any GPU size will do: only the data's shape is taken from the plan, the rest is the preset's.
        report = plan_preset_report(preset, gpu_mib=80_000, **loaded)
        settings = settings_for(preset, report, precision=precision)
        return int(estimate_memory(report.model, settings).peak_allocated)
    except Exception:  # an estimate is a comparison, never a reason to stop a run
        return None


def run_fit_check(trainer: Any, preset: Preset, estimate: int | None = None) -> dict[str, Any]:
    """Forward + backward on the longest micro-batch; raises the allocator's OOM if it does not fit."""
    import torch

    micro = preset.training.micro_batch_size
    started = time.perf_counter()
    rows = longest_rows(trainer.train_dataset, micro)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    model = trainer.model
    args = trainer.args
    if getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False):
        kwargs = getattr(args, "activation_checkpointing_kwargs", None) or \
            getattr(args, "gradient_checkpointing_kwargs", None)
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model.train()
    # Set by the training loop, read by training_step for loss scaling: one micro-batch here.
    if not hasattr(trainer, "current_gradient_accumulation_steps"):
        trainer.current_gradient_accumulation_steps = 1
    try:
        trainer.training_step(model, trainer._prepare_inputs(batch))
    finally:
        model.zero_grad(set_to_none=True)
    measured = int(torch.cuda.max_memory_allocated()) if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    return {"micro_batch_size": micro, "rows": rows, "measured_peak": measured, "estimate": estimate,
            # The check has no optimizer states yet (AdamW makes them at step 1); the estimate includes them.
            "note": None if cuda else "CPU: peak not measured (torch tracks CUDA memory only)",
            "seconds": round(time.perf_counter() - started, 2)}
