"""`vlmtune plan`: probe (or a given GPU size) + model inspection + data statistics -> a Plan, as text or
JSON, and as a preset. The pieces stay pure; this module only wires them and formats the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_core.data.stats import DataStats
from trainer_core.model.image_tokens import DEFAULT_IMAGE_SIZE, ImageCost, image_cost, processor_image_cost
from trainer_core.model.info import ModelInfo
from trainer_core.plan.memory import GIB
from trainer_core.plan.probe import MachineInfo
from trainer_core.plan.recommend import Goal, Plan, Target, gib, recommend

DEFAULT_TEXT_TOKENS = 512  # per sample when there is no data to measure
TEMPLATE_TOKENS = 32  # role markers and special tokens a chat template adds around the text


@dataclass(frozen=True)
class PlanOptions:
    """The preset's training options beyond LoRA's section that change memory or tokens."""

    adapter: str = "lora"  # lora | prompt_tuning | prefix_tuning | none
    virtual_tokens: int = 0
    prefix_projection: bool = False
    # padding_free: batches hold the samples' own tokens, not the longest sample's times the batch;
    # packing: every row is filled to max_length
    padding_free: bool = False
    packing: bool = False
    image_max_pixels: int | None = None  # data.image_max_pixels / `plan --image-max-pixels`


@dataclass(frozen=True)
class PlanReport:
    model: ModelInfo
    stats: DataStats | None
    image: ImageCost | None
    goal: Goal
    plan: Plan
    # why the data was not measured (e.g. a hub dataset offline); None when it was, or when none was given
    data_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        # the estimate's count: the planned targets, vision setting and rank (or every weight without LoRA)
        trainable = self.plan.estimate.trainable_params
        return {
            "model": m.name,
            "params": {**m.params, "total": m.total_params, "trainable": trainable},
            **self.plan.to_dict(),
            "data": self.stats.to_dict() if self.stats else None,
            "data_note": self.data_note,
            "image_tokens_per_image": self.image.tokens if self.image else 0,
            "seq_len": self.plan.estimate.seq_len,
        }


def target_for(machine: MachineInfo | None, gpu_mib: int | None = None, gpu_index: int = 0) -> Target:
    """The GPU to plan for: a size the user typed, else the probed GPU's free memory, else the CPU's RAM."""
    if gpu_mib is not None:
        return Target(f"a {gpu_mib / 1024:.0f} GiB GPU", gpu_mib * 2**20, "cuda", True)
    if machine is not None and machine.gpus:
        gpu = machine.gpus[min(gpu_index, len(machine.gpus) - 1)]
        free = gpu.free_bytes if gpu.free_bytes is not None else (gpu.total_bytes or 0)
        return Target(f"GPU {gpu.index} ({gpu.name})", free, "cuda", gpu.bf16)
    if machine is not None and machine.backend == "mps":
        return Target("Apple MPS", int((machine.ram.get("available_bytes") or 0) * 0.7), "mps", False)
    ram = (machine.ram.get("available_bytes") if machine else None) or 8 * GIB
    return Target("the CPU (no GPU found)", int(ram), "cpu", False)


def text_tokens_within(text_tokens: int, max_length: int, images_per_sample: float,
                       image_tokens_per_image: int) -> int:
    """Text tokens per sample once truncation at max_length (which counts image tokens too) applies."""
    image_part = round(images_per_sample * image_tokens_per_image)
    return max(16, min(text_tokens, int(max_length) - image_part))


def goal_for(info: ModelInfo, config: Any, task: str, stats: DataStats | None, *, effective_batch: int = 16,
             max_length: int | None = None, lora_r: int = 16, lora_dropout: float = 0.05,
             processor: Any = None, lora: Any = None, options: PlanOptions | None = None,
             default_text: int = DEFAULT_TEXT_TOKENS) -> tuple[Goal, ImageCost | None]:
    """`default_text`: tokens per sample when there are no statistics (max_length when data was given but
    could not be read: the longest sample the run allows)."""
    image = None
    images_per_sample = 0.0
    options = options or PlanOptions()
    if info.is_vlm:
        width = stats.image_width.p95 if stats and stats.image_width.max else None
        height = stats.image_height.p95 if stats and stats.image_height.max else None
        if processor is not None and options.image_max_pixels:
            from trainer_core.model.loading import apply_image_max_pixels

            apply_image_max_pixels(processor, config, options.image_max_pixels)
        exact = processor_image_cost(processor, width, height) if processor is not None else None
        image = image_cost(config, width, height, image_max_pixels=options.image_max_pixels)
        if exact is not None:  # the processor's count; the encoder's patches per tile come from the config
            per_tile = image.patches // max(1, image.tiles)
            image = ImageCost(exact.tokens, exact.tiles * per_tile if per_tile else exact.patches, exact.how,
                              exact.tiles)
        images_per_sample = stats.images_per_row if stats else 1.0
    if stats and options.padding_free and not info.is_vlm:
        # Without padding a batch holds its samples' own tokens: a long-tail sample no longer sets every row.
        text = stats.total_tokens.p95 + TEMPLATE_TOKENS
        answer = stats.answer_tokens.p95 + 2
    elif stats:
        # Batches pad to their longest sample, so the peak comes from the longest one, not a typical one.
        text = stats.total_tokens.max + TEMPLATE_TOKENS
        answer = stats.answer_tokens.max + 2
    else:
        text, answer = default_text, DEFAULT_TEXT_TOKENS // 4
    if options.packing and max_length and not info.is_vlm:
        text = int(max_length)  # each row is filled up to max_length with several samples
    if max_length:
        text = text_tokens_within(text, max_length, images_per_sample, image.tokens if image else 0)
        answer = min(answer, text)
    if task == "dpo" and stats and not max_length:
        text = stats.prompt_tokens.max + stats.answer_tokens.max + TEMPLATE_TOKENS
    goal = Goal(task=task, effective_batch=effective_batch, text_tokens=text, answer_tokens=answer,
                images_per_sample=images_per_sample, image_tokens_per_image=image.tokens if image else 0,
                vision_patches_per_image=image.patches if image else 0, lora_r=lora_r, lora_dropout=lora_dropout,
                adapter=options.adapter, virtual_tokens=options.virtual_tokens,
                prefix_projection=options.prefix_projection,
                **({"lora": lora.enabled, "lora_targets": lora.target_modules, "use_dora": lora.use_dora,
                    "train_vision_tower": lora.train_vision_tower} if lora is not None else {}))
    return goal, image


def plan_for(model: str, task: str, *, data: str | None = None, gpu_mib: int | None = None,
             effective_batch: int = 16, max_length: int | None = None, machine: MachineInfo | None = None,
             trust_remote_code: bool = False, data_section: Any = None, lora_r: int = 16,
             lora_dropout: float = 0.05, lora: Any = None, gpu_index: int = 0, config: Any = None,
             processor: Any = None, stats: DataStats | None = None, options: PlanOptions | None = None) -> PlanReport:
    """`lora` is a preset's LoraSection: its mode, targets and vision setting are planned as they are.
    A preset plans through trainer_core.plan.from_preset, which fills these from its sections.
    `config`, `processor` and `stats` are what a run already loaded (the fit check): given, none is read again."""
    from trainer_core.model.info import inspect_model, resolve_config

    if config is None:
        config, _ = resolve_config(model, trust_remote_code=trust_remote_code)
    info = inspect_model(model, config=config, trust_remote_code=trust_remote_code)
    if processor is None:
        processor = _local_processing_class(model, info.is_vlm)
    note = None
    if stats is None and (data or data_section is not None):
        from trainer_core.config.presets import DataSection

        stats, note = measure_data(data_section or DataSection(path=data), task,
                                   getattr(processor, "tokenizer", processor))
    if machine is None and gpu_mib is None:
        from trainer_core.plan.probe import probe

        machine = probe()
    unmeasured = note is not None and bool(max_length)
    goal, image = goal_for(info, config, task, stats, effective_batch=effective_batch, max_length=max_length,
                           lora_r=lora_r, lora_dropout=lora_dropout, lora=lora, options=options,
                           processor=processor if info.is_vlm else None,
                           default_text=int(max_length) if unmeasured else DEFAULT_TEXT_TOKENS)
    plan = recommend(info, target_for(machine, gpu_mib, gpu_index), goal)
    plan = _offer_lower_resolution(plan, info, config, goal, stats, options or PlanOptions())
    if note is not None:
        note = _unmeasured_note(note, max_length, image)
    return PlanReport(info, stats, image, goal, plan, note)


# data.image_max_pixels offered when memory is tight: 768x768, 512x512 and 384x384 (one SmolVLM tile).
LOWER_RESOLUTIONS = (589824, 262144, 147456)


def _offer_lower_resolution(plan: Any, info: ModelInfo, config: Any, goal: Goal, stats: DataStats | None,
                            options: PlanOptions) -> Any:
    """Where memory is tight (it does not fit, or only with 4-bit or checkpointing), the first lever of a VLM:
    fewer pixels per image, with its token and memory effect, beside the plan's own choices."""
    from dataclasses import replace

    from trainer_core.model.image_tokens import has_resolution_knob
    from trainer_core.plan.memory import estimate_memory

    s = plan.settings
    tight = not plan.fits or s.quantization != "none" or s.gradient_checkpointing
    if not (info.is_vlm and tight and goal.image_tokens_per_image and has_resolution_knob(config)):
        return plan
    width = stats.image_width.p95 if stats and stats.image_width.max else None
    height = stats.image_height.p95 if stats and stats.image_height.max else None
    offers, seen = [], set()
    for pixels in LOWER_RESOLUTIONS:
        if options.image_max_pixels and pixels >= options.image_max_pixels:
            continue
        cost = image_cost(config, width, height, image_max_pixels=pixels)
        if cost.tokens >= goal.image_tokens_per_image or cost.tokens in seen:
            continue
        seen.add(cost.tokens)
        est = estimate_memory(info, replace(s, image_tokens_per_image=cost.tokens,
                                            vision_patches_per_image=cost.patches))
        offers.append(f"data.image_max_pixels: {pixels} (about {int(pixels ** 0.5)}x{int(pixels ** 0.5)} px): "
                      f"{cost.tokens} image tokens per image instead of {goal.image_tokens_per_image}, needs "
                      f"{gib(est.required)} instead of {gib(plan.estimate.required)} with the settings above")
    return replace(plan, suggestions=[*plan.suggestions, *offers]) if offers else plan


