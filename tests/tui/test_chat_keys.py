"""The chat pane in a user's hands: stopping an answer while typing, the image field checked as it is typed,
a failed turn leaving nothing half-sent, and a thumbnail that shows the whole image."""

from __future__ import annotations

from PIL import Image
from pilot_helpers import wait_for

from tui.chat.app import ChatApp
from tui.widgets import fit


async def loaded_chat(pilot, app):
    screen = app.screen
    await wait_for(pilot, lambda: screen.loaded is not None)
    return screen


async def test_ctrl_x_stops_an_answer_while_the_prompt_has_focus(demo):
    app = ChatApp(str(demo.model))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await loaded_chat(pilot, app)
        assert not screen.check_action("stop_generation", ())  # not offered while nothing streams
        prompt = screen.query_one("#prompt")
        prompt.focus()
        prompt.value = "half-typed question"
        # The tiny demo models answer in a blink, too fast to press a key into: hold the streaming state the
        # way a long answer would (the key routing is what is tested here).
        screen._set_generating(True)
        await pilot.pause(0.1)
        assert screen.check_action("stop_generation", ())
        await pilot.press("ctrl+x")
        await pilot.pause(0.1)
        assert screen._stop.is_set() and prompt.value == "half-typed question" and app.focused is prompt
        screen._stop.clear()
        await pilot.press("escape")  # Esc stops an answer first, and does not leave
        await pilot.pause(0.1)
        assert screen._stop.is_set() and app.screen is screen
        screen._set_generating(False)


async def test_image_field_says_what_is_wrong_as_it_is_typed(demo, tmp_path):
    app = ChatApp(str(demo.model))
    (tmp_path / "notes.txt").write_text("not an image")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await loaded_chat(pilot, app)
        field, error = screen.query_one("#image-path"), screen.query_one("#chat-error")
        for value, words in ((str(tmp_path), "is a folder"), (str(tmp_path / "notes.txt"), "not an image"),
                             (str(tmp_path / "missing.png"), "image not found")):
            field.value = value
            await pilot.pause(0.1)
            assert error.display and words in str(error.content), value
        field.value = str(demo.data / "images" / "chart_000.png")
        await pilot.pause(0.1)
        assert not error.display and screen.query_one("#thumb").display


async def test_a_failed_turn_leaves_no_half_sent_bubbles(demo, tmp_path):
    image = tmp_path / "chart.png"
    Image.open(demo.data / "images" / "chart_000.png").save(image)
    app = ChatApp(str(demo.model))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await loaded_chat(pilot, app)
        screen.query_one("#image-path").value = str(image)
        await pilot.pause(0.1)
        image.write_bytes(b"no longer a png")  # broken between attaching and asking: generation fails
        prompt = screen.query_one("#prompt")
        prompt.value = "What is the value of B?"
        prompt.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.query_one("#chat-error").display and not screen.generating)
        assert "generation failed" in str(screen.query_one("#chat-error").content)
        assert list(screen.query_one("#tuned-col").query(".bubble")) == [] and screen.history == []


def test_the_thumbnail_fits_the_whole_image():
    assert fit((1000, 500), (24, 12)) == (24, 12)
    assert fit((500, 1000), (24, 12)) == (6, 12)
    assert fit((10, 10), (24, 12)) == (12, 12)
