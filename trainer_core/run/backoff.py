"""Out-of-memory back-off: what to try next when a step does not fit, keeping the effective batch.

Halve the micro-batch and double the accumulation (micro x accumulation unchanged); at micro-batch 1 turn
gradient checkpointing on; past that there is nothing left to trade without changing the run, and the
engine fails with what would fit."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from trainer_core.config.presets import Preset


@dataclass(frozen=True)
class BatchShape:
    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool

    @classmethod
    def of(cls, preset: Preset) -> BatchShape:
        t = preset.training
        return cls(t.micro_batch_size, t.gradient_accumulation_steps, t.gradient_checkpointing)

    def as_dict(self) -> dict[str, Any]:
        return {"micro_batch_size": self.micro_batch_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "gradient_checkpointing": self.gradient_checkpointing}

    def __str__(self) -> str:
        return (f"micro-batch {self.micro_batch_size} x accumulation {self.gradient_accumulation_steps}"
                + (" with gradient checkpointing" if self.gradient_checkpointing else ""))


def next_smaller(shape: BatchShape) -> BatchShape | None:
    """The next configuration to try after an OOM, or None when nothing is left to trade."""
    if shape.micro_batch_size > 1:
        micro = shape.micro_batch_size // 2
        # ceil keeps the effective batch at least as large when the micro-batch was odd (3 -> 1 x 3, not 1 x 2)
        accumulation = math.ceil(shape.micro_batch_size * shape.gradient_accumulation_steps / micro)
        return BatchShape(micro, accumulation, shape.gradient_checkpointing)
    if not shape.gradient_checkpointing:
        return BatchShape(1, shape.gradient_accumulation_steps, True)
    return None


def apply(preset: Preset, shape: BatchShape) -> Preset:
    from dataclasses import replace

    return preset.replace(training=replace(preset.training, micro_batch_size=shape.micro_batch_size,
                                           gradient_accumulation_steps=shape.gradient_accumulation_steps,
                                           gradient_checkpointing=shape.gradient_checkpointing))


def is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator failing (torch raises a RuntimeError for that)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    # oneDNN (CPU kernels) reports a scratchpad it could not allocate as "could not create a primitive".
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()
                                              or "could not create a primitive" in text)


def free_memory(trainer: Any) -> None:
    """Drop what a failed step left behind: gradients, cached blocks."""
    import gc

    import torch

    if trainer is not None:
        # A model half-way through a failed step can refuse; the collection below still helps.
        with contextlib.suppress(Exception):
            trainer.model.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
