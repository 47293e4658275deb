"""Resume that a user can trust: checked before any weights load, so that a wrong preset or a damaged
checkpoint is named in one sentence instead of failing deep inside PEFT or safetensors.

- The preset must describe the run's model and adapter: fields that shape the weights, the optimizer state or
  the checkpoint's layout are compared with the run's preset.yaml; the rest (steps, learning rate, ...) may change.
- The checkpoint must be as it was saved (trainer_core.run.checkpoints keeps a manifest in each): a damaged one
  is skipped for the newest intact one before it, and the skip is logged and kept in summary.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer_core.base.errors import EXIT_USAGE, VlmtuneError
from trainer_core.config.presets import Preset, PresetError, preset_from_dict
from trainer_core.events import EventStream, LogMessage
from trainer_core.run.checkpoints import checkpoint_problem, complete_checkpoints

# Fields a resumed run cannot change, and what in the run depends on each.
FIXED: dict[str, str] = {
    "task": "the run's objective and the trainer it saved",
    "model.name_or_path": "the base weights the adapter was trained on",
    "model.revision": "the base weights the adapter was trained on",
    "quantization": "how the base weights are stored under the adapter",
    "precision": "the dtype the weights and optimizer state were saved in",
    "lora.enabled": "LoRA or full fine-tuning: what the checkpoint holds",
    "lora.r": "the adapter's shape",
    "lora.alpha": "the adapter's scale",
    "lora.target_modules": "the layers the adapter holds",
    "lora.train_vision_tower": "the layers the adapter holds",
    "lora.modules_to_save": "the layers the checkpoint holds",
    "adapter": "the kind of adapter the checkpoint holds",
    "lora.use_dora": "the adapter's shape (DoRA keeps a magnitude per output feature)",
    "freeze_vision_tower": "the layers the checkpoint trains",
    "freeze_multi_modal_projector": "the layers the checkpoint trains",
    "freeze_language_model": "the layers the checkpoint trains",
    "training.optimizer": "the optimizer state in the checkpoint",
    "distributed.strategy": "the layout of the checkpoint's files",
}
# What people change on resume most often, named in the refusal so that its reader knows what is left.
MAY_CHANGE = ("training.max_steps", "training.epochs", "training.learning_rate", "training.save_steps",
              "training.logging_steps", "training.eval_steps", "training.max_length", "samples", "output_dir")


class ResumeRefused(VlmtuneError, ValueError):
    """The preset given to resume a run does not describe the run's model or adapter."""

    exit_code = EXIT_USAGE

    def __init__(self, run_dir: Path, differences: list[str]) -> None:
        self.run_dir, self.differences = run_dir, differences
        super().__init__(
            f"cannot resume {run_dir} with this preset: {'; '.join(differences)}. Resume with the run's own "
            f"preset (`vlmtune train --resume {run_dir}`, with --set for what may change) or start a new run. "
            f"May change on resume: {', '.join(MAY_CHANGE)}, and every other field but {', '.join(FIXED)}.")


class NoIntactCheckpoint(VlmtuneError, FileNotFoundError):
    """Every checkpoint of the run is damaged."""

    def __init__(self, run_dir: Path, skipped: list[dict[str, str]]) -> None:
        self.run_dir, self.skipped = run_dir, skipped
        named = "; ".join(f"{s['checkpoint']}: {s['reason']}" for s in skipped)
        super().__init__(f"no checkpoint of {run_dir} is intact, so it cannot be resumed ({named}). Start a new "
                         f"run; {run_dir / 'adapter'} holds the weights of the last finished or stopped session, "
                         f"if there was one.")


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: Path
    # {"checkpoint": "checkpoint-6", "reason": "..."} for each damaged checkpoint newer than `checkpoint`.
    skipped: list[dict[str, str]] = field(default_factory=list)
    # "training.max_steps: 6 -> 9" for each field that differs from the run's preset (all allowed).
    changes: list[str] = field(default_factory=list)


