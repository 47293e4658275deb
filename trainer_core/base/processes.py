"""Whether a run's process is still there: a run folder that says "running" for a process that is gone (killed,
out of memory, a background child that died at start) must say so instead of showing "running" forever."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

PROCESS_FILE = "process.json"  # written by whoever starts a run's process, before it writes anything itself


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # a zombie has ended, only not been reaped
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def record_process(run_dir: Path, pid: int) -> None:
    (run_dir / PROCESS_FILE).write_text(json.dumps({"pid": pid, "host": this_host()}), encoding="utf-8")


def gone_process(run_dir: Path, summary: dict[str, Any] | None) -> int | None:
    """The pid of the run's process when it ran on this machine and has ended; None when it lives, ran
    elsewhere (a shared folder of several machines), or is not known."""
    record = summary if summary and summary.get("pid") else _read(run_dir / PROCESS_FILE)
    if not record or not isinstance(record.get("pid"), int):
        return None
    if record.get("host", this_host()) != this_host():
        return None
    return None if process_alive(record["pid"]) else record["pid"]


class ProcessStop:
    """The stop of a run in another process of this machine (a background run): SIGTERM, which the engine takes
    as a clean stop (checkpoint and adapter at the end of the step). Same surface as StopSignal for a screen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def request(self, reason: str = "") -> None:
        import contextlib
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):  # ended already: the run folder says how
            os.kill(self.pid, signal.SIGTERM)

    def request_checkpoint(self) -> None:
        raise NotImplementedError  # the monitor says so: only runs in this process can save on demand


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
