"""The engine's events: frozen dataclasses, one per thing that happens in a run.
Every event has a `kind` and `to_dict()`; the run folder stores them as JSON rows, and
`trainer_core.events.history` turns those rows back into these types.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Memory:
    """CUDA figures where CUDA runs, else the process's resident memory; bytes."""

    device: str
    allocated: int | None = None
    reserved: int | None = None
    peak_allocated: int | None = None
    rss: int | None = None
    total: int | None = None  # the device's memory (GPU) or the machine's RAM (CPU): what the gauges fill


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_dir: str
    name: str
    task: str
    model: str
    is_vlm: bool
    trainable_params: int
    total_params: int
    max_steps: int
    world_size: int
    resumed_from_step: int
    # Resolved precision, quantization, LoRA and batch figures, for display.
    summary: dict[str, Any]


@dataclass(frozen=True)
class StepLogged(Event):
    kind: ClassVar[str] = "step"
    step: int
    max_steps: int
    epoch: float
    loss: float | None
    learning_rate: float | None
    grad_norm: float | None
    samples_per_second: float | None
    tokens_per_second: float | None
    elapsed: float
    memory: Memory
    # Anything else the trainer logged (DPO rewards/accuracies, entropy, ...).
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalLogged(Event):
    kind: ClassVar[str] = "eval"
    step: int
    epoch: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class SampleGenerated(Event):
    kind: ClassVar[str] = "sample"
    step: int
    prompt: str
    image: str | None
    output: str


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass(frozen=True)
class OomBackoff(Event):
    """A step ran out of memory; training goes on from `step` (the last completed optimizer step) with a
    smaller micro-batch and more accumulation (their product unchanged), or with gradient checkpointing."""

    kind: ClassVar[str] = "oom_backoff"
    step: int
    before: dict[str, Any]  # micro_batch_size, gradient_accumulation_steps, gradient_checkpointing
    after: dict[str, Any]
    memory_at_failure: int | None  # bytes: CUDA peak allocated, or the process's RSS on CPU
    during: str  # "fit check" or "training"


@dataclass(frozen=True)
class LogMessage(Event):
    kind: ClassVar[str] = "log"
    level: str
    message: str


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    status: str  # completed | stopped | failed
    run_dir: str
    steps: int
    final_loss: float | None
    adapter: str | None
    error: str | None = None


@dataclass(frozen=True)
class TaskEvalScored(Event):
    """The task metric on a fixed few held-out rows during training (preset `eval.every_steps`)."""

    kind: ClassVar[str] = "task_eval"
    step: int
    metric: str  # e.g. relaxed_accuracy, preference_accuracy
    score: float
    rows: int
    seconds: float  # what scoring cost (training waits meanwhile)
    best_step: int
    best_score: float
