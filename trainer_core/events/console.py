"""Headless progress: a rich progress bar (loss, lr, ETA) fed by the engine's event stream."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from trainer_core.events import (
    CheckpointSaved,
    EvalLogged,
    Event,
    LogMessage,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
)


def human_count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class ConsoleProgress:
    """Event subscriber that draws progress on stderr; rich refreshes from its own thread."""

    def __init__(self, console: Console | None = None, show_warnings: bool = True):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss [cyan]{task.fields[loss]}[/] lr {task.fields[lr]} {task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.show_warnings = show_warnings
        self._seen_warnings: set[str] = set()

    def __call__(self, event: Event) -> None:
        p = self.progress
        if isinstance(event, RunStarted):
            s = event.summary
            self.console.print(
                f"[bold]{event.name}[/]: {event.task.upper()} of {event.model} "
                f"({'vision-language' if event.is_vlm else 'text'}), {s.get('precision')}, "
                f"quantization {s.get('quantization')}, trainable {human_count(event.trainable_params)} / "
                f"{human_count(event.total_params)} params, batch {s.get('micro_batch_size')} x "
                f"{s.get('gradient_accumulation_steps')} x {event.world_size} = {s.get('effective_batch')}, "
                f"{s.get('train_rows')} train / {s.get('eval_rows')} eval rows"
            )
            self.console.print(f"run directory: {event.run_dir}")
            p.start()
            self.task = p.add_task(event.task, total=event.max_steps, completed=event.resumed_from_step,
                                   loss="-", lr="-", speed="")
        elif isinstance(event, StepLogged) and self.task is not None:
            speed = f"{event.samples_per_second:.1f} samples/s" if event.samples_per_second else ""
            p.update(self.task, total=event.max_steps, completed=event.step, loss=f"{event.loss:.4f}" if event.loss is not None else "-",
                     lr=f"{event.learning_rate:.2e}" if event.learning_rate is not None else "-", speed=speed)
        elif isinstance(event, EvalLogged):
            shown = ", ".join(f"{k}={v:.4f}" for k, v in event.metrics.items() if k in ("eval_loss",) or
                              k.startswith("eval_rewards/accuracies"))
            p.console.print(f"step {event.step}: {shown}")
        elif isinstance(event, SampleGenerated):
            image = f" [{event.image.rsplit('/', 1)[-1]}]" if event.image else ""
            p.console.print(f"[dim]sample @{event.step}{image}[/] {event.prompt} [green]-> {event.output!r}[/]")
        elif isinstance(event, CheckpointSaved):
            p.console.print(f"[dim]checkpoint saved: {event.path}[/]")
        elif isinstance(event, LogMessage) and self.show_warnings and event.level != "debug":
            first = event.message.strip().splitlines()[0] if event.message.strip() else ""
            if first and first not in self._seen_warnings:
                self._seen_warnings.add(first)
                p.console.print(f"[yellow dim]{event.level}: {first}[/]")
        elif isinstance(event, RunFinished):
            p.stop()
            colour = {"completed": "green", "stopped": "yellow", "failed": "red"}.get(event.status, "white")
            loss = f", final loss {event.final_loss:.4f}" if event.final_loss is not None else ""
            self.console.print(f"[{colour}]{event.status}[/] after {event.steps} steps{loss}")
            if event.adapter:
                self.console.print(f"adapter: {event.adapter}")
