"""The engine's one event stream: typed events and the subscription that fans them out.

The TUI, the headless progress bar, the metrics files and tests are all subscribers. `emit` calls each
subscriber in the training thread, so subscribers must return at once (write a line, post a message,
put on a queue); a subscriber that raises is reported once and detached, never breaking training.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
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


Subscriber = Callable[[Event], None]


class EventStream:
    """Fan-out of engine events to any number of subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers = [*self._subscribers, subscriber]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not subscriber]

        return unsubscribe

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:  # a snapshot: subscribe/unsubscribe swap the list
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed; detached", subscriber)
                with self._lock:
                    self._subscribers = [s for s in self._subscribers if s is not subscriber]


class QueueSubscriber:
    """Hands events to another thread through a bounded queue; never blocks the emitter.

    When the consumer falls behind, step events are dropped; the others (samples, checkpoints, the end of
    the run) are kept, in order, in an overflow list that `drain` returns after the queue's contents.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self._overflow: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            overflowing = bool(self._overflow)
        if not overflowing:
            try:
                self.queue.put_nowait(event)
                return
            except queue.Full:
                pass
        # Once overflowing, everything goes behind what already overflowed, so order is kept.
        if isinstance(event, StepLogged):
            self.dropped += 1
        else:
            with self._lock:
                self._overflow.append(event)

    def drain(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            out.extend(self._overflow)
            self._overflow.clear()
        return out


class StopSignal:
    """Requests from any thread (or a signal handler) that the engine honours at the next step boundary:
    stop (saving a checkpoint and the adapter), or save a checkpoint now and go on."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._checkpoint = threading.Event()
        self.reason = ""

    def request_checkpoint(self) -> None:
        self._checkpoint.set()

    def take_checkpoint_request(self) -> bool:
        """True once per request (the engine clears it when it schedules the save)."""
        if self._checkpoint.is_set():
            self._checkpoint.clear()
            return True
        return False

    def request(self, reason: str = "stop requested") -> None:
        self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
