"""Text with square brackets (Llama-2's `[/INST]`, a model's answer, a path) is shown as it is in the chat
pane and the wizard's Model and Data steps: it is not Textual markup, so it neither styles nor crashes."""

from __future__ import annotations

import json

import pytest
from pilot_helpers import wait_for

from tui.chat.app import ChatApp
from tui.wizard.app import VlmtuneApp

pytestmark = pytest.mark.slow

PROMPT = "[/INST] hi [b]"


def shown(widget) -> str:  # noqa: ANN001
    """What the widget draws, as text (markup that failed to parse would have left the old text)."""
    return str(widget.render())


async def test_chat_shows_a_prompt_with_brackets_and_goes_on(demo, tmp_path):
    app = ChatApp(str(demo.text_model))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.loaded is not None)
        for turn in (1, 2):  # a second turn: the pane is still alive after the first
            prompt = screen.query_one("#prompt")
            prompt.focus()
            prompt.value = PROMPT
            await pilot.press("enter")
            await wait_for(pilot, lambda t=turn: len(screen.history) == 2 * t and not screen.generating)
            await pilot.pause(0.2)  # the redraw timer shows the answer
        bubbles = [shown(b) for b in screen.query_one("#tuned-col").query(".bubble")]
        assert bubbles[0] == bubbles[2] == f"you: {PROMPT}"
        assert bubbles[1].startswith("model: ") and screen.history[1]["role"] == "assistant"
        # A path with brackets in an error message is text too.
        missing = tmp_path / "[/INST][red].png"
        screen.query_one("#image-path").value = str(missing)
        prompt.value = "hello"
        prompt.focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert shown(screen.query_one("#chat-error")) == f"image not found: {missing}"
        assert app.is_running and screen is app.screen


async def test_chat_names_a_model_path_with_brackets_it_cannot_load(tmp_path):
    missing = tmp_path / "no[/INST]model[red]"
    app = ChatApp(str(missing))
    async with app.run_test(size=(100, 30)) as pilot:
        status = app.screen.query_one("#chat-status")
        await wait_for(pilot, lambda: "could not load" in shown(status))
        await pilot.pause(0.2)  # drawn: markup would fail here
        assert str(missing) in shown(status) and app.is_running


def wizard(demo, tmp_path) -> VlmtuneApp:
    return VlmtuneApp(preset_folders=[demo.presets], run_folders=[tmp_path / "runs"], presets_dir=tmp_path / "out")


async def open_demo_preset(pilot, app, name: str) -> None:  # noqa: ANN001
    presets = app.query_one("#presets")
    ids = [o.id for o in presets._options]
    presets.focus()
    presets.highlighted = ids.index(str((app.preset_folders[0] / f"{name}.yaml").resolve()))
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.current == "machine")


async def test_model_step_shows_a_path_with_brackets(demo, tmp_path):
    app = wizard(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.query_one("#new").press()
        await wait_for(pilot, lambda: app.current == "machine")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.current == "model")
        missing = tmp_path / "[/INST]model[red]"
        field = app.query_one("#model-path")
        field.value = str(missing)
        field.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one("#model-error").display)
        assert str(missing) in shown(app.query_one("#model-error")) and app.is_running


async def test_data_step_previews_a_row_with_brackets(demo, tmp_path):
    rows = [{"prompt": f"[INST] question {i} [/INST]", "completion": "[red]answer[/red] [/INST] [b]", "[/INST]": "x"}
            for i in range(4)]
    rows.append({"prompt": "[/INST] empty answer", "completion": "", "[/INST]": "x"})
    data = tmp_path / "[red]llama2[b].jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    app = wizard(demo, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_demo_preset(pilot, app, "demo-text-sft")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.state.model_info is not None)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.state.data_report is not None)
        path = app.query_one("#data-path")
        path.value = str(data)
        path.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.state.data_report is not None and app.state.data_report.source == str(data))
        await pilot.pause(0.2)
        preview = shown(app.query_one("#preview"))
        assert "[INST] question 0 [/INST]" in preview and "[red]answer[/red] [/INST] [b]" in preview
        assert "line 5, column 'completion': is empty" in shown(app.query_one("#problems"))
        # The ignored column named "[/INST]" is offered in the column mapping as it is.
        options = [str(prompt) for select in app.query("Select.map") for prompt, _ in select._options]
        assert "[/INST]" in options
        assert app.is_running and app.current == "data"
