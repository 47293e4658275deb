"""Small widgets that only turn state into pixels: the memory bar and a half-block image preview, and
`plain`, the one way to show text from data, paths or a model."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Button, Label, Static

from trainer_core.base.safe_text import visible_controls

COMPONENT_COLOURS = {
    "weights": "#4e79a7", "lora": "#f28e2b", "gradients": "#e15759", "optimizer": "#76b7b2",
    "activations": "#59a14f", "vision_activations": "#edc948", "logits": "#b07aa1", "vision_forward": "#ff9da7",
    "transient": "#9c755f",
}


def plain(text: object) -> Text:
    """`text` shown exactly as it is: a Text object is never read as markup (a string such as `[/INST]` from
    Llama-2 data or a model's answer would raise MarkupError), and control characters are shown, not sent
    to the terminal."""
    return Text(visible_controls(str(text)))


HELP_BINDINGS = [Binding("f1", "toggle_help", "Help"),
                 Binding("question_mark", "toggle_help", "Help", show=False)]  # `?` types into a text field first


def toggle_help(app: App) -> None:
    """Textual's help panel: the focused step's or screen's HELP and every key that applies there."""
    from textual.widgets import HelpPanel

    if app.screen.query(HelpPanel):
        app.action_hide_help_panel()
    else:
        app.action_show_help_panel()


class MemoryBar(Static):
    """Estimated memory per component, stacked against the memory available; red when it does not fit."""

    _shown: tuple[dict[str, int], int, int, str] | None = None

    def on_resize(self) -> None:
        # The bar is as wide as the widget: drawn again at its new width (a scrollbar came or went).
        if self._shown is not None:
            self.show(*self._shown)

    def show(self, components: dict[str, int], required: int, available: int, reason: str = "") -> None:
        self._shown = (components, required, available, reason)
        width = max(20, (self.size.width or 60) - 2)
        scale = max(required, available, 1)
        bar = Text()
        used = 0
        for name, value in components.items():
            cells = round(value / scale * width)
            if cells:
                bar.append("█" * cells, style=COMPONENT_COLOURS.get(name, "white"))
                used += cells
        slack = round(available / scale * width) - used
        if slack > 0:
            bar.append("░" * slack, style="grey50")
        fits = required <= available
        legend = Text("  ".join(f"{n} {v / 2**30:.1f}G" for n, v in components.items() if v >= 2**26))
        status = Text(f"needs {required / 2**30:.1f} GiB of {available / 2**30:.1f} GiB: "
                      f"{'fits' if fits else 'does NOT fit'}", style="bold green" if fits else "bold red")
        if not fits and reason:
            status.append(f"  {reason}", style="red")
        self.set_class(not fits, "-over")
        self.update(Text("\n").join([bar, legend, status]))


class ImagePreview(Widget):
    """An image drawn with half-block characters: two pixels per cell, works in any truecolor terminal."""

    DEFAULT_CSS = "ImagePreview { height: 8; width: 32; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: list[list[tuple[tuple[int, int, int], tuple[int, int, int]]]] = []
        self._path: str | None = None

    def load(self, path: str | None) -> None:
        self._path, self._rows = path, []
        if path and self.size.width and self.size.height:
            try:
                from PIL import Image

                with Image.open(path) as im:
                    w, h = fit(im.size, (self.size.width, self.size.height * 2))
                    img = im.convert("RGB").resize((w, h + h % 2))
                    px = img.load()
                    self._rows = [[(px[x, y], px[x, y + 1]) for x in range(w)] for y in range(0, h, 2)]
            except (OSError, ValueError):
                self._rows = []
        self.refresh()

    def on_resize(self) -> None:
        # Drawn for the size it has: loaded before layout (size 0) or resized, the whole image is drawn again.
        if self._path:
            self.load(self._path)

    def render_line(self, y: int) -> Strip:
        if y >= len(self._rows):
            return Strip.blank(self.size.width)
        segments = [Segment("▀", Style(color=f"rgb{top}", bgcolor=f"rgb{bottom}")) for top, bottom in self._rows[y]]
        return Strip(segments).extend_cell_length(self.size.width)


def fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with the image's proportions inside `box` (pixels): the whole image, never a crop."""
    scale = min(box[0] / max(1, size[0]), box[1] / max(1, size[1]))
    return max(1, min(box[0], round(size[0] * scale))), max(1, min(box[1], round(size[1] * scale)))


class Confirm(ModalScreen[bool]):
    """A yes/no question; Escape answers no. Subclasses set the words."""

    QUESTION = "Are you sure?"
    YES = "Yes"
    NO = "No"
    BINDINGS = [("escape", "dismiss(False)", "No"), ("n", "dismiss(False)", "No"), ("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str | None = None) -> None:
        super().__init__()
        self.question = question or self.QUESTION

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(plain(self.question))
            with Horizontal(classes="row"):
                yield Button(f"{self.YES} (y)", id="yes", variant="error")
                yield Button(f"{self.NO} (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # Enter takes the safe answer; the risky one is asked for by name

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ConfirmQuit(Confirm):
    QUESTION = "A run is training. Quit anyway? (it stops at the next step and saves a checkpoint)"
    YES, NO = "Stop and quit", "Stay"


class ConfirmStop(Confirm):
    QUESTION = "Stop training? It stops at the end of this step and saves a checkpoint and the adapter."
    YES, NO = "Stop", "Keep training"


class ConfirmTrust(Confirm):
    """Asked each time a preset that turns trust_remote_code on is opened: nothing runs the model's code before."""

    YES, NO = "Run its code", "Keep it off"

    def __init__(self, model: str) -> None:
        super().__init__(f"This preset sets model.trust_remote_code: true. Loading {model} would run the Python "
                         "code in its folder or hub repository on this machine. Allow it for this session?")
