"""The one bridge from a preset (or the wizard's draft of one) to the planner.

`vlmtune plan`, the wizard's Plan step, the fit check before step 1 and `plan --probe-run` all read a preset
here: which model, task, effective batch, max_length, LoRA section and data section are planned, and which
settings the memory model estimates for the preset as written. Keeping the mapping in one place is what
makes a preset opened in the wizard plan exactly as it does on the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from trainer_core.config.presets import (
    DataSection,
    DataSource,
    LoraSection,
    ModelSection,
    Preset,
    TrainingSection,
)
from trainer_core.model.lora_targets import parts_of
from trainer_core.plan.memory import TrainSettings, compute_precision
from trainer_core.plan.planner import PlanOptions, PlanReport, plan_for, text_tokens_within
from trainer_core.plan.probe import MachineInfo
from trainer_core.plan.recommend import Target, precision_for

# A validated Preset, or the wizard's draft: the same sections as a mapping, possibly mid-edit.
PresetLike = Preset | Mapping[str, Any]
_S = TypeVar("_S")


@dataclass(frozen=True)
class PlanInputs:
    """What the planner reads from a preset."""

    model: str
    task: str
    effective_batch: int
    max_length: int | None
    lora: LoraSection
    data: DataSection | None  # None: no data to measure (a draft without a path yet)
    trust_remote_code: bool = False
    options: PlanOptions = PlanOptions()


@dataclass(frozen=True)
class PresetSections:
    """The parts of a preset that set its memory, as typed sections whichever form the preset came in."""

    task: str
    model: ModelSection
    data: DataSection | None
    precision: str
    quantization: str
    lora: LoraSection
    training: TrainingSection


def _section(cls: type[_S], raw: Any) -> _S:
    """A section dataclass from itself or from a draft's mapping (keys it does not know are left out:
    the draft is checked as a whole by preset validation, not here)."""
    if isinstance(raw, cls):
        return raw
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in dict(raw or {}).items() if k in names})


def sections(preset: PresetLike) -> PresetSections:
    if isinstance(preset, Preset):
        return PresetSections(preset.task, preset.model, preset.data, preset.precision, preset.quantization,
                              preset.lora, preset.training)
    data = preset.get("data") or {}
    if not isinstance(data, DataSection):  # a draft's sources are mappings; ones without a path yet are left out
        sources = [_section(DataSource, s) for s in data.get("sources") or [] if isinstance(s, Mapping) and s.get("path")]
        data = {**data, "sources": sources}
    has_data = bool(data.path or data.sources if isinstance(data, DataSection) else data.get("path") or data["sources"])
    return PresetSections(
        task=preset.get("task", "sft"), model=_section(ModelSection, preset.get("model")),
        data=_section(DataSection, data) if has_data else None,
        precision=preset.get("precision", "auto"), quantization=preset.get("quantization", "none"),
        lora=_section(LoraSection, preset.get("lora")), training=_section(TrainingSection, preset.get("training")))


def plan_options(preset: PresetLike, image_max_pixels: int | None = None) -> PlanOptions:
    """The adapter, packing and image-resolution options of `preset` (`image_max_pixels`: plan's flag, which wins)."""
    get = preset.get if isinstance(preset, Mapping) else (lambda k, d=None: getattr(preset, k, d))
    s = sections(preset)
    adapter = str(get("adapter", "lora") or "lora")
    adapter = "none" if adapter == "lora" and not s.lora.enabled else adapter
    section = get(adapter) if adapter in ("prompt_tuning", "prefix_tuning") else None
    value = (section.get if isinstance(section, Mapping) else (lambda k, d=None: getattr(section, k, d)))
    return PlanOptions(
        adapter=adapter, virtual_tokens=int(value("num_virtual_tokens", 20) or 20) if section is not None else 0,
        prefix_projection=bool(value("prefix_projection", False)) if section is not None else False,
        padding_free=bool(getattr(s.training, "padding_free", False)), packing=bool(getattr(s.training, "packing", False)),
        image_max_pixels=image_max_pixels or (s.data.image_max_pixels if s.data is not None else None))


def plan_inputs(preset: PresetLike, *, data: str | None = None, effective_batch: int | None = None,
                max_length: int | None = None, trust_remote_code: bool = False,
                image_max_pixels: int | None = None) -> PlanInputs:
    """The planner's inputs for `preset`; the keyword arguments are `vlmtune plan`'s overrides
    (--data replaces data.path only: the section's format, columns, subset, split and max_samples stay)."""
    s = sections(preset)
    t = s.training
    section = s.data
    if data:
        section = (dataclasses.replace(section, path=data, sources=[]) if section is not None
                   else DataSection(path=data))
    return PlanInputs(
        model=s.model.name_or_path, task=s.task,
        effective_batch=max(1, effective_batch or int(t.micro_batch_size) * int(t.gradient_accumulation_steps)),
        max_length=max_length or t.max_length, lora=s.lora, data=section,
        trust_remote_code=bool(s.model.trust_remote_code or trust_remote_code),
        options=plan_options(preset, image_max_pixels))


def plan_report(inputs: PlanInputs, *, gpu_mib: int | None = None, machine: MachineInfo | None = None,
                gpu_index: int = 0, **loaded: Any) -> PlanReport:
    """`loaded`: config, processor and stats a run already holds (see plan_for), so none is read twice."""
    data = inputs.data
    if data is not None and data.sources and loaded.get("stats") is None:
        data = _longest_source(data, inputs.task)
    return plan_for(inputs.model, inputs.task, data_section=data, gpu_mib=gpu_mib, machine=machine,
                    gpu_index=gpu_index, effective_batch=inputs.effective_batch, max_length=inputs.max_length,
                    trust_remote_code=inputs.trust_remote_code, lora_r=inputs.lora.r,
                    lora_dropout=inputs.lora.dropout, lora=inputs.lora, options=inputs.options, **loaded)


def _longest_source(data: DataSection, task: str) -> DataSection:
    """The source a mix is planned from: the one with images and the longest rows (p95, estimated from its
    first rows), since memory must hold the largest micro-batch the mix can draw."""
    from trainer_core.plan.planner import measure_data

    each = data.per_source()
    sizes = []
    for section in each:
        stats, _why = measure_data(section, task)  # a hub set out of reach counts as short; plan_for says so
        sizes.append((stats.images_per_row > 0, stats.total_tokens.p95) if stats else (False, 0))
    return each[max(range(len(each)), key=sizes.__getitem__)]


def plan_preset_report(preset: PresetLike, *, gpu_mib: int | None = None, machine: MachineInfo | None = None,
                       gpu_index: int = 0, data: str | None = None, effective_batch: int | None = None,
                       max_length: int | None = None, trust_remote_code: bool = False,
                       image_max_pixels: int | None = None, **loaded: Any) -> PlanReport:
    """The plan for `preset` on a GPU of `gpu_mib`, else on `machine` (probed when neither is given)."""
    inputs = plan_inputs(preset, data=data, effective_batch=effective_batch, max_length=max_length,
                         trust_remote_code=trust_remote_code, image_max_pixels=image_max_pixels)
    return plan_report(inputs, gpu_mib=gpu_mib, machine=machine, gpu_index=gpu_index, **loaded)


def planned_precision(precision: str, quantization: str, target: Target) -> str:
    """The precision a run computes in on `target`: auto chosen by the target (bf16 / fp16 / fp32), then
    the quantized-compute rule of the memory model (4-bit computes in bf16, never fp32)."""
    if precision == "auto":
        precision = precision_for(target)[0]
    return compute_precision(precision, quantization)


def settings_for(preset: PresetLike, report: PlanReport, *, precision: str | None = None) -> TrainSettings:
    """The memory model's settings for `preset` as written (its precision, quantization, LoRA, trained parts, batch,
    checkpointing and optimizer), with the sequence shape measured by `report`. `precision` is a precision
    already resolved elsewhere (the loaded model's), used instead of the preset's."""
    s = sections(preset)
    t, lora, goal = s.training, s.lora, report.goal
    parts = parts_of(preset)
    text = goal.text_tokens if not t.max_length else text_tokens_within(
        goal.text_tokens, int(t.max_length), goal.images_per_sample, goal.image_tokens_per_image)
    answer = None if goal.answer_tokens is None else min(goal.answer_tokens, text)
    return dataclasses.replace(
        report.plan.settings, task=s.task,
        precision=planned_precision(precision or s.precision, s.quantization, report.plan.target),
        quantization=s.quantization, lora=bool(lora.enabled), lora_r=int(lora.r),
        lora_targets=lora.target_modules, lora_dropout=float(lora.dropout),
        train_vision_tower=bool(lora.train_vision_tower), micro_batch_size=int(t.micro_batch_size),
        # Which parts train, as the engine trains them (model/freeze.py, lora_targets.select_targets).
        freeze_vision_tower=not parts.vision, freeze_multi_modal_projector=not parts.connector,
        freeze_language_model=not parts.language,
        gradient_accumulation_steps=int(t.gradient_accumulation_steps), text_tokens=text, answer_tokens=answer,
        gradient_checkpointing=bool(t.gradient_checkpointing), optimizer=t.optimizer,
        adapter=goal.adapter if lora.enabled else "none", use_dora=bool(getattr(lora, "use_dora", False)),
        virtual_tokens=goal.virtual_tokens, prefix_projection=goal.prefix_projection)
