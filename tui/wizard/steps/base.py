"""What every step shares: a title, a way to say why the user cannot go on yet, and a hook when shown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import VerticalScroll

if TYPE_CHECKING:
    from tui.wizard.state import WizardState


class Step(VerticalScroll):
    step_id: str = ""
    # Tab goes from field to field; the step's scroll container itself takes no focus stop.
    can_focus = False

    @property
    def state(self) -> WizardState:
        return self.app.state  # type: ignore[attr-defined]

    def blocked(self) -> str | None:
        """Why "next" is not allowed yet, in words; None when it is."""
        return None

    def working(self) -> bool:
        """True while one of this step's workers (probe, inspection, data check, planning) runs."""
        from textual.worker import WorkerState

        return any(w.node is self and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
                   for w in self.app.workers)

    def on_show_step(self) -> None:
        """Called each time the step becomes the visible one."""

    def error(self, widget_id: str, message: str | None) -> None:
        """Show (or clear) an inline error next to a field."""
        label = self.query_one(f"#{widget_id}")
        label.update(message or "")
        label.display = bool(message)
