"""The live monitor: loss (smoothed) and learning rate, progress with ETA, throughput, memory, sample outputs
and the run's log, redrawn at most 10 times a second from a RunHistory that the engine (or a follower of
another process's run directory) fills. Stop and checkpoint-now go to the engine through its StopSignal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static
from textual_plotext import PlotextPlot

from trainer_core.events.history import HistoryView, RunFollower, RunHistory, smooth
from tui.monitor.redraw_budget import RedrawBudget
from tui.widgets import ConfirmStop

# Every redraw takes CPU and the GIL from the training thread (bench/ui_overhead.py: 10 redraws/s cost 40% of a
# tiny CPU run's speed), so panels redraw at most 4 times a second, and less often when that would take more
# than RedrawBudget's share of a core; the chart, the costliest panel, at most once a second, from at most one
# point per column.
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
    HELP = """
    **Monitor.** Loss (raw, smoothed, eval points), learning rate, throughput, memory against the plan's estimate,
    sample outputs and the run's log. `s` stops at the end of the step (checkpoint + adapter), `c` saves a
    checkpoint now; once the run has ended `t` opens the chat and `e` evaluates the tuned model against its
    base on the held-out rows.
    """
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("c", "checkpoint", "Checkpoint now"),
        Binding("t", "chat", "Chat with the result"),
        Binding("e", "evaluate", "Evaluate"),
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
        self._budget = RedrawBudget()

    def compose(self) -> ComposeResult:
        # markup=False: run names, "[training]" and image names are text, and parsing them as markup costs
        # a style lookup with spelling suggestions on every redraw.
        yield Static("", id="run-title", markup=False)
        # A text bar, not Textual's ProgressBar: that is three widgets to render on every step.
        yield Static("", id="run-progress", markup=False)
        with Horizontal(id="charts"):
            yield PlotextPlot(id="loss-plot")
            yield Static("", id="stats", markup=False)
        with Horizontal(id="bottom"):
            yield Static("", id="samples", markup=False)
            # min_width: RichLog renders at least 78 columns by default, which cut lines in a half-width panel
            yield RichLog(id="log", wrap=True, markup=False, min_width=20)
        yield Footer()

    def _set(self, widget_id: str, text: str, *, fixed_size: bool = True) -> None:
        """Update a panel only when its text changed: every update repaints, and repaints take the GIL. Panels
        sized by the stylesheet skip the layout pass; the title (height auto) needs one only when its line
        count may change."""
        old = self._texts.get(widget_id)
        if old == text:
            return
        self._texts[widget_id] = text
        widget = self.query_one(f"#{widget_id}", Static)
        layout = not fixed_size and (old is None or _rows(old, widget.size.width) != _rows(text, widget.size.width))
        widget.update(text, layout=layout)

    def on_mount(self) -> None:
        self._texts: dict[str, str] = {}
        self._logged = 0
        self._plotted_at = 0.0
        # An animated progress bar repaints ~60 times a second; the figures beside it say enough.
        self.app.animation_level = "none"
        self.set_interval(REDRAW_SECONDS, self.redraw)
        self.call_after_refresh(self.redraw)  # once every panel is mounted (nested ones mount after this)

    def on_resize(self) -> None:
        # Gauges and the chart are as wide as their panels: draw everything again at the new size.
        self._drawn_version = -1
        self._texts.clear()
        self._plotted_at = 0.0
        self._budget.reset()

    def redraw(self) -> None:
        if self.follower is not None and (self.history.status in ("starting", "running")
                                          or self._drawn_version < 0):
            self.follower.poll()
        if self.history.version == self._drawn_version:
            return
        status = self.history.status
        if status != getattr(self, "_keys_for", None):  # the footer shows the keys that apply now
            self._keys_for = status
            self.refresh_bindings()
        live = status in ("starting", "running")
        mode = self._budget.due(time.monotonic(), time.thread_time()) if live else "full"
        if mode is None:
            return
        version, v = self.history.version, self.history.snapshot()  # a snapshot only for a redraw
        self._draw_title(v)
        self._draw_stats(v)
        if mode == "light":  # the figures a user watches; the costly panels wait for a full redraw
            return
        self._drawn_version = version
        now = time.monotonic()
        if now - self._plotted_at >= PLOT_SECONDS or v.status not in ("starting", "running"):
            self._plotted_at = now
            self._draw_plot(v)
        self._draw_samples(v)
        log = self.query_one("#log", RichLog)
        for line in v.logs[self._logged:] if len(v.logs) >= self._logged else v.logs:
            log.write(line)
        self._logged = len(v.logs)

    def _draw_title(self, v: HistoryView) -> None:
        state = {"running": "training", "starting": "loading"}.get(v.status, v.status)
        left = _duration(v.eta_seconds) if v.status in ("starting", "running") else "-"  # a stopped run has none
        title = (f"{v.name or 'run'} [{state}]  step {v.step}/{v.total_steps or '?'}  epoch {v.epoch:.2f}  "
                 f"elapsed {_duration(v.elapsed)}  ETA {left}")
        if v.status == "failed" and v.error:
            title += f"\nfailed: {v.error}"
        elif v.status in ("completed", "stopped"):
            title += f"\n{v.status}: final loss {v.final_loss:.4f}" if v.final_loss is not None else f"\n{v.status}"
            if v.adapter:
                title += f" — adapter {v.adapter}"
        self._set("run-title", title, fixed_size=False)
        self._draw_progress(v.step, v.total_steps)

    def _draw_progress(self, step: int, total: int | None) -> None:
        width = self.query_one("#run-progress", Static).size.width - 5  # size is inside the padding; " 100%"
        if width < 4:
            return
        fraction = min(1.0, step / total) if total else 0.0
        done = round(fraction * width)
        key = f"{done}/{width} {fraction:.0%}"
        if self._texts.get("run-progress") == key:
            return
        self._texts["run-progress"] = key
        bar = Text("━" * done, style="green")
        bar.append("━" * (width - done), style="grey30")
        bar.append(f" {fraction:4.0%}")
        self.query_one("#run-progress", Static).update(bar, layout=False)

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
        if v.task_scores:  # eval.every_steps: the task metric on held-out rows, and its best step so far
            step, score = v.task_scores[-1]
            lines += [f"{v.task_metric} {score:.2f} @{step}"]
            if v.task_best is not None:
                lines += [f"  best {v.task_best[1]:.2f} @{v.task_best[0]}"]
            lines += [""]
        lines += self._memory_lines(v.memory, v.summary)
        s = v.summary
        if s:
            world = int(s.get("world_size") or 1)
            lines += ["", f"{s.get('precision', '')} {s.get('quantization', '')}",
                      f"batch {s.get('micro_batch_size')} x {s.get('gradient_accumulation_steps')}"
                      + (f" x {world} procs" if world > 1 else "") + f" = {s.get('effective_batch')}"]
            for b in s.get("oom_backoffs") or []:
                lines.append(f"OOM @{b.get('step')}: batch {b.get('from')} -> {b.get('to')}")
        self._set("stats", "\n".join(lines))

    def _memory_lines(self, m: dict[str, Any], summary: dict[str, Any]) -> list[str]:
        """Gauges on one scale (the device's memory, or RAM on CPU): the measured figure and the plan's estimate
        one above the other, so a run creeping past its estimate shows at a glance."""
        estimate = self.estimate_bytes or summary.get("memory_estimate")
        if not m and not estimate:
            return []
        cuda = m.get("device") == "cuda"
        nvml = _nvml_used() if cuda else None
        total = m.get("total") or (nvml[1] if nvml else None)
        rows = [("peak", m.get("peak_allocated")), ("plan", estimate)] if cuda else \
            [("RSS", m.get("rss")), ("plan", estimate)]
        if nvml:
            rows.append(("used", nvml[0]))
        cells = max(4, self.query_one("#stats", Static).size.width - 2 - 6 - 10)
        out = [f"memory ({'GPU' if cuda else 'RAM'} {_gib(total)})" if total else "memory"]
        for label, value in rows:
            if value is not None:
                out.append(f"{label:<5} {_gauge(value, total, cells)} {value / 2**30:6.2f} G")
        if cuda:
            out.append(f"alloc {_gib(m.get('allocated'))} reserved {_gib(m.get('reserved'))}")
        return out

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
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop and checkpoint-now only while this screen's own run trains; chat once it has ended."""
        status = self.history.status
        if action in ("stop", "checkpoint"):
            return self.stop_signal is not None and status in ("starting", "running")
        if action in ("chat", "evaluate"):  # hidden while training: the footer keeps to the keys that apply
            return status in ("completed", "stopped")
        return True

    def action_stop(self) -> None:
        if self.stop_signal is None:
            self.notify("attached read-only: stop the run where it was started (Ctrl-C / SIGTERM)", severity="warning")
            return
        if self.history.status not in ("starting", "running"):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.stop_signal.request("stop from the monitor")
                self.notify("stopping at the end of this step …")

        self.app.push_screen(ConfirmStop(), answer)

    def action_checkpoint(self) -> None:
        if self.stop_signal is None or self.history.status != "running":
            return
        try:
            self.stop_signal.request_checkpoint()
        except NotImplementedError:
            self.notify("checkpoint-now is for single-process runs; this one saves every training.save_steps",
                        severity="warning")
            return
        self.notify("a checkpoint will be saved at the end of this step")

    def action_chat(self) -> None:
        v = self.history.snapshot()
        if v.status not in ("completed", "stopped") or not v.adapter:
            self.notify("the chat opens on the adapter once the run has finished", severity="warning")
            return
        from tui.chat.screen import ChatScreen

        self.app.push_screen(ChatScreen(None, v.adapter))

    def action_evaluate(self) -> None:
        v = self.history.snapshot()
        if v.status not in ("completed", "stopped") or not v.adapter:
            self.notify("evaluation opens once the run has finished with an adapter", severity="warning")
            return
        from tui.evaluate.screen import EvalScreen

        self.app.push_screen(EvalScreen(v.run_dir or Path(v.adapter).parent))

    async def action_leave(self) -> None:
        stack = self.app.screen_stack
        behind = stack[-2] if len(stack) > 1 else None
        if behind is not None and behind.children:
            self.app.pop_screen()  # back to the wizard; ctrl+r comes back here while the run goes on
        else:
            # Nothing behind (`vlmtune train` / `vlmtune monitor`): leaving is quitting, asked first while training.
            await self.app.run_action("quit")


_EIGHTHS = " ▏▎▍▌▋▊▉"


def _gauge(value: float, total: float | None, cells: int) -> str:
    """A bar of `cells` characters filled to value/total in eighths of a cell; over-full shows as a full bar
    ending in '!'."""
    if not total:
        return "·" * cells
    eighths = round(min(1.0, value / total) * cells * 8)
    bar = "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")
    bar = bar.ljust(cells, "·")
    return bar[:-1] + "!" if value > total else bar


def _rows(text: str, width: int) -> int:
    width = max(1, width - 2)  # the title's padding
    return sum(1 + len(line) // width for line in text.split("\n"))


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