def prepare_resume(preset: Preset, run_dir: Path, events: EventStream) -> ResumePoint:
    """Check the preset against the run and pick the checkpoint to resume from; says what it skipped."""
    changes = check_preset(preset, run_dir)
    point = choose_checkpoint(run_dir)
    for s in point.skipped:
        events.emit(LogMessage(level="warning", message=f"{s['checkpoint']} is damaged ({s['reason']}): "
                                                        f"resuming from {point.checkpoint.name} instead"))
    if changes:
        events.emit(LogMessage(level="info", message=f"resuming with changes: {'; '.join(changes)}"))
    return ResumePoint(point.checkpoint, point.skipped, changes)


def choose_checkpoint(run_dir: Path) -> ResumePoint:
    """The newest checkpoint that is as it was saved, with the damaged ones passed over on the way."""
    checkpoints = complete_checkpoints(Path(run_dir) / "checkpoints")
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to resume from (checkpoints/ is empty)")
    skipped = []
    for checkpoint in reversed(checkpoints):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return ResumePoint(checkpoint, skipped)
        skipped.append({"checkpoint": checkpoint.name, "reason": problem})
    raise NoIntactCheckpoint(Path(run_dir), skipped)


# Fields added after runs were already being saved (absent from an older run's preset.yaml).
NEWER = {"adapter", "lora.use_dora", "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model"}


def check_preset(preset: Preset, run_dir: Path) -> list[str]:
    """Raise ResumeRefused when `preset` changes a FIXED field of the run; else the allowed changes, as text.
    A run without preset.yaml has nothing to compare against (and no checkpoint either: the engine says so)."""
    saved = saved_preset(Path(run_dir))
    if saved is None:
        return []
    here, there = _flat(preset.to_dict()), _flat(saved)
    lora_off = not here.get("lora.enabled", True) and not there.get("lora.enabled", True)
    refused, changes = [], []
    for key in sorted(set(here) | set(there), key=_order(here)):
        a, b = here.get(key), there.get(key)
        if key in NEWER and key not in there:
            continue  # a run saved before the field existed: it trained as the field's default does
        if _same(key, a, b) or (lora_off and key.startswith("lora.") and key != "lora.enabled"):
            continue
        if key in FIXED:
            refused.append(f"{key} is {_show(a)} here and {_show(b)} in the run ({FIXED[key]})")
        else:
            changes.append(f"{key}: {_show(b)} -> {_show(a)}")
    if refused:
        raise ResumeRefused(Path(run_dir), refused)
    return changes


def saved_preset(run_dir: Path) -> dict[str, Any] | None:
    """The run's preset.yaml as a full mapping (defaults filled in for a file from an older version)."""
    try:
        raw = yaml.safe_load((run_dir / "preset.yaml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise VlmtuneError(f"cannot read {run_dir / 'preset.yaml'} to check the preset against the run: "
                           f"{str(exc).splitlines()[0]}") from None
    try:
        return preset_from_dict(raw, str(run_dir / "preset.yaml")).to_dict()
    except PresetError:
        return raw if isinstance(raw, dict) else {}  # compare what is there


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """Sections one level deep: {"lora": {"r": 16}} -> {"lora.r": 16}; mappings inside (extra) stay values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key not in ("name", "task"):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _order(here: dict[str, Any]):  # noqa: ANN202
    keys = list(here)
    return lambda k: (keys.index(k) if k in here else len(keys), k)  # the preset's own order


# Optimizers whose saved states are the same tensors: one resumes from the other's checkpoint.
_SAME_STATE = ({"adamw_torch", "adamw_torch_fused"},)


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key == "training.optimizer" and any({a, b} <= group for group in _SAME_STATE):
        return True
    if key == "model.name_or_path" and isinstance(a, str) and isinstance(b, str):
        # The same local folder named two ways (relative here, absolute in the run's preset.yaml).
        pa, pb = Path(a).expanduser(), Path(b).expanduser()
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    return False


def _show(value: Any) -> str:
    """As a preset or --set writes it: 4, true, "auto", ["q_proj"]."""
    if value is None:
        return "unset"
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else json.dumps(value)
