"""The engine: from a Preset to a trained adapter, through TRL, reporting everything as events.

`run_training(preset, events, stop)` is the one entry point that the headless CLI, the TUI and the tests
call. It never raises for a failed run: the result (and `summary.json`) says `failed` with a readable
error, and the exception is kept on the result for `--debug`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_core.base.atomic import atomic_write_dir, atomic_write_text
from trainer_core.base.errors import VlmtuneError
from trainer_core.base.limits import check_chat_template
from trainer_core.base.processes import this_host
from trainer_core.config.presets import Preset
from trainer_core.events import (
    CheckpointSaved,
    EvalLogged,
    EventStream,
    LogMessage,
    Memory,
    OomBackoff,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
    StopSignal,
)
from trainer_core.run.checkpoints import clear_staging, with_atomic_checkpoints
from trainer_core.run.folder import (
    RecordingFailed,
    RunPaths,
    RunRecorder,
    claim_run_dir,
    new_run_dir,
    open_run,
    read_summary,
    record_error,
    recording_failed,
    truncate_metrics_after,
    write_summary,
)
from trainer_core.run.lock import RunLock
from trainer_core.run.resume import prepare_resume

log = logging.getLogger(__name__)

# Keys the Trainer logs that have their own field in StepLogged (or mean nothing per step).
_STEP_KEYS = {"loss", "learning_rate", "grad_norm", "epoch", "num_input_tokens_seen", "step", "total_flos",
              "train_tokens_per_second"}


@dataclass
class RunResult:
    status: str  # completed | stopped | failed
    run_dir: Path
    steps: int = 0
    final_loss: float | None = None
    adapter: Path | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    traceback: str | None = field(default=None, repr=False)


def world_info() -> tuple[int, int]:
    """(rank, world size) as accelerate/torchrun set them; (0, 1) for a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


_PROCESS = None  # psutil.Process for this process, made once: creating it costs more than reading it
_TOTALS: dict[str, int] = {}  # device and RAM totals do not change during a run: read once


def memory_snapshot() -> Memory:
    import torch

    global _PROCESS
    if torch.cuda.is_initialized():
        device = torch.cuda.current_device()
        if f"cuda{device}" not in _TOTALS:
            _TOTALS[f"cuda{device}"] = torch.cuda.mem_get_info(device)[1]
        return Memory(
            device="cuda",
            allocated=torch.cuda.memory_allocated(),
            reserved=torch.cuda.memory_reserved(),
            peak_allocated=torch.cuda.max_memory_allocated(),
            total=_TOTALS[f"cuda{device}"],
        )
    import psutil

    if _PROCESS is None:
        _PROCESS = psutil.Process()
        _TOTALS["ram"] = psutil.virtual_memory().total
    return Memory(device="cpu", rss=_PROCESS.memory_info().rss, total=_TOTALS["ram"])


def explain_error(exc: BaseException) -> str:
    """One readable paragraph for a failure: what went wrong and what to try."""
    if isinstance(exc, VlmtuneError):
        return str(exc)
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return ("out of memory: the model, batch and sequence do not fit. Try, in order: "
                "training.gradient_checkpointing: true, a smaller training.micro_batch_size (raise "
                "gradient_accumulation_steps to keep the effective batch), a lower training.max_length, "
                "quantization: 4bit (QLoRA), or a smaller lora.r. `vlmtune plan` estimates what fits. "
                f"({str(exc).splitlines()[0][:200]})")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _EventLogHandler(logging.Handler):
    """Library warnings (transformers, TRL, PEFT) become LogMessage events for the run's log."""

    def __init__(self, events: EventStream):
        super().__init__(level=logging.WARNING)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level, message = record.levelname.lower(), record.getMessage().strip()
            if record.name == "py.warnings":
                # "path:line: FutureWarning: text\n  source line" -> "FutureWarning: text"
                match = re.search(r"(\w*Warning): (.*)", message)
                if match:
                    message = f"{match.group(1)}: {match.group(2)}"
                    # Deprecations inside the libraries are not the user's to fix: keep them out of sight.
                    if match.group(1) in ("FutureWarning", "DeprecationWarning"):
                        level = "debug"
            self.events.emit(LogMessage(level=level, message=message))
        except Exception:  # a log line must never break training
            pass


