"""The live monitor: loss (smoothed) and learning rate, progress with ETA, throughput, memory, sample outputs
and the run's log, redrawn at most 10 times a second from a RunHistory that the engine (or a follower of
another process's run directory) fills. Stop and checkpoint-now go to the engine through its StopSignal."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, RichLog, Static
from textual_plotext import PlotextPlot

from trainer_core.run_history import HistoryView, RunFollower, RunHistory, smooth
from tui.widgets import ConfirmStop

# Every redraw takes the GIL from the training thread (bench/ui_overhead.py: 10 redraws/s cost 40% of a
# tiny CPU run's speed, 4/s about 25%), so panels redraw 4 times a second and the chart once a second,
# from at most one point per column.
REDRAW_SECONDS = 0.25
PLOT_SECONDS = 1.0


def _gib(n: Any) -> str:
    return f"{n / 2**30:.2f} GiB" if isinstance(n, (int, float)) else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("c", "checkpoint", "Checkpoint now"),
        Binding("t", "chat", "Chat with the result"),
        Binding("escape", "leave", "Back"),
    ]

    def __init__(self, history: RunHistory, *, stop: Any = None, follow: str | None = None,
                 estimate_bytes: int | None = None) -> None:
        super().__init__()
        self.history = history
        self.stop_signal = stop  # None when attached read-only to another process's run
        self.follower = RunFollower(follow, history) if follow else None
        self.estimate_bytes = estimate_bytes
        self._drawn_version = -1

    def compose(self) -> ComposeResult:
        yield Static("", id="run-title")
        yield ProgressBar(id="run-progress", show_eta=False)
        with Horizontal(id="charts"):
            yield PlotextPlot(id="loss-plot")
            yield Static("", id="stats")
        with Horizontal(id="bottom"):
            yield Static("", id="samples")
            yield RichLog(id="log", wrap=True, markup=False)
        yield Footer()

    def _set(self, widget_id: str, text: str) -> None:
        """Update a panel only when its text changed: every update repaints, and repaints take the GIL."""
        if self._texts.get(widget_id) != text:
            self._texts[widget_id] = text
            self.query_one(f"#{widget_id}", Static).update(text)

    def on_mount(self) -> None:
        self._texts: dict[str, str] = {}
        self._progress_drawn: tuple[int, int] | None = None
        self._logged = 0
        self._plotted_at = 0.0
        # An animated progress bar repaints ~60 times a second; the figures beside it say enough.
        self.app.animation_level = "none"
        self.set_interval(REDRAW_SECONDS, self.redraw)
        self.redraw()

    def redraw(self) -> None:
        if self.follower is not None and (self.history.snapshot().status in ("starting", "running")
                                          or self._drawn_version < 0):
            self.follower.poll()
        if self.history.version == self._drawn_version:
            return
        self._drawn_version = self.history.version
        v = self.history.snapshot()
        self._draw_title(v)
        now = time.monotonic()
        if now - self._plotted_at >= PLOT_SECONDS or v.status not in ("starting", "running"):
            self._plotted_at = now
            self._draw_plot(v)
        self._draw_stats(v)
        self._draw_samples(v)
        log = self.query_one("#log", RichLog)
        for line in v.logs[self._logged:] if len(v.logs) >= self._logged else v.logs:
            log.write(line)
        self._logged = len(v.logs)

    def _draw_title(self, v: HistoryView) -> None:
        state = {"running": "training", "starting": "loading"}.get(v.status, v.status)
        left = _duration(v.eta_seconds)
        title = (f"{v.name or 'run'} [{state}]  step {v.step}/{v.total_steps or '?'}  epoch {v.epoch:.2f}  "
                 f"elapsed {_duration(v.elapsed)}  ETA {left}")
        if v.status == "failed" and v.error:
            title += f"\nfailed: {v.error}"
        elif v.status in ("completed", "stopped"):
            title += f"\n{v.status}: final loss {v.final_loss:.4f}" if v.final_loss is not None else f"\n{v.status}"
            if v.adapter:
                title += f" — adapter {v.adapter}"
        self._set("run-title", title)
        progress = (max(1, v.total_steps), v.step)
        if progress != self._progress_drawn:
            self._progress_drawn = progress
            self.query_one("#run-progress", ProgressBar).update(total=progress[0], progress=progress[1])

    def _draw_plot(self, v: HistoryView) -> None:
        plot = self.query_one("#loss-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.title("loss")
        width = max(10, plot.size.width - 8)
        if v.loss:
            steps, losses = zip(*_thin(v.loss, width), strict=True)
            plt.plot(list(steps), list(losses), label="train", color="gray")
            if len(losses) > 3:
                plt.plot(list(steps), smooth(list(losses)), label="smoothed", color="cyan")
        if v.eval_loss:
            steps, losses = zip(*v.eval_loss, strict=True)
            plt.scatter(list(steps), list(losses), label="eval", color="orange")
        plot.refresh()

    def _draw_stats(self, v: HistoryView) -> None:
        lr = v.learning_rate[-1][1] if v.learning_rate else None
        lines = [f"learning rate {lr:.2e}" if lr is not None else "learning rate -",
                 f"samples/s {v.samples_per_second:.1f}" if v.samples_per_second else "samples/s -",
                 f"tokens/s {v.tokens_per_second:,.0f}" if v.tokens_per_second else "tokens/s -", ""]
        m = v.memory
        if m.get("device") == "cuda":
            lines += [f"GPU allocated {_gib(m.get('allocated'))}", f"GPU peak {_gib(m.get('peak_allocated'))}",
                      f"GPU reserved {_gib(m.get('reserved'))}"]
            nvml = _nvml_used()
            if nvml:
                lines.append(f"GPU used {_gib(nvml[0])} of {_gib(nvml[1])} (NVML)")
        elif m:
            lines.append(f"process RSS {_gib(m.get('rss'))}")
        if self.estimate_bytes:
            lines.append(f"plan estimate {_gib(self.estimate_bytes)}")
        s = v.summary
        if s:
            lines += ["", f"{s.get('precision', '')} {s.get('quantization', '')}",
                      f"batch {s.get('micro_batch_size')} x {s.get('gradient_accumulation_steps')} = "
                      f"{s.get('effective_batch')}"]
        self._set("stats", "\n".join(lines))

    def _draw_samples(self, v: HistoryView) -> None:
        if not v.samples:
            self._set("samples", "sample outputs appear here every samples.every_steps")
            return
        lines = []
        for s in v.samples[:6]:
            image = f"[{str(s['image']).rsplit('/', 1)[-1]}] " if s.get("image") else ""
            lines.append(f"@{s['step']} {image}{s['prompt']}\n   -> {s['output']!r}")
        self._set("samples", "\n".join(lines))

    # -- controls
    def action_stop(self) -> None:
        if self.stop_signal is None:
            self.notify("attached read-only: stop the run where it was started (Ctrl-C / SIGTERM)", severity="warning")
            return
        if self.history.snapshot().status not in ("starting", "running"):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.stop_signal.request("stop from the monitor")
                self.notify("stopping at the end of this step …")

        self.app.push_screen(ConfirmStop(), answer)

    def action_checkpoint(self) -> None:
        if self.stop_signal is None or self.history.snapshot().status != "running":
            return
        self.stop_signal.request_checkpoint()
        self.notify("a checkpoint will be saved at the end of this step")

    def action_chat(self) -> None:
        v = self.history.snapshot()
        if v.status not in ("completed", "stopped") or not v.adapter:
            self.notify("the chat opens on the adapter once the run has finished", severity="warning")
            return
        from tui.chat_screen import ChatScreen

        self.app.push_screen(ChatScreen(None, v.adapter))

    def action_leave(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()


def _thin(points: list[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    """At most n points, evenly spaced, always keeping the last: a chart has no more columns than that."""
    if len(points) <= n:
        return points
    stride = len(points) / n
    out = [points[int(i * stride)] for i in range(n)]
    return out[:-1] + [points[-1]]


def _nvml_used() -> tuple[int, int] | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
            return int(info.used), int(info.total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML here: the torch figures above stand alone
        return None
