"""Shared fixtures: the tiny demo (built once per session) and presets pointed at a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    from trainer_core.base.threads import in_passing_thread
    from trainer_core.demo import build_demo

    # Off the main thread, like `vlmtune demo`: the chat and monitor tests run torch in Textual thread workers.
    return in_passing_thread(build_demo, tmp_path_factory.mktemp("demo"))


@pytest.fixture
def demo_preset(demo, tmp_path):
    """Load a demo preset by name with --set style overrides; runs go under tmp_path."""
    from trainer_core.config.presets import load_preset

    def load(name: str, *overrides: str):
        return load_preset(demo.presets / f"{name}.yaml", [f"output_dir={tmp_path / 'runs'}", *overrides])

    return load


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