_LIBRARY_LOGGERS = ("transformers", "trl", "peft", "accelerate", "py.warnings")


def _make_callback(events: EventStream, stop: StopSignal, ctx: _RunContext):
    from transformers import TrainerCallback

    class EngineCallback(TrainerCallback):
        """Turns Trainer hooks into engine events, and honours stop requests at step boundaries."""

        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.last_time = self.start
            self.last_step = 0
            self.last_tokens = 0
            self.last_loss: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.start = self.last_time = time.perf_counter()
            self.last_step = state.global_step
            self.last_tokens = 0  # TRL's num_tokens counts from this trainer's start

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = logs or {}
            now = time.perf_counter()
            if "loss" in logs:
                steps = state.global_step - self.last_step
                dt = now - self.last_time
                seen = logs.get("num_tokens") or 0  # cumulative, logged by TRL's SFT/DPO trainers
                tokens = seen - self.last_tokens
                sps = steps * ctx.samples_per_step / dt if dt > 0 and steps > 0 else None
                tps = tokens / dt if dt > 0 and tokens > 0 else None
                self.last_time, self.last_step = now, state.global_step
                self.last_tokens = seen
                self.last_loss = float(logs["loss"])
                extra = {k: float(v) for k, v in logs.items()
                         if k not in _STEP_KEYS and isinstance(v, (int, float)) and not k.startswith("eval_")}
                events.emit(StepLogged(
                    step=state.global_step, max_steps=state.max_steps, epoch=float(state.epoch or 0.0),
                    loss=self.last_loss, learning_rate=_num(logs.get("learning_rate")),
                    grad_norm=_num(logs.get("grad_norm")), samples_per_second=sps, tokens_per_second=tps,
                    elapsed=now - self.start, memory=memory_snapshot(), extra=extra,
                ))
            evals = {k: float(v) for k, v in logs.items() if k.startswith("eval_") and isinstance(v, (int, float))}
            if evals:
                events.emit(EvalLogged(step=state.global_step, epoch=float(state.epoch or 0.0), metrics=evals))

            self._honour_stop(control)

        def _honour_stop(self, control, *, at_step_end: bool = False) -> None:  # noqa: ANN001
            if ctx.stopped:
                return
            requested, checkpoint = stop.requested, at_step_end and stop.take_checkpoint_request()
            if ctx.world_size > 1:
                # A signal reaches each rank at its own moment: agree on the step to stop (or save) at, or one
                # rank would wait forever in a collective the others left. One tiny all-reduce per step.
                if not at_step_end:
                    return
                requested, checkpoint = _any_rank(requested, checkpoint)
            if checkpoint:
                control.should_save = True
            if requested:
                if not stop.requested:
                    stop.request("another process stopped")
                # The Trainer saves a checkpoint at this step, then leaves its loop.
                control.should_save = True
                control.should_training_stop = True
                ctx.stopped = True

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            # on_step_end runs before this step's on_log; a request made while logging is honoured there.
            self._honour_stop(control, at_step_end=True)
            every = ctx.preset.samples.every_steps
            if every and state.global_step % every == 0 and not stop.requested:
                ctx.emit_samples(kwargs.get("model"), state.global_step)

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            events.emit(CheckpointSaved(step=state.global_step, path=str(path)))

    return EngineCallback()


def _any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag True on every rank when it is True on any (one small all-reduce)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flags
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if f else 0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(x) for x in t.tolist())


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None


@dataclass(frozen=True)
class RunInputs:
    """What a run reads once and hands on: the model's config, its processor and tokenizer, the prepared data.
    The weights load from these, and the fit check's estimate plans from them, without reading any again."""

    config: Any
    processing_class: Any
    tokenizer: Any
    data: Any  # trainer_core.data.prepare.PreparedData


