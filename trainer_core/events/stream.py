"""The one event stream: the subscription that fans events out, a non-blocking hand-off to another thread,
and the stop/checkpoint requests that travel the other way.

The TUI, the headless progress bar, the metrics files and tests are all subscribers. `emit` calls each
subscriber in the training thread, so subscribers must return at once (write a line, post a message,
put on a queue); a subscriber that raises is reported once and detached, never breaking training.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from trainer_core.events.types import Event, StepLogged

log = logging.getLogger(__name__)

Subscriber = Callable[[Event], None]


class EventStream:
    """Fan-out of engine events to any number of subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers = [*self._subscribers, subscriber]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not subscriber]

        return unsubscribe

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:  # a snapshot: subscribe/unsubscribe swap the list
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed; detached", subscriber)
                with self._lock:
                    self._subscribers = [s for s in self._subscribers if s is not subscriber]


class QueueSubscriber:
    """Hands events to another thread through a bounded queue; never blocks the emitter.

    When the consumer falls behind, step events are dropped; the others (samples, checkpoints, the end of
    the run) are kept, in order, in an overflow list that `drain` returns after the queue's contents.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self._overflow: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            overflowing = bool(self._overflow)
        if not overflowing:
            try:
                self.queue.put_nowait(event)
                return
            except queue.Full:
                pass
        # Once overflowing, everything goes behind what already overflowed, so order is kept.
        if isinstance(event, StepLogged):
            self.dropped += 1
        else:
            with self._lock:
                self._overflow.append(event)

    def drain(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            out.extend(self._overflow)
            self._overflow.clear()
        return out


class StopSignal:
    """Requests from any thread (or a signal handler) that the engine honours at the next step boundary:
    stop (saving a checkpoint and the adapter), or save a checkpoint now and go on."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._checkpoint = threading.Event()
        self.reason = ""

    def request_checkpoint(self) -> None:
        self._checkpoint.set()

    def take_checkpoint_request(self) -> bool:
        """True once per request (the engine clears it when it schedules the save)."""
        if self._checkpoint.is_set():
            self._checkpoint.clear()
            return True
        return False

    def request(self, reason: str = "stop requested") -> None:
        self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
