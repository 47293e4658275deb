"""The chat pane: talk to base + adapter (image + text), tokens streamed as they come, generation settings,
clear, stop, and compare (the same prompt answered by the base model and the tuned one side by side).

Prompts, answers, paths and error messages are shown as Text objects (`plain`), never as markup: a prompt
or an answer with `[/INST]` in it is text, not a closing tag.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static, Switch

from tui.widgets import ImagePreview, plain

REDRAW_SECONDS = 0.05


class ChatScreen(Screen):
    HELP = """
    **Chat.** Ask the tuned model (attach an image for a vision-language model). Turn on compare to see the
    base model's answer beside it (the adapter switched off, no second copy). `ctrl+x` or `esc` stops an answer.
    """
    BINDINGS = [
        Binding("ctrl+l", "clear", "New conversation"),
        # priority: ctrl+x works while typing (the prompt field would take it as "cut"); shown only while an
        # answer streams. Esc stops an answer too, and leaves when none streams.
        Binding("ctrl+x", "stop_generation", "Stop answer", priority=True),
        Binding("escape", "leave", "Back"),
    ]

    def __init__(self, model: str | None = None, adapter: str | Path | None = None, *,
                 trust_remote_code: bool = False) -> None:
        super().__init__()
        self.model_path, self.adapter = model, adapter
        self.trust_remote_code = trust_remote_code
        self.loaded = None
        self.history: list[dict[str, str]] = []  # the tuned model's conversation
        self.base_history: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._live: dict[str, str] = {}  # column -> text being generated
        self._live_widgets: dict[str, Static] = {}
        self.generating = False

    def compose(self) -> ComposeResult:
        yield Static("loading the model …", id="chat-status")
        with Horizontal(id="chat-settings", classes="row"):
            yield Label("max tokens", classes="inline")
            yield Input("128", id="max-new-tokens", type="integer")
            yield Label("temperature", classes="inline")
            yield Input("0", id="temperature", type="number")
            yield Label("top-p", classes="inline")
            yield Input("1.0", id="top-p", type="number")
            yield Label("compare", classes="inline")
            yield Switch(id="compare")
        with Horizontal(id="chat-image-row", classes="row"):
            yield Input(placeholder="image file to attach (optional)", id="image-path")
            yield ImagePreview(id="thumb")
        yield Static("", id="chat-error", classes="error")
        with Horizontal(id="conversation"):
            yield VerticalScroll(id="tuned-col")
            yield VerticalScroll(id="base-col")
        yield Input(placeholder="ask something and press Enter", id="prompt", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        for col in ("#tuned-col", "#base-col"):
            self.query_one(col).can_focus = False  # Tab goes between fields, not into the transcript
        self.query_one("#base-col").display = False
        self.query_one("#thumb").display = False
        self.query_one("#chat-error").display = False
        self.set_interval(REDRAW_SECONDS, self._redraw_live)
        self._load()

    @work(thread=True, exclusive=True, group="chat-load", exit_on_error=False)
    def _load(self) -> None:
        try:
            from trainer_core.chat import load_for_chat

            loaded = load_for_chat(self.model_path, self.adapter, trust_remote_code=self.trust_remote_code)
        except Exception as exc:  # shown in the pane
            self.app.call_from_thread(self._status, f"could not load the model: {exc}", error=True)
            return
        self.loaded = loaded
        what = "base + adapter" if self.adapter else "base model"
        self.app.call_from_thread(self._status, f"ready: {what} ({'vision-language' if loaded.is_vlm else 'text'})")

    def _status(self, text: str, error: bool = False) -> None:
        self.query_one("#chat-status", Static).update(plain(text))
        self.query_one("#chat-status").set_class(error, "error")
        prompt = self.query_one("#prompt", Input)
        prompt.disabled = error or self.loaded is None
        if not prompt.disabled:
            prompt.focus()

    def _error(self, text: str | None) -> None:
        box = self.query_one("#chat-error", Static)
        box.update(plain(text or ""))
        box.display = bool(text)

    @on(Switch.Changed, "#compare")
    def compare_changed(self, event: Switch.Changed) -> None:
        if event.value and not self.adapter:
            self._error("compare needs an adapter (base and tuned); open the chat with --adapter or after training")
            event.switch.value = False
            return
        self.query_one("#base-col").display = event.value

    @on(Input.Changed, "#image-path")
    def image_changed(self, event: Input.Changed) -> None:
        path = event.value.strip()
        thumb = self.query_one("#thumb", ImagePreview)
        problem = image_problem(path) if path else None
        self._error(problem)
        thumb.display = bool(path) and problem is None and self.app.size.width >= 80
        if thumb.display:
            thumb.load(path)

    @on(Input.Submitted, "#image-path")
    def image_submitted(self) -> None:
        self.query_one("#prompt", Input).focus()

    @on(Input.Submitted, "#prompt")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.loaded is None or self.generating:
            return
        try:
            settings = self._settings()
        except ValueError as exc:
            self._error(str(exc))
            return
        image = self.query_one("#image-path", Input).value.strip() or None
        if image and not Path(image).is_file():
            self._error(f"image not found: {image}")
            return
        if image and not self.loaded.is_vlm:
            self._error("this is a text-only model: it cannot take an image")
            return
        self._error(None)
        event.input.value = ""
        compare = self.query_one("#compare", Switch).value
        columns = ["tuned", "base"] if compare else ["tuned"]
        for col in columns:
            self._add_bubble(col, "you", text + (f"  [image: {Path(image).name}]" if image else ""))
            self._live_widgets[col] = self._add_bubble(col, "model" if col == "tuned" and not self.adapter else col, "")
            self._live[col] = ""
        self._stop.clear()
        self._set_generating(True)
        self._generate(text, image, settings, columns)

    def _settings(self):  # noqa: ANN202
        from trainer_core.chat import GenerationSettings

        try:
            n = int(self.query_one("#max-new-tokens", Input).value)
            t = float(self.query_one("#temperature", Input).value)
            p = float(self.query_one("#top-p", Input).value)
        except ValueError:
            raise ValueError("max tokens must be a whole number, temperature and top-p numbers") from None
        if n <= 0 or t < 0 or not 0 < p <= 1:
            raise ValueError("max tokens > 0, temperature >= 0 (0 = greedy), 0 < top-p <= 1")
        return GenerationSettings(max_new_tokens=n, temperature=t, top_p=p)

    def _add_bubble(self, column: str, who: str, text: str) -> Static:
        col = self.query_one(f"#{column}-col", VerticalScroll)
        bubble = Static(_bubble_text(who, text), classes=f"bubble {who}")
        col.mount(bubble)
        col.scroll_end(animate=False)
        return bubble

    @work(thread=True, exclusive=True, group="chat-generate", exit_on_error=False)
    def _generate(self, text: str, image: str | None, settings: Any, columns: list[str]) -> None:
        from trainer_core.chat import stream

        lm = self.loaded
        for col in columns:
            history = self.history if col == "tuned" else self.base_history
            messages = [*history, {"role": "user", "content": text}]
            answer = ""
            try:
                for chunk in stream(lm.model, lm.processing_class, lm.is_vlm, messages, [image] if image else None,
                                    settings, stop=self._stop, base=(col == "base")):
                    answer += chunk
                    self._live[col] = answer  # drawn by the timer: the generation never waits on the screen
            except Exception as exc:  # e.g. out of memory: said in the pane, the chat goes on without this turn
                self.app.call_from_thread(self._failed_turn, columns, f"generation failed: {exc}")
                return
            history.extend([{"role": "user", "content": text}, {"role": "assistant", "content": answer.strip()}])
            if self._stop.is_set():
                break
        self.app.call_from_thread(self._set_generating, False)

    def _failed_turn(self, columns: list[str], message: str) -> None:
        """A turn that failed leaves nothing half-sent: its bubbles go, the history never had it."""
        for col in columns:
            bubbles = list(self.query_one(f"#{col}-col", VerticalScroll).query(".bubble"))
            for bubble in bubbles[-2:]:
                bubble.remove()
        self._live.clear()
        self._live_widgets.clear()
        self._error(message)
        self._set_generating(False)

    def _redraw_live(self) -> None:
        for col, text in list(self._live.items()):
            widget = self._live_widgets.get(col)
            if widget is not None:
                who = "model" if col == "tuned" and not self.adapter else col
                widget.update(_bubble_text(who, text))
        if not self.generating and self._live:
            self._live.clear()
            self._live_widgets.clear()
        for col in ("tuned", "base"):
            self.query_one(f"#{col}-col", VerticalScroll).scroll_end(animate=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_generation":
            return self.generating
        return True

    def _set_generating(self, value: bool) -> None:
        self.generating = value
        self.refresh_bindings()

    def action_stop_generation(self) -> None:
        if self.generating:
            self._stop.set()
            self.notify("stopped")

    def action_clear(self) -> None:
        if self.generating:
            return
        self.history.clear()
        self.base_history.clear()
        for col in ("tuned", "base"):
            self.query_one(f"#{col}-col", VerticalScroll).remove_children()

    def action_leave(self) -> None:
        if self.generating:  # Esc first stops the answer being written; a second Esc leaves
            self.action_stop_generation()
            return
        self._stop.set()
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()


def image_problem(path: str) -> str | None:
    """Why `path` cannot be attached (checked as it is typed, from the file's header only), or None."""
    p = Path(path).expanduser()
    if p.is_dir():
        return f"{path} is a folder: give an image file"
    if not p.is_file():
        return f"image not found: {path}"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return f"{path} is not an image PIL can read (png, jpeg, webp, ...)"
    return None


def _bubble_text(who: str, text: str) -> Text:
    """`who: text` with the speaker in bold; the text (a prompt, an answer) exactly as it is."""
    return Text.assemble((who, "bold"), ": ", plain(text or "…"))