@dataclass
class _RunContext:
    preset: Preset
    events: EventStream
    processing_class: Any = None
    is_vlm: bool = False
    samples_per_step: int = 1
    stopped: bool = False
    world_size: int = 1
    inputs: RunInputs | None = None

    def emit_samples(self, model: Any, step: int) -> None:
        from trainer_core.chat import GenerationSettings, generate

        settings = GenerationSettings(max_new_tokens=self.preset.samples.max_new_tokens)
        for sp in self.preset.samples.prompts:
            try:
                out = generate(model, self.processing_class, self.is_vlm, sp.text,
                               sp.image if self.is_vlm else None, settings)
            except Exception as exc:  # a failed sample is a warning, never the end of the run
                self.events.emit(LogMessage(level="warning", message=f"sample generation failed: {explain_error(exc)}"))
                return
            self.events.emit(SampleGenerated(step=step, prompt=sp.text, image=sp.image, output=out))


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total), counting 4-bit packed weights at their real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def _planned_steps(trainer: Any, preset: Preset, world_size: int) -> int:
    """Optimizer steps the run will take: max_steps, or what the epochs amount to."""
    if trainer.args.max_steps > 0:
        return trainer.args.max_steps
    t = preset.training
    per_step = t.micro_batch_size * t.gradient_accumulation_steps * world_size
    return max(1, math.ceil(len(trainer.train_dataset) / per_step * t.epochs))


def _fit_check_on(requested: bool | None, world_size: int) -> bool:
    # Back-off changes the batch shape of one process; under several the ranks would disagree, so only measure
    # there... and not even that: a rank-local OOM fails the run, which says what to change.
    if world_size > 1:
        return False
    if requested is not None:
        return requested
    from trainer_core.model.loading import cuda_available

    return cuda_available()


def _memory_now() -> int | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return memory_snapshot().rss


def _train_backing_off(trainer: Any, make: Any, preset: Preset, resume_ckpt: Path | None, paths: RunPaths,
                       events: EventStream, summary: dict[str, Any], recorder: RunRecorder | None, *,
                       fit_check: bool) -> Any:
    """trainer.train(), going on after an out-of-memory step with a smaller micro-batch (and the same effective
    batch) from the last completed optimizer step, saved as a checkpoint so that the Trainer's own resume
    restores the weights, optimizer, scheduler and position in the data. Returns the trainer that finished."""
    from trainer_core.run.backoff import BatchShape, apply, free_memory, is_oom, next_smaller
    from trainer_core.run.fit_check import run_fit_check

    main = recorder is not None
    current, ckpt = preset, resume_ckpt
    summary.setdefault("oom_backoffs", [])
    during = "fit check" if fit_check else "training"
    while True:
        try:
            if during == "fit check":
                # The estimate is the one for the preset as given; after a back-off the check measures the new shape.
                summary["fit_check"] = run_fit_check(trainer, current, summary.get("memory_estimate")
                                                     if current is preset else None)
                if main:
                    write_summary(paths, summary)
                during = "training"
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
            return trainer
        except Exception as exc:
            if not is_oom(exc) or world_info()[1] > 1:
                raise
            memory, message = _memory_now(), str(exc).splitlines()[0][:200]
        # Out of the except block: the exception's frames held the failed step's activations.
        before = BatchShape.of(current)
        after = next_smaller(before)
        step = trainer.state.global_step
        free_memory(trainer)
        if after is None:
            raise OutOfMemoryAfterBackoff(before, summary["oom_backoffs"], message)
        if step > 0 and (ckpt is None or ckpt.name != f"checkpoint-{step}"):
            # The weights and optimizer are those of the last completed step (the failed one never reached
            # optimizer.step): save them as that step's checkpoint and resume from it.
            trainer._save_checkpoint(trainer.model, trial=None)
        ckpt = paths.checkpoints / f"checkpoint-{step}" if step > 0 else None
        if recorder is not None:
            truncate_metrics_after(paths, step)
            recorder.close()  # its handles point at the files truncation replaced; the next row reopens them
        summary["oom_backoffs"].append({"step": step, "during": during, "from": before.as_dict(),
                                        "to": after.as_dict(), "memory_at_failure": memory, "error": message})
        if main:
            write_summary(paths, summary)
        events.emit(OomBackoff(step=step, before=before.as_dict(), after=after.as_dict(), memory_at_failure=memory,
                               during=during))
        events.emit(LogMessage(level="warning", message=f"out of memory in step {step + 1} ({during}) with "
                                                        f"{before}: going on with {after}"))
        model = trainer.model  # the weights stay; the old trainer's optimizer and buffers go
        del trainer
        free_memory(None)
        current = apply(current, after)
        trainer = make(current, model, None)