def measure_data(section: Any, task: str, tokenizer: Any = None) -> tuple[DataStats | None, str | None]:
    """The data's statistics, or (None, why) when a hub dataset cannot be reached: the plan then goes on
    without it. Any other problem (a missing local file, a bad format) is the user's to fix and raises."""
    from trainer_core.data.problems import DataError
    from trainer_core.data.stats import dataset_stats
    from trainer_core.model.hub import hub_reachable

    try:
        return dataset_stats(section, task, tokenizer), None
    except DataError as exc:
        if not _names_a_hub_dataset(section.path) or hub_reachable():
            raise
        why = exc.problems[0].message if exc.problems else str(exc)
        return None, why.rstrip(".")


def _names_a_hub_dataset(path: str) -> bool:
    """org/name that is no local path and no data file (a mistyped data/train.jsonl stays an error)."""
    from trainer_core.data.sources import FILE_KINDS

    p = Path(path).expanduser()
    return not p.exists() and p.suffix.lower() not in FILE_KINDS and len(path.strip("/").split("/")) == 2


def _unmeasured_note(why: str, max_length: int | None, image: ImageCost | None) -> str:
    length = (f"training.max_length ({max_length} tokens per sample)" if max_length
              else f"{DEFAULT_TEXT_TOKENS} text tokens per sample (no training.max_length)")
    w, h = DEFAULT_IMAGE_SIZE
    images = (f" and the processor's default image size ({w}x{h} px, {image.tokens} tokens per image)"
              if image and image.tokens else "")
    return f"the data was not measured: {why}. Planned from {length}{images}."


