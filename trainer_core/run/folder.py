"""The run directory: its layout, and the subscriber that records the event stream in it.

<output_dir>/<name>-<YYYYmmdd-HHMMSS>/
  preset.yaml      the resolved preset            summary.json   status, steps, final loss, ... (atomic)
  metrics.jsonl    one object per step / eval     samples.jsonl  generations during training
  events.jsonl     every other event              adapter/       PEFT adapter + processor (atomic)
  checkpoints/     resumable trainer checkpoints
Lines are flushed as they are written, so `vlmtune monitor` (and `tail -f`) can follow a live run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from pathlib import Path
from typing import IO, Any

from trainer_core.base.atomic import atomic_write_json, atomic_write_text
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


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():  # two runs started in the same second
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def newest_run(output_dir: str | Path, name: str, *, with_checkpoint: bool = True) -> Path | None:
    """The newest run directory of preset `name` under output_dir (by the time stamp in its name), by default
    only among those with a complete checkpoint to resume from."""
    pattern = re.compile(re.escape(name) + r"-(\d{8}-\d{6})(?:-(\d+))?")
    runs = []
    for p in Path(output_dir).glob(f"{name}-*"):
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


class RunRecorder:
    """Event subscriber that appends to the run's JSON Lines files (one open handle each)."""

    def __init__(self, paths: RunPaths):
        self.paths = paths
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
        kind, row = encode(event)
        self._append(self.paths.root / FILES[kind], row)
        if isinstance(event, RunFinished):
            self.close()

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


def write_summary(paths: RunPaths, summary: dict[str, Any]) -> None:
    atomic_write_json(paths.summary, summary)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
