"""The wizard's state: a preset being drafted plus what the engine found on the way (machine, model, data,
plan). Plain data and calls into trainer_core; no widgets here, so it is testable without a terminal."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer_core.config.presets import Preset, PresetError, preset_from_dict, read_preset_yaml, resolve_paths

STEPS = ("start", "machine", "model", "data", "plan", "review")
STEP_TITLES = {"start": "Start", "machine": "Machine", "model": "Model", "data": "Task & data", "plan": "Plan",
               "review": "Review"}


def blank_draft() -> dict[str, Any]:
    return {
        "name": "my-run",
        "task": "sft",
        "model": {"name_or_path": "", "trust_remote_code": False},
        "data": {"path": "", "format": "auto", "columns": {}, "eval_fraction": 0.05, "skip_invalid": False},
        "precision": "auto",
        "quantization": "none",
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "auto"},
        "training": {"micro_batch_size": 1, "gradient_accumulation_steps": 16, "learning_rate": 2e-4,
                     "max_steps": -1, "epochs": 1.0, "gradient_checkpointing": False, "max_length": 1024,
                     "logging_steps": 1, "save_steps": 100},
        "dpo": {"beta": 0.1, "loss_type": "sigmoid"},
        # what trains of a VLM (LLaMA-Factory's defaults): the switches show these, not an empty "off"
        "freeze_vision_tower": True, "freeze_multi_modal_projector": True, "freeze_language_model": False,
        "samples": {"every_steps": 0, "prompts": []},
        "output_dir": "runs",
    }


@dataclass
class WizardState:
    draft: dict[str, Any] = field(default_factory=blank_draft)
    source: Path | None = None  # the preset file this draft came from
    machine: Any = None  # trainer_core.plan.probe.MachineInfo
    gpu_index: int = 0
    gpu_mib: int | None = None  # plan for a GPU of this size instead of the probed one
    model_info: Any = None  # trainer_core.model.info.ModelInfo
    data_report: Any = None  # trainer_core.data.check.CheckReport
    plan: Any = None  # trainer_core.plan.planner.PlanReport
    # Draft paths the user chose (an opened preset's fields, an edit, an applied change): the recommendation
    # is shown beside these, never written over them.
    owned: set[str] = field(default_factory=set)

    def load_preset_file(self, path: Path) -> None:
        """Fill the draft from a preset file (validated; local paths made absolute)."""
        raw = read_preset_yaml(path)
        preset = resolve_paths(preset_from_dict(raw, str(path)), Path(path).resolve().parent)
        self.draft = _merge(blank_draft(), preset.to_dict())
        self.source = Path(path)
        self.model_info = self.data_report = self.plan = None
        self.owned = set(_paths(preset.to_dict()))

    def set(self, dotted: str, value: Any) -> None:
        node = self.draft
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.draft
        for k in dotted.split("."):
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

    def preset(self) -> Preset:
        """The draft as a validated Preset; raises PresetError naming every bad field."""
        return preset_from_dict(copy.deepcopy(self.draft))

    def yaml_text(self) -> str:
        try:
            return self.preset().to_yaml()
        except PresetError:
            return yaml.safe_dump(self.draft, sort_keys=False)

    def data_blocks_next(self) -> str | None:
        r = self.data_report
        if r is None:
            return "check the dataset first"
        if r.valid_rows == 0:
            return "the dataset has no usable rows"
        if r.problems and not self.get("data.skip_invalid"):
            return f"{len(r.problems)} rows have problems: fix them, or tick 'skip invalid rows'"
        return None


def edited_yaml(state: WizardState, text: str) -> set[str]:
    """Take a preset typed as YAML into the draft; returns the paths that changed. Raises PresetError (naming
    the line or field) while it is not a valid preset; the draft is untouched until it is."""
    from trainer_core.config.presets import PresetProblem

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "the YAML"
        raise PresetError([PresetProblem(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]) \
            from None
    if not isinstance(raw, dict):
        raise PresetError([PresetProblem("(top)", "a preset is a mapping of fields (name:, task:, model:, ...)")])
    new = _merge(blank_draft(), preset_from_dict(copy.deepcopy(raw)).to_dict())
    old = {p: state.get(p) for p in _paths(state.draft)}
    changed = {p for p in _paths(new) if old.get(p) != _get(new, p)}
    if not changed:
        return changed
    state.draft = new
    state.owned |= changed
    # What the model, data and plan steps found no longer holds once their inputs change: they look again.
    if any(p.startswith("model.") for p in changed):
        state.model_info = state.data_report = state.plan = None
    elif any(p.startswith("data.") or p == "task" for p in changed):
        state.data_report = state.plan = None
    return changed


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for k in dotted.split("."):
        node = node.get(k) if isinstance(node, dict) else None
    return node


def _paths(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _paths(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def find_presets(*folders: Path) -> list[Path]:
    seen: dict[Path, None] = {}
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml")):
                seen.setdefault(p.resolve(), None)
    return list(seen)


def find_runs(*folders: Path, limit: int = 10) -> list[tuple[Path, dict[str, Any]]]:
    from trainer_core.run.folder import read_summary

    runs = []
    for folder in folders:
        if folder.is_dir():
            for d in folder.iterdir():
                s = read_summary(d) if d.is_dir() else None
                if s:
                    runs.append((d, s))
    runs.sort(key=lambda r: r[1].get("started", 0), reverse=True)
    return runs[:limit]
