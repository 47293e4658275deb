"""Torch work that comes before training in another thread of the same process.

libgomp (torch's OpenMP on Linux) keeps a pool of worker threads for every thread that ran a parallel op, for
as long as that thread lives. With two pools alive it counts more threads than CPUs and makes its workers
sleep between ops instead of spinning: a trainer running in a thread worker (the TUI) was ~15% slower on two
cores after the demo had been built in the main thread, ~2x for small ops (bench/ui_overhead.py history).
A pool dies with its thread, so such work runs in a thread of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_passing_thread(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """fn(*args, **kwargs) in a thread that ends when it returns; its result, or its exception re-raised here.
    KeyboardInterrupt still reaches the caller: the main thread waits in short joins."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"vlmtune-{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
