"""Journeys in a real pseudo-terminal at 80x24 (tests/terminal.py), keyboard only, as a user over SSH."""

from __future__ import annotations

import re

import pytest
import yaml
from terminal import Terminal

STEP = re.compile(r"step (\d+)/(\d+)")


@pytest.fixture
def project(demo, tmp_path):
    """A project folder with one preset (the demo SFT, long enough to watch) and an empty user config."""
    from trainer_core.config.presets import load_preset

    preset = load_preset(demo.presets / "demo-sft.yaml", ["training.max_steps=120", "samples.every_steps=0",
                                                         f"output_dir={tmp_path / 'runs'}"])
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "watch-me.yaml").write_text(yaml.safe_dump({**preset.to_dict(), "name": "watch-me"}),
                                                        encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_the_monitor_started_from_the_wizard_moves(project):
    term = Terminal([], project, env={"XDG_CONFIG_HOME": str(project / "config")})
    try:
        term.wait_for(lambda s: "watch-me" in s)
        term.press("enter")  # the first preset (highlighted from the start), opened: every step filled from it
        term.wait_for(lambda s: "Step 3 of 6" in s or "Step 2 of 6" in s)
        term.press("ctrl+t")  # walks every step and trains: the monitor opens
        seen: list[int] = []

        def moved(screen: str) -> bool:
            m = STEP.search(screen)
            if m and int(m.group(1)) > 0 and (not seen or int(m.group(1)) != seen[-1]):
                seen.append(int(m.group(1)))
            return len(seen) >= 3 or "completed" in screen

        term.wait_for(moved, timeout=300)
        # The step shown rose during the run, in more than one redraw, before the run ended.
        assert len(seen) >= 3 and seen == sorted(seen) and seen[0] < 120, seen
    finally:
        term.close()