class OutOfMemoryAfterBackoff(VlmtuneError, RuntimeError):
    def __init__(self, last: Any, backoffs: list[dict[str, Any]], cause: str) -> None:
        self.last, self.backoffs = last, backoffs
        tried = f" after backing off {len(backoffs)} time(s)" if backoffs else ""
        super().__init__(
            f"out of memory with {last}{tried}: nothing is left to trade without changing the run. "
            f"{what_would_fit_hint()} ({cause[:160]})")


def what_would_fit_hint() -> str:
    return ("What would fit, in order: a lower training.max_length, quantization: 4bit (QLoRA), a smaller "
            "lora.r, or a smaller model; `vlmtune plan PRESET` names the configuration that fits this machine.")


def _save_adapter(trainer: Any, processing_class: Any, target: Path) -> Path:
    def fill(tmp: Path) -> None:
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        processing_class.save_pretrained(str(tmp))

    return atomic_write_dir(target, fill)


def run_training(preset: Preset, *, events: EventStream | None = None, stop: StopSignal | None = None,
                 resume: str | Path | None = None, run_dir: str | Path | None = None,
                 callbacks: list[Any] | None = None, fit_check: bool | None = None) -> RunResult:
    """Train `preset`; `resume` continues a run directory from its newest checkpoint.

    `callbacks` are extra transformers TrainerCallbacks (for integrations and benchmarks). `fit_check` runs
    the longest batch once before step 1 and backs off if it does not fit (None: on GPUs only).
    A run is a sequence of named steps: open the run folder, build the trainer, train, finish (or fail).
    """
    run = _Run(preset, events or EventStream(), stop or StopSignal(), resume, run_dir)
    try:
        run.build(list(callbacks or []), fit_check)
        run.train()
        return run.finish()
    except BaseException as exc:  # KeyboardInterrupt too: the run dir must say what happened
        result = run.fail(exc)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return result
    finally:
        run.close()


def _run_folder(preset: Preset, resume: str | Path | None, run_dir: str | Path | None, world_size: int,
                main: bool) -> Path:
    """The run folder, refused when vlmtune did not make it for this run (trainer_core.run.folder). Only rank 0
    claims it; the other ranks take the folder their launcher claimed."""
    if resume is not None:
        return open_run(resume, preset.name, mark=main)
    if run_dir is not None:
        if main:
            return claim_run_dir(run_dir, preset.name)
        root = Path(run_dir).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return root
    if world_size > 1:
        raise ValueError("under several processes every rank must share one run directory: launch through "
                         "`vlmtune train` (which passes --run-dir) rather than calling the engine per rank")
    return new_run_dir(preset.output_dir, preset.name)


