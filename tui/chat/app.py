"""`vlmtune chat --model M [--adapter A]` without --prompt: the chat pane as its own app."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from tui.chat.screen import ChatScreen
from tui.widgets import HELP_BINDINGS, toggle_help


class ChatApp(App):
    CSS_PATH = "../styles/app.tcss"
    TITLE = "vlmtune chat"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True), *HELP_BINDINGS]

    def action_toggle_help(self) -> None:
        toggle_help(self)

    def __init__(self, model: str | None, adapter: str | None = None, trust_remote_code: bool = False) -> None:
        super().__init__()
        self.model_path, self.adapter, self.trust_remote_code = model, adapter, trust_remote_code

    def on_mount(self) -> None:
        self.push_screen(ChatScreen(self.model_path, self.adapter, trust_remote_code=self.trust_remote_code))
