"""The chat pane on the demo: streamed answers with an image, compare (base vs tuned side by side), and
the errors a user can make in it."""

from __future__ import annotations

import pytest
from pilot_helpers import wait_for

from tui.chat.app import ChatApp

pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, demo):
    from trainer_core.config.presets import load_preset
    from trainer_core.run.engine import run_training

    out = tmp_path_factory.mktemp("chat-runs")
    preset = load_preset(demo.presets / "demo-sft.yaml", [f"output_dir={out}", "samples.every_steps=0",
                                                          "training.max_steps=40"])
    result = run_training(preset)
    assert result.status == "completed"
    return result


async def ask(pilot, screen, text: str, image: str | None = None) -> None:
    if image is not None:
        screen.query_one("#image-path").value = image
    prompt = screen.query_one("#prompt")
    prompt.focus()
    prompt.value = text
    before = len(screen.history)
    await pilot.press("enter")
    # a tiny model answers faster than one poll: wait for the answer to land in the history
    await wait_for(pilot, lambda: len(screen.history) > before and not screen.generating)
    await pilot.pause(0.2)


def bubbles(screen, column: str) -> list[str]:
    return [str(b.content) for b in screen.query_one(f"#{column}-col").query(".bubble")]


async def test_streams_an_answer_with_an_image_then_compares(tuned_run, demo):
    app = ChatApp(None, str(tuned_run.run_dir))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded is not None)
        image = str(demo.data / "images" / "chart_000.png")
        await ask(pilot, screen, "What is the value of B?", image)
        tuned = bubbles(screen, "tuned")
        assert tuned[0].startswith("you: What is the value of B?") and "chart_000.png" in tuned[0]
        assert tuned[1].startswith("tuned: ") and len(tuned[1]) > len("tuned: ")
        assert screen.history[-1]["role"] == "assistant" and screen.history[-1]["content"]

        screen.query_one("#compare").value = True
        await pilot.pause(0.1)
        await ask(pilot, screen, "Which bar is the highest?", image)
        base = bubbles(screen, "base")
        assert not screen.query_one("#chat-error").display, screen.query_one("#chat-error").content
        assert base[0].startswith("you: Which bar") and base[1].startswith("base: ")
        assert len(screen.base_history) == 2 and len(screen.history) == 4

        await pilot.press("ctrl+l")
        await pilot.pause(0.1)
        assert bubbles(screen, "tuned") == [] and screen.history == []


async def test_chat_errors_are_shown_in_the_pane(demo):
    app = ChatApp(str(demo.text_model))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded is not None)
        screen.query_one("#compare").value = True
        await pilot.pause(0.1)
        assert "compare needs an adapter" in str(screen.query_one("#chat-error").content)
        screen.query_one("#image-path").value = str(demo.data / "images" / "chart_000.png")
        prompt = screen.query_one("#prompt")
        prompt.value = "hello"
        prompt.focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert "text-only model: it cannot take an image" in str(screen.query_one("#chat-error").content)
        screen.query_one("#image-path").value = ""
        screen.query_one("#max-new-tokens").value = "0"
        prompt.value = "hello"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert "max tokens > 0" in str(screen.query_one("#chat-error").content)


async def test_a_model_that_cannot_load_says_so(tmp_path):
    app = ChatApp(str(tmp_path / "nothing"))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: "could not load" in str(screen.query_one("#chat-status").content))
        assert screen.query_one("#prompt").disabled


async def test_the_settings_row_fits_an_80_column_terminal(tmp_path):
    app = ChatApp(str(tmp_path / "nothing"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        switch = app.screen.query_one("#compare")
        assert switch.region.width > 0 and switch.region.right <= 80