def _local_processing_class(model: str, is_vlm: bool):
    """The model's processor/tokenizer when it is on disk (hub models planned offline have none: token
    lengths are then estimated and image tokens computed from the config)."""
    if not Path(model).expanduser().exists():
        return None
    from trainer_core.model.loading import load_processing_class

    try:
        return load_processing_class(model, is_vlm)[0]
    except Exception:  # a model folder without tokenizer files still plans, with estimates
        return None


def format_plan(report: PlanReport) -> str:
    m, p = report.model, report.plan
    lines = [f"model      {m.name} ({m.architecture}, {m.total_params / 1e9:.2f}B parameters"
             f"{', from the offline registry' if m.source == 'registry' else ''})"]
    parts = ", ".join(f"{k} {v / 1e6:,.0f}M" for k, v in m.params.items() if v)
    lines.append(f"           {parts}")
    if report.data_note:
        lines.append(f"data       {report.data_note}")
    if report.stats:
        s = report.stats
        lines.append(f"data       {s.rows} rows ({s.format}); tokens p50/p95/max {s.total_tokens.p50}/"
                     f"{s.total_tokens.p95}/{s.total_tokens.max} ({s.token_source})"
                     + (f"; {s.images_per_row:.1f} images/row" if s.images_per_row else ""))
    if report.image:
        lines.append(f"images     {report.image.tokens} tokens per image ({report.image.how})")
    lines.append(f"sequence   {p.estimate.seq_len} tokens per sample")
    lines.append(f"target     {p.target.name}: {gib(p.target.available_bytes)} available")
    lines.append("")
    lines.append("memory (estimated peak)")
    for name, value in p.estimate.components.items():
        if value:
            lines.append(f"  {name:20} {gib(value):>10}")
    lines.append(f"  {'peak allocated':20} {gib(p.estimate.peak_allocated):>10}")
    lines.append(f"  {'needed free':20} {gib(p.estimate.required):>10}  (+ fragmentation and CUDA context)")
    lines.append(f"  {'available':20} {gib(p.target.available_bytes):>10}  -> "
                 f"{'fits' if p.fits else 'DOES NOT FIT'}")
    lines.append("")
    lines.append("recommendation")
    for r in p.reasons:
        lines.append(f"  {r}")
    for s in p.suggestions:
        lines.append(f"  - {s}")
    return "\n".join(lines)


def plan_preset(report: PlanReport, base: dict[str, Any] | None, name: str, model: str,
                data: str | None) -> dict[str, Any]:
    """The plan as a preset mapping: the base preset (if any) with the recommended fields laid over it."""
    out: dict[str, Any] = dict(base or {"name": name, "model": {"name_or_path": model},
                                        "data": {"path": data or "CHANGE-ME.jsonl"}})
    fields = report.plan.preset_fields()
    base_lora = (base or {}).get("lora") or {}
    if not fields["lora"]["enabled"] or base_lora.get("r", 16) == fields["lora"]["r"]:
        fields["lora"] = {}  # keep the user's LoRA section when the plan did not change the rank
    for key, value in fields.items():
        if isinstance(value, dict):
            out[key] = {**(out.get(key) or {}), **value}
        else:
            out[key] = value
    return out
