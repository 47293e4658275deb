"""How often a user sees the live monitor move: the demo SFT run watched in a real pseudo-terminal at 80x24
(tests/terminal.py: Textual's real driver, read back through pyte), started two ways, as a user starts it:
from the wizard (open the preset, ctrl+t) and with `vlmtune train PRESET` (the monitor app).

The screen is read every 50 ms; each time the step number shown changes counts as a visible update. Prints
updates per second, the longest wait between two updates, and the steps the run made per second, for each.

    python bench/monitor_redraws.py [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from terminal import Terminal  # noqa: E402

STEP = re.compile(r"step (\d+)/(\d+)")


def watch(term: Terminal, steps: int, timeout: float = 600) -> dict:
    changes: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = term.text()
        m = STEP.search(screen)
        if m and int(m.group(1)) > 0 and (not changes or int(m.group(1)) != changes[-1][1]):
            changes.append((time.monotonic(), int(m.group(1))))
        if "completed" in screen or (changes and changes[-1][1] >= steps):
            break
        if term.proc.poll() is not None:
            break
        time.sleep(0.05)
    if len(changes) < 2:
        return {"updates": len(changes)}
    span = changes[-1][0] - changes[0][0]
    gaps = [b[0] - a[0] for a, b in zip(changes, changes[1:], strict=False)]
    return {"updates": len(changes), "seconds": round(span, 1),
            "updates_per_s": round((len(changes) - 1) / span, 2),
            "longest_gap_s": round(max(gaps), 2), "median_gap_s": round(statistics.median(gaps), 2),
            "steps_per_s": round((changes[-1][1] - changes[0][1]) / span, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    import yaml

    from trainer_core.config.presets import load_preset
    from trainer_core.demo import build_demo

    root = Path(tempfile.mkdtemp(prefix="vlmtune-redraws-"))
    demo = build_demo(root / "demo")
    preset = load_preset(demo.presets / "demo-sft.yaml", [f"training.max_steps={args.steps}",
                                                         "samples.every_steps=0", f"output_dir={root / 'runs'}"])
    (root / "presets").mkdir()
    path = root / "presets" / "watch-me.yaml"
    path.write_text(yaml.safe_dump({**preset.to_dict(), "name": "watch-me"}), encoding="utf-8")
    env = {"XDG_CONFIG_HOME": str(root / "config")}
    results = {}

    term = Terminal([], root, env=env)
    try:
        term.wait_for(lambda s: "watch-me" in s)
        term.press("down", "enter")
        term.wait_for(lambda s: "Step 3 of 6" in s or "Step 2 of 6" in s)
        term.press("ctrl+t")
        results["wizard"] = watch(term, args.steps)
    finally:
        term.close()

    term = Terminal(["train", str(path)], root, env=env)
    try:
        results["vlmtune train"] = watch(term, args.steps)
    finally:
        term.close()

    for how, r in results.items():
        print(f"{how:14s} {json.dumps(r)}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