class _Run:
    """One run's state as it goes through its steps. Only global rank 0 (`main`) writes the run folder."""

    def __init__(self, preset: Preset, events: EventStream, stop: StopSignal, resume: str | Path | None,
                 run_dir: str | Path | None) -> None:
        self.preset, self.events, self.stop, self.resuming = preset, events, stop, resume is not None
        rank, self.world_size = world_info()
        self.main = rank == 0
        self.root = _run_folder(preset, resume, run_dir, self.world_size, self.main)
        # Before anything is written: a second run on this folder is refused here (RunInUse).
        self.lock = RunLock.acquire(self.root) if self.main else None
        self.paths = RunPaths(self.root)
        self.recorder = RunRecorder(self.paths, on_failure=self._recording_failed) if self.main else None
        self._unsubscribe = events.subscribe(self.recorder) if self.recorder else (lambda: None)
        self._handler = _EventLogHandler(events)
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        logging.captureWarnings(True)
        previous = read_summary(self.root) or {}
        self.summary: dict[str, Any] = {
            "status": "running", "name": preset.name, "task": preset.task, "model": preset.model.name_or_path,
            "steps": previous.get("steps", 0), "final_loss": previous.get("final_loss"),
            "trainable_params": None, "total_params": None, "world_size": self.world_size, "adapter": None,
            "started": time.time(), "pid": os.getpid(), "host": this_host(),  # who can tell if it still runs
        }
        self.ctx = _RunContext(preset, events)
        self.trainer: Any = None
        self.resume_ckpt: Path | None = None
        self.checking = False

    def _write_summary(self) -> None:
        if self.main:
            write_summary(self.paths, self.summary)

    def _recording_failed(self) -> None:
        # Stop at the end of this step (all ranks agree on it); finish() then fails the run with the reason.
        self.stop.request("the run's record could not be written")

    def _check_record(self) -> None:
        if self.recorder is not None and self.recorder.failure is not None:
            raise self._recording_error(*self.recorder.failure)

    def _recording_error(self, path: Path, exc: BaseException) -> RecordingFailed:
        step = self.trainer.state.global_step if self.trainer is not None else self.resumed_step
        return recording_failed(self.root, path, exc, step)

    def _cause(self, exc: BaseException) -> BaseException:
        """A failed record is the cause even when the checkpoint saved on stopping failed after it (a full disk)."""
        if isinstance(exc, RecordingFailed) or not self.main:
            return exc
        if self.recorder is not None and self.recorder.failure is not None:
            return self._recording_error(*self.recorder.failure)
        path = record_error(self.root, exc)  # preset.yaml or summary.json could not be written
        return self._recording_error(path, exc) if path else exc

    @property
    def resumed_step(self) -> int:
        return int(self.resume_ckpt.name.split("-")[-1]) if self.resume_ckpt else 0

    def build(self, callbacks: list[Any], fit_check: bool | None) -> None:
        """Check the resume, record the preset, load model + data into a trainer, announce the run."""
        preset = self.preset
        # Before preset.yaml is replaced and any weights load: the preset must fit the run, the checkpoint be intact.
        start = prepare_resume(preset, self.root, self.events) if self.resuming else None
        if start is not None:
            self.summary["skipped_checkpoints"] = start.skipped
        if self.main:
            atomic_write_text(self.paths.preset, preset.to_yaml())
        self._write_summary()
        if preset.eval.every_steps > 0:  # the task metric during training; best_step goes in the summary
            from trainer_core.eval.during import TaskEvalCallback

            callbacks = [*callbacks, TaskEvalCallback(preset, self.events, self.ctx, self.summary)]
        self.trainer, self.resume_ckpt, self.loaded, self.make = _build_trainer(
            preset, self.paths, self.events, self.stop, self.ctx, start.checkpoint if start else None, callbacks)
        if self.main and not self.resuming:  # at the start only: a resume re-splits, and these rows must not move
            from trainer_core.eval.heldout import record_heldout

            record_heldout(self.root, self.ctx.inputs.data.eval)  # what `vlmtune eval` scores by default
        if self.resume_ckpt is not None:
            self.summary["resumed_from"] = {"step": self.resumed_step, "checkpoint": str(self.resume_ckpt),
                                            "at": time.time()}
            if self.main:
                truncate_metrics_after(self.paths, self.resumed_step)
        trainable, total = count_parameters(self.trainer.model)
        self.summary.update(trainable_params=trainable, total_params=total)
        self.checking = _fit_check_on(fit_check, self.world_size)
        if self.checking:
            from trainer_core.run.fit_check import preset_estimate

            inputs = self.ctx.inputs
            self.summary["memory_estimate"] = preset_estimate(preset, self.loaded.precision, config=inputs.config,
                                                              processor=inputs.processing_class,
                                                              stats=inputs.data.stats(inputs.tokenizer))
        self.events.emit(self._started(trainable, total))

    def _started(self, trainable: int, total: int) -> RunStarted:
        preset, trainer, t = self.preset, self.trainer, self.preset.training
        return RunStarted(
            run_dir=str(self.root), name=preset.name, task=preset.task, model=preset.model.name_or_path,
            is_vlm=self.loaded.is_vlm, trainable_params=trainable, total_params=total,
            max_steps=_planned_steps(trainer, preset, self.world_size), world_size=self.world_size,
            resumed_from_step=self.resumed_step,
            summary={
                "precision": self.loaded.precision, "quantization": preset.quantization,
                "lora": {"r": preset.lora.r, "alpha": preset.lora.alpha} if preset.lora.enabled else None,
                "micro_batch_size": t.micro_batch_size, "gradient_accumulation_steps": t.gradient_accumulation_steps,
                "effective_batch": t.micro_batch_size * t.gradient_accumulation_steps * self.world_size,
                "world_size": self.world_size, "train_rows": len(trainer.train_dataset),
                "memory_estimate": self.summary.get("memory_estimate"),
                "eval_rows": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
            },
        )

    def train(self) -> None:
        if self.stop.requested:  # stopped while loading: nothing trained, nothing to save
            self.ctx.stopped = True
            return
        self.trainer = _train_backing_off(self.trainer, self.make, self.preset, self.resume_ckpt, self.paths,
                                          self.events, self.summary, self.recorder, fit_check=self.checking)

    def finish(self) -> RunResult:
        """Save the adapter (or model), the final samples and the summary; announce the end."""
        self._check_record()  # the run was stopped because its record could not be written
        state = self.trainer.state
        steps = max(state.global_step, self.resumed_step)
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        final_loss = float(losses[-1]) if losses else self.summary.get("final_loss")
        status = "stopped" if self.ctx.stopped else "completed"
        adapter = None
        if self.main and steps > 0:
            target = self.paths.adapter if self.preset.lora.enabled else self.root / "model"
            adapter = _save_adapter(self.trainer, self.loaded.processing_class, target)
            if status == "completed" and self.preset.samples.prompts and not self.preset.samples.every_steps:
                self.ctx.emit_samples(self.trainer.model, steps)
        self._check_record()
        self.summary.update(status=status, steps=steps, final_loss=final_loss,
                            adapter=str(adapter) if adapter else None, finished=time.time())
        self._write_summary()
        self.events.emit(RunFinished(status=status, run_dir=str(self.root), steps=steps, final_loss=final_loss,
                                     adapter=str(adapter) if adapter else None))
        return RunResult(status, self.root, steps, final_loss, adapter)

    def fail(self, exc: BaseException) -> RunResult:
        exc = self._cause(exc)
        message = explain_error(exc)
        steps = self.trainer.state.global_step if self.trainer is not None else self.summary.get("steps", 0)
        self.summary.update(status="failed", error=message, steps=steps, finished=time.time())
        # Errors the user can fix are explained in `message`; only surprises keep a traceback.
        tb = None if isinstance(exc, (VlmtuneError, FileNotFoundError)) else traceback.format_exc()
        try:
            self._write_summary()
            if self.main and tb:
                atomic_write_text(self.root / "error.txt", tb)
        except OSError:  # the folder cannot be written (the failure itself, perhaps): the caller still gets why
            pass
        self.events.emit(RunFinished(status="failed", run_dir=str(self.root), steps=steps,
                                     final_loss=self.summary.get("final_loss"), adapter=None, error=message))
        return RunResult("failed", self.root, steps, self.summary.get("final_loss"), None, message, exc, tb)

    def close(self) -> None:
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        logging.captureWarnings(False)
        self._unsubscribe()
        if self.recorder:
            self.recorder.close()
        if self.lock is not None:
            self.lock.release()


