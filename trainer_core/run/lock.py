"""One run at a time in a run folder: an advisory lock (flock) on a file inside it, held for the run's life.

Two runs writing one folder (say, `--resume RUN` twice) would interleave their metrics, fight over the
checkpoints and leave a summary that is neither's. The OS drops a flock when its process ends however it ends
(kill -9 included), so a crashed run never leaves the folder locked. The holder's pid and host are written into
the lock file for the refusal's message."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from trainer_core.base.errors import UsageError
from trainer_core.run.folder import LOCK_FILE, RunFolderError

log = logging.getLogger(__name__)

# flock on a filesystem that cannot lock (some network mounts): the run goes on unlocked rather than not at all
_CANNOT_LOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunInUse(UsageError):
    """Another vlmtune holds the run folder's lock."""

    def __init__(self, root: Path, holder: dict) -> None:
        pid, host = holder.get("pid", "unknown"), holder.get("host")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        super().__init__(
            f"{root} is in use by another vlmtune (pid {pid}{where}): two runs writing one folder would mix their "
            f"metrics and checkpoints. Wait for it to finish, or stop it (Ctrl-C, or `kill {pid}`, saves a "
            f"checkpoint) and then resume.")


class RunLock:
    """The held lock of one run folder; `release` (or the process ending) frees it."""

    def __init__(self, root: Path, fd: int | None) -> None:
        self.root, self._fd = root, fd

    @classmethod
    def acquire(cls, root: str | Path) -> RunLock:
        """Lock `root` for this process, or raise RunInUse naming the holder."""
        root = Path(root)
        try:
            fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by child processes
        except OSError as exc:
            raise RunFolderError(f"cannot write in the run folder {root} ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunInUse(root, _holder(root)) from None
        except OSError as exc:
            if exc.errno not in _CANNOT_LOCK:
                os.close(fd)
                raise
            log.warning("cannot lock %s on this filesystem (%s): two runs there would not be kept apart", root, exc)
            os.close(fd)
            return cls(root, None)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        return cls(root, fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_free(root: str | Path) -> None:
    """Raise RunInUse if a run holds `root` now. For the launcher of a multi-process run, whose rank 0 takes the
    lock itself (a lock held here would shut out its own child)."""
    RunLock.acquire(root).release()


def _holder(root: Path) -> dict:
    try:
        holder = json.loads((root / LOCK_FILE).read_text(encoding="utf-8"))
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):  # the holder is between locking and writing its pid
        return {}
