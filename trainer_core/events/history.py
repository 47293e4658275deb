"""A run's history as a monitor needs it, fed either by live engine events or by following a run directory.

`RunHistory` is the one buffer both feeds write to (under a lock; appends only, so training never waits
on a screen), and a UI reads it with `snapshot()` on its own timer. `RunFollower` tails the run's JSON Lines
files from another process (headless, accelerate, detached), tolerating a half-written last line.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_core.base.processes import gone_process
from trainer_core.events import (
    CheckpointSaved,
    EvalLogged,
    Event,
    LogMessage,
    OomBackoff,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
    TaskEvalScored,
)
from trainer_core.events.codec import FILES, decode


def smooth(values: list[float], weight: float = 0.6) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing), debiased so the start is not pulled to 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


@dataclass
class HistoryView:
    name: str = ""
    task: str = ""
    run_dir: str = ""
    status: str = "starting"
    error: str | None = None
    total_steps: int = 0
    step: int = 0
    epoch: float = 0.0
    elapsed: float = 0.0
    loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    learning_rate: list[tuple[int, float]] = field(default_factory=list)
    samples_per_second: float | None = None
    tokens_per_second: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)  # newest first
    logs: list[str] = field(default_factory=list)  # newest last
    checkpoints: list[str] = field(default_factory=list)
    final_loss: float | None = None
    adapter: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    # the task metric on held-out rows during training (eval.every_steps): name, (step, score) points, best
    task_metric: str = ""
    task_scores: list[tuple[int, float]] = field(default_factory=list)
    task_best: tuple[int, float] | None = None

    @property
    def eta_seconds(self) -> float | None:
        if self.step <= 0 or self.total_steps <= 0 or self.elapsed <= 0 or self.step >= self.total_steps:
            return None
        return self.elapsed / self.step * (self.total_steps - self.step)


class RunHistory:
    def __init__(self, max_samples: int = 50, max_logs: int = 500) -> None:
        self._lock = threading.Lock()
        self._view = HistoryView()
        self._samples: deque[dict[str, Any]] = deque(maxlen=max_samples)
        self._logs: deque[str] = deque(maxlen=max_logs)
        self.version = 0  # bumped on every change: a UI redraws only when it moved

    # -- live events (an EventStream subscriber)
    def __call__(self, event: Event) -> None:
        with self._lock:
            self._apply_event(event)
            self.version += 1

    def _apply_event(self, e: Event) -> None:
        v = self._view
        if isinstance(e, RunStarted):
            v.name, v.task, v.run_dir, v.total_steps = e.name, e.task, e.run_dir, e.max_steps
            v.status, v.summary = "running", dict(e.summary)
            v.step = e.resumed_from_step
        elif isinstance(e, StepLogged):
            self._step(e.step, e.max_steps, e.epoch, e.loss, e.learning_rate, e.samples_per_second,
                       e.tokens_per_second, e.elapsed, {k: getattr(e.memory, k) for k in
                                                        ("device", "allocated", "reserved", "peak_allocated", "rss", "total")})
        elif isinstance(e, EvalLogged):
            if "eval_loss" in e.metrics:
                v.eval_loss.append((e.step, e.metrics["eval_loss"]))
        elif isinstance(e, TaskEvalScored):
            v.task_metric = e.metric
            v.task_scores.append((e.step, e.score))
            v.task_best = (e.best_step, e.best_score)
        elif isinstance(e, SampleGenerated):
            self._samples.appendleft({"step": e.step, "prompt": e.prompt, "image": e.image, "output": e.output})
        elif isinstance(e, CheckpointSaved):
            v.checkpoints.append(e.path)
            self._logs.append(f"step {e.step}: checkpoint saved ({Path(e.path).name})")
        elif isinstance(e, OomBackoff):
            self._backoff(e.step, e.before, e.after, e.memory_at_failure)
        elif isinstance(e, LogMessage):
            if e.level != "debug":
                self._logs.append(f"{e.level}: {e.message.strip().splitlines()[0] if e.message.strip() else ''}")
        elif isinstance(e, RunFinished):
            v.status, v.error, v.final_loss, v.adapter = e.status, e.error, e.final_loss, e.adapter
            v.run_dir = v.run_dir or e.run_dir
            self._logs.append(f"{e.status} after {e.steps} steps" + (f": {e.error}" if e.error else ""))

    def _backoff(self, step: int, before: dict[str, Any], after: dict[str, Any], memory: Any) -> None:
        """The batch line shows the shape in use; the back-offs are listed with it."""
        v = self._view
        v.summary["micro_batch_size"] = after.get("micro_batch_size")
        v.summary["gradient_accumulation_steps"] = after.get("gradient_accumulation_steps")
        v.summary.setdefault("oom_backoffs", []).append({"step": step, "from": before.get("micro_batch_size"),
                                                         "to": after.get("micro_batch_size")})
        self._logs.append(f"out of memory after step {step}: micro-batch {before.get('micro_batch_size')} -> "
                          f"{after.get('micro_batch_size')}, accumulation {before.get('gradient_accumulation_steps')}"
                          f" -> {after.get('gradient_accumulation_steps')}"
                          + (" + gradient checkpointing" if after.get("gradient_checkpointing")
                             and not before.get("gradient_checkpointing") else ""))

    def _step(self, step: int, total: int, epoch: float, loss: float | None, lr: float | None,
              sps: float | None, tps: float | None, elapsed: float, memory: dict[str, Any]) -> None:
        v = self._view
        v.step, v.total_steps, v.epoch, v.elapsed = step, total or v.total_steps, epoch, elapsed
        if loss is not None:
            v.loss.append((step, loss))
        if lr is not None:
            v.learning_rate.append((step, lr))
        v.samples_per_second, v.tokens_per_second = sps, tps
        v.memory = {k: x for k, x in memory.items() if x is not None}
        if v.status == "starting":
            v.status = "running"

    # -- rows read back from a run directory (RunFollower): the same events, decoded
    def apply_rows(self, kind: str, rows: list[dict[str, Any]]) -> None:
        events = [e for e in (decode(kind, r) for r in rows) if e is not None]
        with self._lock:
            for e in events:
                self._apply_event(e)
            if events:
                self.version += 1

    def set_summary(self, summary: dict[str, Any]) -> None:
        with self._lock:
            v = self._view
            status = summary.get("status")
            if status and status != v.status:
                v.status = "running" if status == "running" else status
                v.error = summary.get("error")
                v.final_loss = summary.get("final_loss")
                v.adapter = summary.get("adapter")
                v.name = v.name or summary.get("name", "")
                self.version += 1

    @property
    def status(self) -> str:
        """The run's status alone: a UI's timer asks it every tick, a full snapshot copies every list."""
        with self._lock:
            return self._view.status

    def snapshot(self) -> HistoryView:
        with self._lock:
            view = copy.copy(self._view)
            view.loss, view.eval_loss = list(self._view.loss), list(self._view.eval_loss)
            view.learning_rate = list(self._view.learning_rate)
            view.task_scores = list(self._view.task_scores)
            view.checkpoints = list(self._view.checkpoints)
            view.samples, view.logs = list(self._samples), list(self._logs)
            view.memory, view.summary = dict(self._view.memory), dict(self._view.summary)
            return view


class RunFollower:
    """Reads what a run directory gained since the last poll. Only complete lines count: a line still being
    written (no newline yet) is read on a later poll."""

    def __init__(self, run_dir: str | Path, history: RunHistory) -> None:
        self.run_dir = Path(run_dir)
        self.history = history
        self._offsets = dict.fromkeys(FILES, 0)
        self.last_poll = 0.0

    def poll(self) -> bool:
        """Apply new lines; True when anything changed."""
        before = self.history.version
        for kind, name in FILES.items():
            path = self.run_dir / name
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets[kind])
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            self._offsets[kind] += end + 1
            rows = []
            for line in chunk[:end].splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            self.history.apply_rows(kind, rows)
        self._check_summary()
        self.last_poll = time.time()
        return self.history.version != before

    def _check_summary(self) -> None:
        """The run's summary, or why the run can no longer write one (its folder or its process is gone)."""
        try:
            summary = json.loads((self.run_dir / "summary.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            summary = None
        if not self.run_dir.is_dir():
            self.history.set_summary({"status": "failed", "error": f"the run folder {self.run_dir} no longer exists"})
            return
        if self.history.status in ("starting", "running") and (summary or {}).get("status", "running") == "running":
            pid = gone_process(self.run_dir, summary)
            if pid is not None:
                summary = {**(summary or {}), "status": "failed", "error": (
                    f"the run's process (pid {pid}) ended without finishing (killed, out of memory, or it failed "
                    f"to start: see {self.run_dir / 'console.log'}); continue it with "
                    f"`vlmtune train --resume {self.run_dir} --headless`")}
        if summary:
            self.history.set_summary(summary)