def _load_inputs(preset: Preset, events: EventStream, ctx: _RunContext) -> tuple[Any, bool, Any, Any, Any]:
    """Config, processor and data: the cheap checks, so bad input fails before any weights load."""
    from trainer_core.config.library_args import check_for_model
    from trainer_core.data.prepare import prepare_dataset
    from trainer_core.data.to_trl import template_supports_tools
    from trainer_core.model.loading import (
        apply_image_max_pixels,
        is_vision_config,
        load_config,
        load_processing_class,
    )

    m = preset.model
    config = load_config(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision)
    is_vlm = is_vision_config(config)
    processing_class, tokenizer = load_processing_class(
        m.name_or_path, is_vlm, trust_remote_code=m.trust_remote_code, revision=m.revision)
    check_chat_template(processing_class if is_vlm else tokenizer, is_vlm)  # a runaway template fails here, fast
    check_for_model(preset, is_vlm=is_vlm)  # adapters and packing a VLM cannot take: refused before any weights
    note = apply_image_max_pixels(processing_class, config, preset.data.image_max_pixels) if is_vlm else None
    if note:  # a fixed-resolution model: the option does nothing, and the user should know
        events.emit(LogMessage(level="warning", message=note))
    templated = bool(getattr(tokenizer, "chat_template", None))
    data = prepare_dataset(preset.data, preset.task, conversational=templated, is_vlm=is_vlm,
                           seed=preset.training.seed,
                           # rows with tool calls train only where the template renders them (never dropped)
                           tools_supported=template_supports_tools(tokenizer) if templated else False)
    ctx.inputs = RunInputs(config, processing_class, tokenizer, data)
    if data.skipped:
        events.emit(LogMessage(level="warning", message=f"skipped {len(data.skipped)} invalid rows "
                                                         f"(data.skip_invalid): first: {data.skipped[0]}"))
    return config, is_vlm, processing_class, tokenizer, data


