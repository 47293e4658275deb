"""The live monitor's cost: the same tiny run headless and under the monitor (a headless Textual app in the
same process), alternating, in one run; prints the steps/s ratio. Target: monitor >= 0.97x headless.

    python bench/ui_overhead.py [--steps 150] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import make_clock  # noqa: E402  (the same stopwatch as bench/overhead.py)

# The monitor's first frames (mount, stylesheet, first chart) overlap the first steps; the ratio is about
# the steady state, so both sides start their stopwatch at the end of this step.
WARMUP = 10


def headless(preset) -> float:
    from trainer_core.console import ConsoleProgress
    from trainer_core.events import EventStream
    from trainer_core.train import run_training

    events = EventStream()
    events.subscribe(ConsoleProgress())  # what `vlmtune train --headless` draws
    clock = make_clock(WARMUP)
    assert run_training(preset, events=events, callbacks=[clock]).status == "completed"
    return clock.steps_per_second()


def under_monitor(preset) -> float:
    """The monitor app, headless (Textual's test driver), training in its worker and redrawing as it goes."""
    from tui.monitor_app import MonitorApp

    clock = make_clock(WARMUP)
    app = MonitorApp(preset=preset, callbacks=[clock])

    async def drive() -> None:
        # Plain sleeps, not pilot.pause(): a pause waits for every widget's queue and forces a full screen
        # update, which would be the bench's own cost, 20 times a second.
        async with app.run_test(size=(100, 30)):
            while app.result is None:
                await asyncio.sleep(0.1)

    asyncio.run(drive())
    assert app.result.status == "completed", app.result.error
    return clock.steps_per_second()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from trainer_core.demo import build_demo
    from trainer_core.presets import load_preset

    tmp = Path(tempfile.mkdtemp(prefix="vlmtune-ui-bench-"))
    demo = build_demo(tmp / "demo")
    preset = load_preset(demo.presets / "demo-sft.yaml", [
        f"output_dir={tmp / 'runs'}", f"training.max_steps={a.steps}", "samples.every_steps=0",
        "samples.prompts=[]", "data.eval_fraction=0", f"training.save_steps={a.steps * 10}"])
    plain, ui = [], []
    for i in range(a.repeats):
        first, second = (headless, under_monitor) if i % 2 == 0 else (under_monitor, headless)
        x, y = first(preset), second(preset)
        h, m = (x, y) if first is headless else (y, x)
        plain.append(h)
        ui.append(m)
        print(f"round {i + 1}: headless {h:.1f} steps/s, monitor {m:.1f} steps/s, ratio {m / h:.3f}", flush=True)
    paired = statistics.median(m / h for m, h in zip(ui, plain, strict=True))
    print(f"\nheadless   {statistics.median(plain):8.2f} steps/s (median)")
    print(f"monitor    {statistics.median(ui):8.2f} steps/s (median)")
    print(f"ratio      {paired:8.3f}x  median of paired rounds (target >= 0.97x)")


if __name__ == "__main__":
    main()
