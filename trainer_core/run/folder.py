"""The run directory: its layout, and the subscriber that records the event stream in it.

<output_dir>/<name>-<YYYYmmdd-HHMMSS>/
  preset.yaml      the resolved preset            summary.json   status, steps, final loss, ... (atomic)
  metrics.jsonl    one object per step / eval     samples.jsonl  generations during training
  events.jsonl     every other event              adapter/       PEFT adapter + processor (atomic)
  checkpoints/     resumable trainer checkpoints  .vlmtune-run   the run's name: vlmtune made this folder
  .vlmtune-lock    held (flock) while a run writes here (trainer_core.run.lock)
Lines are flushed as they are written, so `vlmtune monitor` (and `tail -f`) can follow a live run.

vlmtune writes only into folders it made (the marker says so) or empty ones: a folder of the user's, another
preset's run, or a run with results already is refused with what to do instead, and nothing in it is touched.
A failure to write the record stops the run (RunRecorder.failure): a run that goes on unrecorded is lost work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from trainer_core.base.atomic import atomic_write_json, atomic_write_text
from trainer_core.base.errors import UsageError, VlmtuneError
from trainer_core.events import Event, RunFinished
from trainer_core.events.codec import FILES, encode


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def preset(self) -> Path:
        return self.root / "preset.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"


MARKER = ".vlmtune-run"  # holds the run's name (its preset's)
LOCK_FILE = ".vlmtune-lock"
_OWN_FILES = {MARKER, LOCK_FILE}


class NotThisRunsFolder(UsageError):
    """A run folder was named that vlmtune did not make for this run: writing there would replace what it holds."""


class RunFolderError(VlmtuneError):
    """The run folder could not be made (a file in the way, no permission, a full disk)."""


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """A new time-stamped run folder under output_dir (`~` is the user's home), marked as this run's."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir).expanduser() / f"{name}-{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            break
        except FileExistsError:  # two runs started in the same second
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise RunFolderError(f"could not create the run folder {path} ({exc.strerror or exc}): output_dir "
                                 f"({output_dir}) must be a folder you can write to") from exc
    mark_run(path, name)
    return path


def mark_run(root: Path, name: str) -> None:
    atomic_write_text(root / MARKER, name + "\n")


def run_name(root: Path) -> str | None:
    """Whose run the folder holds: the marker's name; for a run made before markers, the name in its summary
    (with a preset.yaml beside it); None for any other folder."""
    try:
        return (root / MARKER).read_text(encoding="utf-8").strip() or None
    except OSError:
        pass
    summary = read_summary(root) if (root / "preset.yaml").is_file() else None
    if isinstance(summary, dict) and "status" in summary and isinstance(summary.get("name"), str):
        return summary["name"]
    return None


def _own(name: str) -> bool:
    # the marker's temporary file too: another machine may be writing it this instant
    return name in _OWN_FILES or name.startswith(f"{MARKER}.")


def _is_empty(root: Path) -> bool:
    return all(_own(p.name) for p in root.iterdir())


def _results(root: Path) -> list[str]:
    """What a run left in the folder that a new run there would replace or mix with."""
    found = [f"{p.name}/" for p in (root / "adapter", root / "model") if p.exists()]
    if any((root / "checkpoints").glob("checkpoint-*")):
        found.append("checkpoints")
    if (root / "metrics.jsonl").is_file() and (root / "metrics.jsonl").stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def claim_run_dir(path: str | Path, name: str) -> Path:
    """The folder for a new run of `name` (--run-dir): made if missing, taken if empty, or reused when it is
    this preset's run without results yet (the folder a multi-machine launch shares: each machine claims it)."""
    root = Path(path).expanduser()
    try:
        if not root.exists() or (root.is_dir() and _is_empty(root)):
            root.mkdir(parents=True, exist_ok=True)
            mark_run(root, name)
            return root
    except OSError as exc:
        raise RunFolderError(f"could not create the run folder {root} ({exc.strerror or exc})") from exc
    if not root.is_dir():
        raise NotThisRunsFolder(f"{root} is a file, not a run folder: give --run-dir a new or empty folder")
    owner = run_name(root)
    if owner == name and (root / MARKER).exists() and not _results(root):
        return root
    raise NotThisRunsFolder(_refusal(root, name, owner))


def _refusal(root: Path, name: str, owner: str | None) -> str:
    from trainer_core.demo import is_demo

    what = ("To continue a run, use `vlmtune train --resume RUN_DIR`; to start one, give --run-dir a new or empty "
            "folder (or leave it out for a new time-stamped folder under output_dir).")
    if owner is None and is_demo(root):
        return (f"{root} is not this run's folder: it is the vlmtune demo (its model/ is the demo's base model, "
                f"which a run there would replace). {what}")
    if owner is None:
        listed = sorted(p.name for p in root.iterdir() if not _own(p.name))
        more = f", ... ({len(listed)} in all)" if len(listed) > 4 else ""
        return (f"{root} is not this run's folder: it is not a vlmtune run folder and it holds other files "
                f"({', '.join(listed[:4])}{more}), which vlmtune leaves alone. {what}")
    if owner != name:
        return f"{root} is not this run's folder: it holds a run of {owner!r}, not of {name!r}. {what}"
    results = ", ".join(_results(root)) or "preset.yaml, summary.json"
    return (f"{root} is not this run's folder: it holds a run of {name!r} already ({results}), which a new run "
            f"would replace. Continue it with `vlmtune train --resume {root}`, or give --run-dir a new or empty "
            f"folder.")


def open_run(path: str | Path, name: str, *, mark: bool = True) -> Path:
    """The run folder to resume: one vlmtune made (or an empty one, which then fails for want of a checkpoint)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"run directory not found: {root}")
    owner = run_name(root)
    if owner is None and not _is_empty(root):
        raise NotThisRunsFolder(f"{root} is not a vlmtune run folder (no {MARKER} or summary.json in it): there "
                                f"is no run to resume there, and vlmtune leaves its files alone")
    if mark and not (root / MARKER).exists():
        mark_run(root, owner or name)  # a run from before markers, or an empty folder, becomes this run's
    return root


def newest_run(output_dir: str | Path, name: str, *, with_checkpoint: bool = True) -> Path | None:
    """The newest run directory of preset `name` under output_dir (by the time stamp in its name), by default
    only among those with a complete checkpoint to resume from."""
    pattern = re.compile(re.escape(name) + r"-(\d{8}-\d{6})(?:-(\d+))?")
    runs = []
    for p in Path(output_dir).expanduser().glob(f"{name}-*"):
        m = pattern.fullmatch(p.name)
        if m and (p / "preset.yaml").is_file() and (not with_checkpoint or latest_checkpoint(p)):
            runs.append(((m.group(1), int(m.group(2) or 1)), p))
    return max(runs, default=(None, None))[1]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint. Checkpoints are staged and renamed when whole (trainer_core.run.checkpoints);
    a folder without trainer_state.json (written last; e.g. from an older version or a copy cut short) is
    passed over for the one before. Only names are read here: resuming checks the files against the checkpoint's
    manifest and passes over a damaged one too (trainer_core.run.resume.choose_checkpoint)."""
    from trainer_core.run.checkpoints import complete_checkpoints

    return (complete_checkpoints(run_dir / "checkpoints") or [None])[-1]


def truncate_metrics_after(paths: RunPaths, step: int) -> None:
    """On resume, drop rows logged after the checkpoint (they will be logged again), so that steps
    stay unique and in order after a crash between checkpoints."""
    for path in (paths.metrics, paths.samples):
        if not path.exists():
            continue
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a half-written last line from a crash
        atomic_write_text(path, "".join(k + "\n" for k in kept))


class RecordingFailed(VlmtuneError):
    """The run's record (events, metrics, samples, summary) could not be written."""


class RunRecorder:
    """Event subscriber that appends to the run's JSON Lines files (one open handle each).

    A write that fails (full disk, quota, a stale mount) is kept in `failure` and `on_failure` is called (the
    engine stops the run there); it never raises, which would only detach it and let the run go on unrecorded."""

    def __init__(self, paths: RunPaths, on_failure: Callable[[], None] | None = None):
        self.paths = paths
        self.on_failure = on_failure
        self.failure: tuple[Path, BaseException] | None = None
        self._lock = threading.Lock()
        self._files: dict[Path, IO[str]] = {}

    def _append(self, path: Path, obj: dict[str, Any]) -> None:
        with self._lock:
            f = self._files.get(path)
            if f is None:
                f = self._files[path] = path.open("a", encoding="utf-8")
            f.write(json.dumps(obj, default=str) + "\n")
            f.flush()

    def __call__(self, event: Event) -> None:
        if self.failure is not None:  # the run is stopping; each later write would fail the same way
            return
        kind, row = encode(event)
        path = self.paths.root / FILES[kind]
        try:
            self._append(path, row)
        except Exception as exc:
            self.failure = (path, exc)
            self.close()
            if self.on_failure is not None:
                self.on_failure()
            return
        if isinstance(event, RunFinished):
            self.close()

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                with contextlib.suppress(OSError):  # its last flush failed: already recorded as the failure
                    f.close()
            self._files.clear()


def recording_failed(root: Path, path: Path, exc: BaseException, step: int) -> RecordingFailed:
    """The run's error when its record could not be written: what, where, and that the checkpoints are kept."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    kept = latest_checkpoint(root)
    kept_text = (f"the checkpoints saved so far are kept (the newest: {kept.name})" if kept
                 else "the checkpoints saved so far are kept (none yet)")
    return RecordingFailed(
        f"could not write the run's record {_record_name(path)} in {root} ({reason}): the run stopped at step "
        f"{step} rather than train on unrecorded; {kept_text} in {root / 'checkpoints'}. Free space or fix the "
        f"folder, then continue with `vlmtune train --resume {root}`.")


def _record_name(path: Path) -> str:
    # an atomic write's temporary file (".summary.json.k3j2.tmp") is named as the file it was for
    m = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", path.name)
    return m.group(1) if m else path.name


def record_error(root: Path, exc: BaseException) -> Path | None:
    """The record file an OSError was about, when it is one of the run folder's own top-level files."""
    name = getattr(exc, "filename", None)
    if not isinstance(exc, OSError) or not name:
        return None
    path = Path(name)
    return path if path.resolve().parent == root.resolve() else None


def write_summary(paths: RunPaths, summary: dict[str, Any]) -> None:
    atomic_write_json(paths.summary, summary)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