def _adapter_for(preset: Preset, model: Any) -> Any:
    """The PEFT config to wrap `model` with, or None for full fine-tuning (then only the unfrozen parts train)."""
    from trainer_core.config.library_args import lora_config
    from trainer_core.model.freeze import freeze_parts
    from trainer_core.model.lora_targets import auto_target_modules, parts_of

    parts = parts_of(preset)  # freeze_*: LoRA's auto targets, or what full fine-tuning trains
    if not preset.lora.enabled:
        freeze_parts(model, parts)
        return None
    targets = preset.lora.target_modules
    if targets == "auto":
        targets = auto_target_modules(model, parts=parts)
    return lora_config(preset, targets)


def _build_trainer(preset: Preset, paths: RunPaths, events: EventStream, stop: StopSignal, ctx: _RunContext,
                   resume_ckpt: Path | None, callbacks: list[Any]):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from trainer_core.config.library_args import trainer_args
    from trainer_core.model.loading import load_model, resolve_precision

    m = preset.model
    precision = resolve_precision(preset.precision, preset.quantization)
    config, is_vlm, processing_class, tokenizer, data = _load_inputs(preset, events, ctx)
    from trainer_core.model.loading import cuda_available

    ctx.processing_class, ctx.is_vlm = processing_class, is_vlm
    _, world_size = world_info()
    ctx.samples_per_step = preset.training.micro_batch_size * preset.training.gradient_accumulation_steps * world_size
    ctx.world_size = world_size
    if preset.task == "sft":
        from trl import SFTTrainer as Trainer
    else:
        from trl import DPOTrainer as Trainer
    Trainer = with_atomic_checkpoints(Trainer)  # noqa: N806
    if world_info()[0] == 0:
        clear_staging(paths.checkpoints)  # a save cut short by a crash

    def make(p: Preset, model: Any, peft: Any) -> Any:
        """A Trainer for `p`'s batch shape around `model` (a new one after an OOM back-off, same weights)."""
        args = trainer_args(p, checkpoints_dir=paths.checkpoints, precision=precision,
                            has_eval=data.eval is not None, use_cpu=not cuda_available())
        trainer = Trainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                          processing_class=processing_class, peft_config=peft)
        # Our progress display and event stream replace the Trainer's printing (it would write behind a TUI).
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_make_callback(events, stop, ctx))
        for cb in callbacks:
            trainer.add_callback(cb)
        return trainer

    # The arguments are checked before the weights load: a bad training.extra fails in a second.
    trainer_args(preset, checkpoints_dir=paths.checkpoints, precision=precision, has_eval=data.eval is not None,
                 use_cpu=not cuda_available())
    # The config and processor loaded above, not read again (one object carries them through the run).
    loaded = load_model(m.name_or_path, precision=precision, quantization=preset.quantization,
                        trust_remote_code=m.trust_remote_code, revision=m.revision,
                        attn_implementation=m.attn_implementation, config=config,
                        processing=(processing_class, tokenizer))
    return make(preset, loaded.model, _adapter_for(preset, loaded.model)), resume_ckpt, loaded, make
