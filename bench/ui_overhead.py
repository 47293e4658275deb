"""The live monitor's cost: the same tiny run headless and under the monitor (a headless Textual app training in
its thread worker), alternating in one process; prints the steps/s ratio. Target: monitor >= 0.97x headless.

    python bench/ui_overhead.py [--steps 200] [--repeats 10]

The main thread never runs torch here: libgomp keeps an OpenMP pool per thread that ran a parallel op, for that
thread's life, and with two pools alive its workers sleep between ops (trainer_core/threads.py). A headless run
in the main thread would leave a pool that slowed every later monitor run by ~15% on two cores: a cost of the
bench, not of the monitor. So the headless side runs in a passing thread, as fast as `vlmtune train
--headless` in its main thread (one pool either way). Both sides start their stopwatch after step WARMUP (the
monitor's mount overlaps the first steps); the monitor side also reports its UI thread's CPU share over the
same window. Rounds are short and alternate, and the ratio is the median of paired rounds: this machine's
speed drifts by +-20% over minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import make_clock  # noqa: E402  (the same stopwatch as bench/overhead.py)

WARMUP = 10


def ui_cpu_meter(warmup_steps: int):
    """A TrainerCallback reading the main (UI) thread's CPU clock from the training thread, over the same
    window as the stopwatch."""
    from transformers import TrainerCallback

    clock_id = time.pthread_getcpuclockid(threading.main_thread().ident)

    class UiCpu(TrainerCallback):
        cpu = wall = 0.0

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            now = (time.clock_gettime(clock_id), time.perf_counter())
            if state.global_step == warmup_steps:
                self._start = now
            elif state.global_step > warmup_steps:
                self.cpu, self.wall = now[0] - self._start[0], now[1] - self._start[1]

    return UiCpu()


def headless(preset) -> tuple[float, None]:
    from trainer_core.events import EventStream
    from trainer_core.events.console import ConsoleProgress
    from trainer_core.run.engine import run_training

    events = EventStream()
    events.subscribe(ConsoleProgress())  # what `vlmtune train --headless` draws
    clock = make_clock(WARMUP)
    assert run_training(preset, events=events, callbacks=[clock]).status == "completed"
    return clock.steps_per_second(), None


def under_monitor(preset) -> tuple[float, float]:
    """The monitor app, headless (Textual's test driver), training in its worker and redrawing as it goes."""
    from tui.monitor.app import MonitorApp

    clock, meter = make_clock(WARMUP), ui_cpu_meter(WARMUP)
    app = MonitorApp(preset=preset, callbacks=[clock, meter])

    async def drive() -> None:
        # Plain sleeps, not pilot.pause(): a pause waits for every widget's queue and forces a full screen
        # update, which would be the bench's own cost.
        async with app.run_test(size=(100, 30)):
            while app.result is None:
                await asyncio.sleep(0.1)

    asyncio.run(drive())
    assert app.result.status == "completed", app.result.error
    return clock.steps_per_second(), meter.cpu / meter.wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from trainer_core.base.threads import in_passing_thread
    from trainer_core.config.presets import load_preset
    from trainer_core.demo import build_demo

    tmp = Path(tempfile.mkdtemp(prefix="vlmtune-ui-bench-"))
    demo = in_passing_thread(build_demo, tmp / "demo")
    preset = load_preset(demo.presets / "demo-sft.yaml", [
        f"output_dir={tmp / 'runs'}", f"training.max_steps={a.steps}", "samples.every_steps=0",
        "samples.prompts=[]", "data.eval_fraction=0", f"training.save_steps={a.steps * 10}"])
    sides = {"headless": lambda: in_passing_thread(headless, preset), "monitor": lambda: under_monitor(preset)}
    plain, ui, shares = [], [], []
    for i in range(a.repeats):
        order = ("headless", "monitor") if i % 2 == 0 else ("monitor", "headless")
        got = {side: sides[side]() for side in order}
        plain.append(got["headless"][0])
        ui.append(got["monitor"][0])
        shares.append(got["monitor"][1])
        print(f"round {i + 1}: headless {plain[-1]:.1f} steps/s, monitor {ui[-1]:.1f} steps/s, "
              f"ratio {ui[-1] / plain[-1]:.3f}, UI thread {shares[-1]:.1%} of a core", flush=True)
    paired = [m / h for m, h in zip(ui, plain, strict=True)]
    print(f"\nheadless   {statistics.median(plain):8.2f} steps/s (median)")
    print(f"monitor    {statistics.median(ui):8.2f} steps/s (median), UI thread {statistics.median(shares):.1%} of a core")
    print(f"ratio      {statistics.median(paired):8.3f}x  median of paired rounds, range "
          f"{min(paired):.3f}-{max(paired):.3f} (target >= 0.97x)")


if __name__ == "__main__":
    main()
