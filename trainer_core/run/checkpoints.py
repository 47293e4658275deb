"""Crash-safe checkpoints: the Trainer writes each checkpoint into a staging folder, and only a complete one
is renamed to `checkpoint-N`. A kill, a power cut or a full disk mid-save leaves at most a stale staging
folder (cleared on the next start), never a `checkpoint-N` that looks whole but is not; the older checkpoints
are rotated out only after the new one is in place."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from trainer_core.base.errors import VlmtuneError

STAGING = ".staging"


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
