"""Crash-safe checkpoints: the Trainer writes each checkpoint into a staging folder, and only a complete one
is renamed to `checkpoint-N`. A kill, a power cut or a full disk mid-save leaves at most a stale staging
folder (cleared on the next start), never a `checkpoint-N` that looks whole but is not; the older checkpoints
are rotated out only after the new one is in place.

Each checkpoint also holds a manifest, written last before the rename: every file's size and a cheap hash
(sha256 of small files whole, of the first and last MiB of large ones), so that a file damaged after the save
(a copy cut short, a disk error) is found on resume instead of failing deep inside the Trainer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from trainer_core.base.errors import VlmtuneError

STAGING = ".staging"
MANIFEST = "vlmtune-manifest.json"
_MIB = 1 << 20


class CheckpointSaveError(VlmtuneError, RuntimeError):
    """Saving a checkpoint failed (full disk, quota, permissions); the previous one is untouched."""

    def __init__(self, step: int, folder: Path, cause: BaseException, previous: Path | None) -> None:
        self.step, self.folder, self.cause, self.previous = step, folder, cause, previous
        reason = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else type(cause).__name__
        kept = f"the previous checkpoint {previous.name} is intact, so `--resume` goes on from there" if previous \
            else "no earlier checkpoint exists"
        super().__init__(
            f"could not save the checkpoint of step {step} in {folder} ({reason}). Free disk space there "
            f"(`df -h {folder}`) or keep fewer checkpoints (training.save_total_limit); {kept}.")


def complete_checkpoints(folder: Path) -> list[Path]:
    """`checkpoint-N` folders holding the Trainer's state (written last), oldest first."""
    ckpts = [p for p in folder.glob("checkpoint-*")
             if p.is_dir() and p.name[11:].isdigit() and (p / "trainer_state.json").is_file()]
    return sorted(ckpts, key=lambda p: int(p.name[11:]))


def _fingerprint(path: Path, size: int) -> str:
    """sha256 of the whole file up to 2 MiB, else of its first and last MiB: a truncation or an overwritten
    head/tail changes it, and a save of gigabytes is not slowed by reading them back."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= 2 * _MIB:
            h.update(f.read())
        else:
            h.update(f.read(_MIB))
            f.seek(size - _MIB)
            h.update(f.read(_MIB))
    return h.hexdigest()


def write_manifest(checkpoint: Path, step: int) -> None:
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST):
        size = path.stat().st_size
        files[path.relative_to(checkpoint).as_posix()] = {"size": size, "sha256": _fingerprint(path, size)}
    text = json.dumps({"version": 1, "step": step, "hash": "sha256, of the first and last MiB above 2 MiB",
                       "files": files}, indent=1)
    (checkpoint / MANIFEST).write_text(text + "\n", encoding="utf-8")


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it is intact: checked against its manifest, or, for
    one saved before manifests existed, by reading the headers of its weight files."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return _unlisted_problem(checkpoint)
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is unreadable"
    for name, saved in files.items():
        problem = _file_problem(checkpoint / name, name, saved)
        if problem:
            return problem
    return None


def _file_problem(path: Path, name: str, saved: dict[str, Any]) -> str | None:
    if not path.is_file():
        return f"{name} is missing ({saved['size']:,} bytes when saved)"
    size = path.stat().st_size
    if size != saved["size"]:
        return f"{name} is {size:,} bytes, {saved['size']:,} when saved"
    if _fingerprint(path, size) != saved["sha256"]:
        return f"{name} has changed since it was saved (same size, other content)"
    return None


def _unlisted_problem(checkpoint: Path) -> str | None:
    """A checkpoint without a manifest: its safetensors must parse and reach their data, its torch archives
    must end with their zip directory, its trainer state must be JSON."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "trainer_state.json is not readable JSON"
    for path in sorted(checkpoint.rglob("*")):
        name = path.relative_to(checkpoint).as_posix()
        if path.suffix == ".safetensors":
            problem = safetensors_problem(path, name)
        elif path.suffix in (".pt", ".pth", ".bin"):
            problem = torch_archive_problem(path, name)
        else:
            continue
        if problem:
            return problem
    return None


def safetensors_problem(path: Path, name: str) -> str | None:
    """The file's header parses and the tensors it lists lie within the file (what loading it needs first)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 0 or length > size - 8:
            return f"{name} is {size:,} bytes, too short for its safetensors header"
        try:
            header = json.loads(f.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{name} has no valid safetensors header"
    if 8 + length + end > size:
        return f"{name} is {size:,} bytes, its header needs {8 + length + end:,}"
    return None


def torch_archive_problem(path: Path, name: str) -> str | None:
    """torch.save writes a zip archive, whose directory is at the end: a file cut short has none. Files in
    torch's older (not zip) format are not checked."""
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError):
        return f"{name} is cut short ({path.stat().st_size:,} bytes, no zip directory at its end)"


def clear_staging(folder: Path) -> None:
    shutil.rmtree(folder / STAGING, ignore_errors=True)


def with_atomic_checkpoints(trainer_cls: type) -> type:
    """A subclass of a transformers/TRL Trainer whose checkpoints appear only when complete."""

    class AtomicCheckpoints(trainer_cls):  # type: ignore[misc, valid-type]
        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            from transformers.trainer_utils import rotate_checkpoints

            final_root = Path(self.args.output_dir)
            staging = final_root / STAGING
            step = self.state.global_step
            name = f"checkpoint-{step}"
            if self.args.should_save:
                shutil.rmtree(staging / name, ignore_errors=True)
            previous = ([c for c in complete_checkpoints(final_root) if c.name != name] or [None])[-1]
            # The Trainer writes where args.output_dir points, and rotates there: point it at the staging folder
            # (which never holds more than this one checkpoint) for the length of the save.
            self.args.output_dir = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            except Exception as exc:
                if self.args.should_save:
                    shutil.rmtree(staging / name, ignore_errors=True)
                raise CheckpointSaveError(step, final_root, exc, previous) from exc
            finally:
                self.args.output_dir = str(final_root)
            # Under FSDP/DeepSpeed every rank writes its shard: rename only once all have finished.
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                try:
                    write_manifest(staging / name, step)  # after every rank's files, before the rename
                except OSError as exc:
                    shutil.rmtree(staging / name, ignore_errors=True)
                    raise CheckpointSaveError(step, final_root, exc, previous) from exc
                target = final_root / name
                if target.exists():  # saved again at the same step (stop right after a scheduled save)
                    shutil.rmtree(target)
                os.replace(staging / name, target)
                # TRL writes its model card beside the checkpoints, i.e. into the staging folder: move it out.
                if (staging / "README.md").is_file():
                    os.replace(staging / "README.md", final_root / "README.md")
                with contextlib.suppress(OSError):
                    staging.rmdir()  # empty now; a leftover would look like a crash to the user
                rotate_checkpoints(str(final_root), save_total_limit=self.args.save_total_limit)
            self.accelerator.wait_for_everyone()

    AtomicCheckpoints.__name__ = AtomicCheckpoints.__qualname__ = f"Atomic{trainer_cls.__name__}"
    return AtomicCheckpoints
