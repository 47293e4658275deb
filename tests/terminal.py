"""The app in a real pseudo-terminal, read back through a terminal emulator (pyte): what a user over SSH sees,
with Textual's real driver, timers and threads, not Pilot's."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pyte

KEYS = {"enter": "\r", "down": "\x1b[B", "up": "\x1b[A", "tab": "\t", "escape": "\x1b", "ctrl+t": "\x14",
        "ctrl+q": "\x11", "ctrl+n": "\x0e", "y": "y", "n": "n"}


class Terminal:
    def __init__(self, args: list[str], cwd: Path, *, columns: int = 80, lines: int = 24,
                 env: dict[str, str] | None = None) -> None:
        self.screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self.screen)
        self._lock = threading.Lock()
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "tui.cli", *args], cwd=cwd, stdin=slave, stdout=slave,
                                     stderr=slave, close_fds=True, start_new_session=True,
                                     env={**os.environ, "TERM": "xterm-256color", **(env or {})})
        os.close(slave)
        self._master = master
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self._stream.feed(data)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.screen.display)

    def press(self, *keys: str, pause: float = 0.3) -> None:
        for key in keys:
            os.write(self._master, KEYS.get(key, key).encode())
            time.sleep(pause)

    def wait_for(self, predicate, timeout: float = 120.0) -> str:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if predicate(text):
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited ({self.proc.returncode}); last screen:\n{text}")
            time.sleep(0.1)
        raise AssertionError(f"timed out; last screen:\n{self.text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._master)
