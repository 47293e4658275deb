"""Presets: the whole description of a run, as frozen dataclasses loaded from YAML.

Precedence lives in one place (`load_preset`): dataclass defaults < the YAML file < `--set` overrides.
Validation collects every problem with its dotted path, so a user fixes a file in one pass.
Only the standard library and PyYAML are imported here: the CLI validates presets without torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from trainer_core.base.errors import EXIT_USAGE, VlmtuneError
from trainer_core.base.limits import DEFAULT_MAX_IMAGE_PIXELS

SCHEMA_VERSION = 1

Task = Literal["sft", "dpo"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Quantization = Literal["none", "8bit", "4bit"]
Strategy = Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
# What trains: a LoRA adapter, PEFT's prompt or prefix tuning (text models), or every weight (none).
Adapter = Literal["lora", "prompt_tuning", "prefix_tuning", "none"]
ReportTo = Literal["none", "tensorboard", "trackio", "wandb", "mlflow"]


@dataclass(frozen=True)
class ModelSection:
    # A local directory or a hub id.
    name_or_path: str
    # Runs Python code shipped with the model: only for repositories you trust.
    trust_remote_code: bool = False
    revision: str | None = None
    # "sdpa" is fast and exact; "eager" is the fallback for architectures without SDPA.
    attn_implementation: str | None = None


@dataclass(frozen=True)
class DataSource:
    """One entry of `data.sources`: its keys mean what they mean in `data`, for this dataset alone."""

    path: str
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    subset: str | None = None
    split: str = "train"
    max_samples: int | None = None
    image_dir: str | None = None
    # Share of the mix: weight / the sum of weights (rows are drawn at random, seeded). No weight on any
    # source = the sources one after another, each once.
    weight: float | None = None


# Keys of `data` that describe one dataset: with `data.sources` each source sets its own.
PER_SOURCE_KEYS = ("path", "format", "columns", "subset", "split", "max_samples", "image_dir")


@dataclass(frozen=True)
class DataSection:
    # A file (.json, .jsonl, .csv, .parquet), a folder, or a hub dataset id. Empty when `sources` lists several.
    path: str = ""
    # "auto" detects the format from the columns; see trainer_core.data.formats for the names.
    format: str = "auto"
    # Maps the standard role (e.g. "prompt", "image") to the dataset's column name.
    columns: dict[str, str] = field(default_factory=dict)
    # Share of rows held out for evaluation (0 = no eval split).
    eval_fraction: float = 0.0
    # Use only the first N rows (handy for a quick try).
    max_samples: int | None = None
    # Drop rows that fail validation instead of refusing to train.
    skip_invalid: bool = False
    subset: str | None = None
    split: str = "train"
    # Folder that relative image paths are relative to (default: the data file's folder).
    image_dir: str | None = None
    # Rows with a larger image (width x height) are problems: each training step decodes images whole.
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    # Resolution for training (LLaMA-Factory's name): the processor downsizes larger images to about this many
    # pixels, so fewer image tokens (the first lever against VLM out-of-memory). None = the processor's own.
    # Not max_image_pixels above, which refuses oversized (decompression-bomb) files outright.
    image_max_pixels: int | None = None
    # Several datasets in one run, each with its own format and columns, mixed by `weight`; the keys above
    # other than PER_SOURCE_KEYS (eval_fraction, skip_invalid, the pixel limits) apply to all of them.
    sources: list[DataSource] = field(default_factory=list)

    def per_source(self) -> list[DataSection]:
        """One single-dataset section per source, the shared keys copied in; [self] without sources."""
        if not self.sources:
            return [self]
        return [dataclasses.replace(self, sources=[], **{k: getattr(s, k) for k in PER_SOURCE_KEYS})
                for s in self.sources]


@dataclass(frozen=True)
class LoraSection:
    # false = full fine-tuning, the same as `adapter: none` (every weight trains: needs far more memory).
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "auto" = every linear layer of the language model; or a list of module names / a regex string.
    target_modules: str | list[str] = "auto"
    # With target_modules: auto, also adapt the vision encoder's and the connector's linear layers (the same as
    # freeze_vision_tower and freeze_multi_modal_projector: false, which say it for full fine-tuning too).
    train_vision_tower: bool = False
    modules_to_save: list[str] | None = None
    # DoRA (PEFT's use_dora): LoRA plus a trained magnitude per output feature; often better at low r, and more
    # activation memory (the planner counts it).
    use_dora: bool = False
    # rsLoRA (PEFT's use_rslora): scale by alpha/sqrt(r) instead of alpha/r, steadier at large r.
    use_rslora: bool = False
    # PEFT's init_lora_weights: true (B = 0, the default), false, gaussian, pissa, pissa_niter_N, olora, orthogonal.
    init_lora_weights: bool | str = True


@dataclass(frozen=True)
class PromptTuningSection:
    """`adapter: prompt_tuning` (text models): trains only `num_virtual_tokens` embeddings put before each input."""

    num_virtual_tokens: int = 20
    # Start the virtual tokens from this text's embeddings (PEFT's prompt_tuning_init TEXT); None = random.
    prompt_tuning_init_text: str | None = None


@dataclass(frozen=True)
class PrefixTuningSection:
    """`adapter: prefix_tuning` (text models): trains keys and values for `num_virtual_tokens` in every layer."""

    num_virtual_tokens: int = 20
    # Train the prefix through a 2-layer MLP (PEFT's prefix_projection): many more parameters, steadier.
    prefix_projection: bool = False


@dataclass(frozen=True)
class TrainingSection:
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2e-4
    # -1 = run for `epochs`; a positive number overrides epochs.
    max_steps: int = -1
    epochs: float = 1.0
    # true trades ~30% speed for much less activation memory.
    gradient_checkpointing: bool = False
    max_length: int | None = 1024
    warmup_ratio: float = 0.03
    # Any transformers SchedulerType: linear, cosine, constant, constant_with_warmup, ...
    lr_scheduler: str = "cosine"
    # Any transformers OptimizerNames: adamw_torch, adamw_8bit, paged_adamw_8bit, adafactor, ...
    # TRL's default: the fused AdamW (one kernel per step instead of one per tensor; same states, same results)
    optimizer: str = "adamw_torch_fused"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    save_steps: int = 100
    # Keep only the newest N checkpoints (None = keep all).
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    seed: int = 42
    # Experiment tracker (TRL's report_to): none, tensorboard, trackio, wandb or mlflow; its files go in the
    # run folder, and W&B runs offline when it cannot be reached.
    report_to: ReportTo = "none"
    # Liger's Triton kernels (TRL's use_liger_kernel; CUDA GPUs only, `pip install 'vlmtune[speed]'`).
    use_liger_kernel: bool = False
    # Text data only (TRL's names): batches without pad tokens / several samples packed into max_length.
    padding_free: bool = False
    packing: bool = False
    # Extra SFTConfig / DPOConfig arguments by their TRL names, passed through as they are.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DpoSection:
    beta: float = 0.1
    # Any TRL DPO loss: sigmoid, ipo, hinge, robust, ...
    loss_type: str = "sigmoid"


@dataclass(frozen=True)
class SamplePrompt:
    text: str
    # Path to an image, relative to the preset file.
    image: str | None = None


@dataclass(frozen=True)
class SamplesSection:
    # Generate answers for `prompts` every N optimizer steps (0 = only at the end, if prompts are given).
    every_steps: int = 0
    max_new_tokens: int = 32
    prompts: list[SamplePrompt] = field(default_factory=list)


@dataclass(frozen=True)
class EvalSection:
    # Score the task metric (`vlmtune eval`'s) on the first `rows` held-out rows every N optimizer steps
    # (0 = never): each time costs generating `rows` answers; summary.json then names the best step.
    every_steps: int = 0
    rows: int = 16
    # exact_match | relaxed_accuracy | anls | token_f1 | rouge_l (SFT); preference_accuracy (DPO); None = by the answers
    metric: str | None = None
    max_new_tokens: int = 32


@dataclass(frozen=True)
class DistributedSection:
    # All processes across all machines (accelerate's meaning); usually one per GPU. 1 = a single process.
    num_processes: int = 1
    num_machines: int = 1
    # This machine's place among num_machines (0 is the main one, which writes the run folder).
    machine_rank: int = 0
    # The main machine's address, reachable from every machine (required with num_machines > 1).
    main_process_ip: str | None = None
    main_process_port: int = 29500
    # ddp copies the model to every GPU; fsdp and deepspeed-zero3 shard it (bigger models); zero2 shards
    # optimizer states and gradients.
    strategy: Strategy = "ddp"


@dataclass(frozen=True)
class Preset:
    name: str
    task: Task
    model: ModelSection
    data: DataSection
    precision: Precision = "auto"
    # 4bit = NF4 + double quantization with bf16/fp16 compute (QLoRA).
    quantization: Quantization = "none"
    # lora | prompt_tuning | prefix_tuning | none (full fine-tuning); each method has its section below.
    # Unset: lora, or none with lora.enabled: false (so a switch of lora.enabled alone still decides).
    adapter: Adapter | None = None
    # Which parts of a VLM train, by LLaMA-Factory's names and defaults, flat as in its YAML (its lines paste
    # unchanged). Beside `adapter`, not under lora or model: they say what trains for LoRA (its auto targets are the
    # unfrozen parts' linear layers) and for full fine-tuning (requires_grad) alike.
    freeze_vision_tower: bool = True
    # The connector (projector) between the vision tower and the language model.
    freeze_multi_modal_projector: bool = True
    freeze_language_model: bool = False
    lora: LoraSection = field(default_factory=LoraSection)
    prompt_tuning: PromptTuningSection = field(default_factory=PromptTuningSection)
    prefix_tuning: PrefixTuningSection = field(default_factory=PrefixTuningSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    dpo: DpoSection = field(default_factory=DpoSection)
    samples: SamplesSection = field(default_factory=SamplesSection)
    eval: EvalSection = field(default_factory=EvalSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    # Runs go to <output_dir>/<name>-<timestamp>/.
    output_dir: str = "runs"
    schema_version: int = SCHEMA_VERSION

    @property
    def adapter_type(self) -> str:
        """What trains: `adapter` as written, else lora or none as lora.enabled says."""
        if self.adapter is None:
            return "lora" if self.lora.enabled else "none"
        return self.adapter

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def replace(self, **changes: Any) -> Preset:
        return dataclasses.replace(self, **changes)


# TRL / transformers names accepted as synonyms, so a TRL user's habits work unchanged.
ALIASES: dict[str, dict[str, str]] = {
    "training": {
        "per_device_train_batch_size": "micro_batch_size",
        "num_train_epochs": "epochs",
        "lr_scheduler_type": "lr_scheduler",
        "optim": "optimizer",
    },
    "lora": {"lora_alpha": "alpha", "lora_dropout": "dropout"},
    "prompt_tuning": {"init_text": "prompt_tuning_init_text"},
}


@dataclass(frozen=True)
class PresetProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PresetError(VlmtuneError, ValueError):
    exit_code = EXIT_USAGE

    """A preset that cannot be used, with every problem found and where it is."""

    def __init__(self, problems: list[PresetProblem], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f"preset {source}" if source else "preset"
        lines = [f"{where} is not valid:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "text", int: "an integer", float: "a number", bool: "true/false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


class _Invalid(Exception):
    pass


def _convert(value: Any, tp: Any, path: str, problems: list[PresetProblem]) -> Any:
    """Convert a YAML value to `tp`, appending problems; raises _Invalid when the value is unusable."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        return _convert_choice(value, typing.get_args(tp), path, problems)
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, path, problems)
    if origin is list:
        return _convert_list(value, tp, path, problems)
    if origin is dict:
        return _convert_mapping(value, tp, path, problems)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    return _convert_scalar(value, tp, path, problems)


def _convert_choice(value: Any, allowed: tuple[Any, ...], path: str, problems: list[PresetProblem]) -> Any:
    if value in allowed:
        return value
    hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    problems.append(PresetProblem(path, f"{value!r} is not one of {', '.join(map(repr, allowed))}{extra}"))
    raise _Invalid


def _convert_union(value: Any, tp: Any, path: str, problems: list[PresetProblem]) -> Any:
    options = typing.get_args(tp)
    if value is None and type(None) in options:
        return None
    choices = [o for o in options if o is not type(None)]
    if len(choices) == 1 and typing.get_origin(choices[0]) is Literal:  # an optional choice: its own message
        return _convert_choice(value, typing.get_args(choices[0]), path, problems)
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(value, option, path, [])  # the first option that takes it; its problems are moot
        except _Invalid:
            continue
    problems.append(PresetProblem(path, f"expected {_type_name(tp)}, got {_describe(value)}"))
    raise _Invalid


def _convert_list(value: Any, tp: Any, path: str, problems: list[PresetProblem]) -> list[Any]:
    (item_tp,) = typing.get_args(tp)
    if not isinstance(value, list):
        problems.append(PresetProblem(path, f"expected {_type_name(tp)}, got {_describe(value)}"))
        raise _Invalid
    out, failed = [], False
    for i, item in enumerate(value):
        try:
            out.append(_convert(item, item_tp, f"{path}[{i}]", problems))
        except _Invalid:
            failed = True  # go on: every bad item is reported, not only the first
    if failed:
        raise _Invalid
    return out


def _convert_mapping(value: Any, tp: Any, path: str, problems: list[PresetProblem]) -> dict[str, Any]:
    _, val_tp = typing.get_args(tp)
    if not isinstance(value, dict):
        problems.append(PresetProblem(path, f"expected a mapping, got {_describe(value)}"))
        raise _Invalid
    if val_tp is str:
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        if bad:
            problems.append(PresetProblem(f"{path}.{bad[0]}", f"expected text, got {_describe(value[bad[0]])}"))
            raise _Invalid
    return {str(k): v for k, v in value.items()}


def _convert_scalar(value: Any, tp: Any, path: str, problems: list[PresetProblem]) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and number and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if tp is float:
        if number and math.isfinite(value):
            return float(value)
        # YAML 1.1 reads `2e-4` (no dot) as text; accept it as the number the user meant.
        if isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                parsed = None
            if parsed is not None and math.isfinite(parsed):
                return parsed
    if tp is str and (isinstance(value, str) or number):
        return value if isinstance(value, str) else str(value)
    problems.append(PresetProblem(path, f"expected {_type_name(tp)}, got {_describe(value)}"))
    raise _Invalid


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {int: "an integer", float: "a number", str: "text"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def _build(cls: type, raw: Any, path: str, problems: list[PresetProblem]) -> Any:
    if not isinstance(raw, dict):
        problems.append(PresetProblem(path, f"expected a mapping, got {_describe(raw)}"))
        raise _Invalid
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    section = path.rsplit(".", 1)[-1] if path else ""
    aliases = ALIASES.get(section, {}) if cls is not Preset else {}
    kwargs: dict[str, Any] = {}
    seen_as: dict[str, str] = {}
    failed = False
    for key, value in raw.items():
        name = aliases.get(key, key)
        where = f"{path}.{key}" if path else str(key)
        if name not in fields:
            problems.append(PresetProblem(where, _unknown_key_message(str(key), list(fields) + list(aliases))))
            failed = True
            continue
        if name in seen_as:
            problems.append(PresetProblem(where, f"given twice (as {seen_as[name]!r} and as {key!r}); keep one"))
            failed = True
            continue
        seen_as[name] = key
        try:
            kwargs[name] = _convert(value, hints[name], where, problems)
        except _Invalid:
            failed = True
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in seen_as:  # present but invalid: its own problem is already listed
            where = f"{path}.{name}" if path else name
            problems.append(PresetProblem(where, f"required field is missing (expected {_type_name(hints[name])})"))
            failed = True
    if failed:
        raise _Invalid
    return cls(**kwargs)


def _unknown_key_message(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return f"unknown key; {hint}"


# PEFT's init_lora_weights values vlmtune can run (tests check them against PEFT's own list), and the ones PEFT
# takes that need a data pass or a config of their own first.
INIT_LORA_WEIGHTS = ("gaussian", "pissa", "olora", "orthogonal")
INIT_NEEDS_SETUP = ("eva", "corda", "loftq", "lora_ga", "mica")
# Optional packages by feature: (import name, pip extra). Checked without importing them (find_spec is cheap).
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _option_problems(p: Preset) -> list[PresetProblem]:
    """The training options of LLaMA-Factory / axolotl (adapters, DoRA, trackers, Liger, packing): what cannot
    work is refused here, so `vlmtune check` says so before any weights load."""
    out: list[PresetProblem] = []
    init = p.lora.init_lora_weights
    if isinstance(init, str) and p.adapter_type == "lora":
        if init in INIT_NEEDS_SETUP:
            out.append(PresetProblem("lora.init_lora_weights", f"{init!r} needs PEFT's own setup first (a data pass "
                                     f"or its {init}_config), which vlmtune does not run; use one of "
                                     f"true, false, {', '.join(INIT_LORA_WEIGHTS)}, pissa_niter_N"))
        elif init not in INIT_LORA_WEIGHTS and not re.fullmatch(r"pissa_niter_[1-9][0-9]*", init):
            close = difflib.get_close_matches(init, list(INIT_LORA_WEIGHTS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append(PresetProblem("lora.init_lora_weights", f"{init!r} is not a PEFT initialisation; {hint}valid: "
                                     f"true, false, {', '.join(INIT_LORA_WEIGHTS)}, pissa_niter_N (e.g. pissa_niter_4)"))
        elif init.startswith("pissa") and p.quantization != "none":
            out.append(PresetProblem("lora.init_lora_weights", "PiSSA decomposes the full-precision weights, so it "
                                     "cannot start from 4/8-bit ones; use quantization: none, or another init"))
    if p.data.image_max_pixels is not None and p.data.image_max_pixels < 28 * 28:
        out.append(PresetProblem("data.image_max_pixels", "must be at least 784 (28 x 28 pixels), e.g. 147456 for "
                                 "384 x 384; leave it out for the processor's own resolution"))
    for section in ("prompt_tuning", "prefix_tuning"):
        if getattr(p, section).num_virtual_tokens <= 0:
            out.append(PresetProblem(f"{section}.num_virtual_tokens", "must be a positive integer (8-100 is usual)"))
    if p.adapter in ("lora", "prompt_tuning", "prefix_tuning") and not p.lora.enabled:
        out.append(PresetProblem("lora.enabled", f"false means full fine-tuning (adapter: none), which contradicts "
                                 f"adapter: {p.adapter}; remove lora.enabled"))
    t = p.training
    if p.adapter_type == "prefix_tuning" and t.gradient_checkpointing:
        out.append(PresetProblem("training.gradient_checkpointing", "cannot go with adapter: prefix_tuning (PEFT's "
                                 "prefix keys and values do not survive the recomputation: the first step fails); "
                                 "set it to false, or use adapter: lora or prompt_tuning"))
    package = TRACKER_PACKAGES.get(t.report_to)
    if package and not _installed(package):
        out.append(PresetProblem("training.report_to", f"{t.report_to} is not installed; install it with "
                                 f"`pip install 'vlmtune[{t.report_to}]'`, or set training.report_to: none"))
    if t.use_liger_kernel and not _installed("liger_kernel"):
        out.append(PresetProblem("training.use_liger_kernel", "Liger kernels are not installed (the liger-kernel "
                                 "package is missing); on a machine with a CUDA GPU run `pip install "
                                 "'vlmtune[speed]'`, or set training.use_liger_kernel: false"))
    if t.packing and p.task != "sft":
        out.append(PresetProblem("training.packing", f"only for SFT: TRL's {p.task.upper()} trainer keeps each "
                                 "prompt with its answers; set it to false (training.padding_free works there)"))
    if t.packing and t.max_length is None:
        out.append(PresetProblem("training.packing", "packs samples up to training.max_length, which is unset; "
                                 "set training.max_length (e.g. 1024)"))
    return out + _parts_problems(p)


# The trained-parts fields and their defaults (LLaMA-Factory's).
FREEZE_DEFAULTS = {"freeze_vision_tower": True, "freeze_multi_modal_projector": True, "freeze_language_model": False}


def _parts_problems(p: Preset) -> list[PresetProblem]:
    """Which parts train (freeze_*): a choice that trains nothing, or that LoRA could not follow."""
    out = []
    changed = [k for k, v in FREEZE_DEFAULTS.items() if getattr(p, k) != v]
    vision = not p.freeze_vision_tower or p.lora.train_vision_tower
    connector = not p.freeze_multi_modal_projector or p.lora.train_vision_tower
    if p.adapter_type in ("lora", "none") and not (vision or connector or not p.freeze_language_model):
        out.append(PresetProblem("freeze_language_model", "with the vision tower and the connector frozen too, "
                                 "nothing would train; set freeze_language_model: false, or unfreeze "
                                 "freeze_vision_tower / freeze_multi_modal_projector"))
    elif changed and p.adapter_type == "lora" and p.lora.target_modules != "auto":
        # Explicit targets name their layers whatever the parts say: the freeze fields would silently do nothing.
        out.append(PresetProblem(changed[0], "chooses LoRA's layers only with lora.target_modules: auto, and "
                                 "lora.target_modules names its own; set lora.target_modules: auto, or leave "
                                 f"{', '.join(changed)} out"))
    return out


def _resolve_adapter(p: Preset) -> Preset:
    """`adapter: none` means `lora.enabled: false` (the older spelling, which the engine reads). lora.enabled stays
    true for prompt/prefix tuning: it reads "an adapter is trained and saved"."""
    if p.adapter == "none" and p.lora.enabled:
        return dataclasses.replace(p, lora=dataclasses.replace(p.lora, enabled=False))
    return p


def _check_values(p: Preset) -> list[PresetProblem]:
    """Range checks that types alone cannot express."""
    out: list[PresetProblem] = []

    def need(cond: bool, path: str, msg: str) -> None:
        if not cond:
            out.append(PresetProblem(path, msg))

    need(bool(p.name.strip()), "name", "must not be empty")
    need("/" not in p.name and "\\" not in p.name, "name", "must not contain a path separator (it names a folder)")
    need(bool(p.model.name_or_path.strip()), "model.name_or_path", "must not be empty")
    if p.data.sources:
        out.extend(_sources_problems(p.data))
    else:
        need(bool(p.data.path.strip()), "data.path", "must not be empty (a file, a folder or a hub dataset id; "
                                                     "or list several under data.sources)")
    need(0.0 <= p.data.eval_fraction < 1.0, "data.eval_fraction", "must be at least 0 and below 1")
    need(p.data.max_samples is None or p.data.max_samples > 0, "data.max_samples", "must be positive")
    need(p.data.max_image_pixels > 0, "data.max_image_pixels", "must be positive (width x height; 40000000 is "
                                                               "the default)")
    need(p.lora.r > 0, "lora.r", "must be a positive integer (8-64 is usual)")
    need(p.lora.alpha > 0, "lora.alpha", "must be positive (often 2 x r)")
    need(0.0 <= p.lora.dropout < 1.0, "lora.dropout", "must be at least 0 and below 1")
    t = p.training
    need(t.micro_batch_size > 0, "training.micro_batch_size", "must be a positive integer")
    need(t.gradient_accumulation_steps > 0, "training.gradient_accumulation_steps", "must be a positive integer")
    need(t.learning_rate > 0, "training.learning_rate", "must be positive (2e-4 is usual for LoRA)")
    need(t.max_steps == -1 or t.max_steps > 0, "training.max_steps", "must be positive, or -1 to use epochs")
    need(t.epochs > 0, "training.epochs", "must be positive")
    need(t.max_length is None or t.max_length > 0, "training.max_length", "must be positive")
    need(0.0 <= t.warmup_ratio < 1.0, "training.warmup_ratio", "must be at least 0 and below 1")
    need(t.logging_steps > 0, "training.logging_steps", "must be a positive integer")
    need(t.save_steps > 0, "training.save_steps", "must be a positive integer")
    need(p.dpo.beta > 0, "dpo.beta", "must be positive (0.1 is usual)")
    need(p.samples.every_steps >= 0, "samples.every_steps", "must be 0 (off) or a positive integer")
    need(p.samples.max_new_tokens > 0, "samples.max_new_tokens", "must be a positive integer")
    d = p.distributed
    need(d.num_processes > 0, "distributed.num_processes", "must be a positive integer (one per GPU is usual)")
    need(d.num_machines > 0, "distributed.num_machines", "must be a positive integer")
    need(0 <= d.machine_rank < max(1, d.num_machines), "distributed.machine_rank",
         f"must be between 0 and num_machines - 1 ({d.num_machines - 1})")
    need(d.num_processes % max(1, d.num_machines) == 0, "distributed.num_processes",
         f"must be a multiple of num_machines ({d.num_machines}): it counts the processes of all machines")
    need(d.num_machines == 1 or bool(d.main_process_ip), "distributed.main_process_ip",
         "is required with several machines: the main machine's address, reachable from the others")
    need(0 < d.main_process_port < 65536, "distributed.main_process_port", "must be a port number (1-65535)")
    if p.quantization != "none" and not p.lora.enabled:
        out.append(PresetProblem("quantization", "quantized weights cannot be trained directly; enable lora "
                                 "(QLoRA) or set quantization: none for full fine-tuning"))
    if p.precision == "fp16" and not p.lora.enabled:
        out.append(PresetProblem("precision", "full fine-tuning in fp16 fails (fp16 weights cannot be unscaled "
                                              "by the gradient scaler); use bf16, fp32, or LoRA"))
    if p.precision == "fp32" and p.quantization == "4bit":
        out.append(PresetProblem("precision", "4-bit (QLoRA) computes in bf16 or fp16; use precision: auto"))
    return out + _option_problems(p)


def _sources_problems(data: DataSection) -> list[PresetProblem]:
    """`data.sources`: each source usable, weights all given or none, no per-dataset key left in `data`."""
    out: list[PresetProblem] = []
    defaults = DataSection()
    for key in PER_SOURCE_KEYS:
        if key == "path" and data.path:
            out.append(PresetProblem("data.path", "give data.path or data.sources, not both: with several "
                                                  "datasets, list each one's path under data.sources"))
        elif getattr(data, key) != getattr(defaults, key):
            out.append(PresetProblem(f"data.{key}", f"with data.sources, set {key} on each source (e.g. "
                                                    f"data.sources[0].{key}) and remove data.{key}"))
    for i, s in enumerate(data.sources):
        where = f"data.sources[{i}]"
        if not s.path.strip():
            out.append(PresetProblem(f"{where}.path", "must not be empty (a file, a folder or a hub dataset id)"))
        if s.max_samples is not None and s.max_samples <= 0:
            out.append(PresetProblem(f"{where}.max_samples", "must be positive"))
        if s.weight is not None and not (math.isfinite(s.weight) and s.weight > 0):
            out.append(PresetProblem(f"{where}.weight", "must be a positive number (its share of the mix is "
                                                        "weight / the sum of the weights)"))
    weighted = [s.weight is not None for s in data.sources]
    if any(weighted) and not all(weighted):
        missing = ", ".join(f"data.sources[{i}]" for i, w in enumerate(weighted) if not w)
        out.append(PresetProblem("data.sources", f"give every source a weight (to mix them) or none (to use "
                                                 f"them one after another); no weight: {missing}"))
    return out


def preset_from_dict(raw: Any, source: str | None = None) -> Preset:
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"{_describe(raw)}"
        raise PresetError([PresetProblem("", f"the YAML must be a mapping of sections (name:, task:, model:, ...), "
                                             f"but it is {kind}")], source)
    secrets = secret_problems(raw)
    if secrets:
        raise PresetError(secrets, source)
    problems: list[PresetProblem] = []
    try:
        preset = _build(Preset, raw, "", problems)
    except _Invalid:
        raise PresetError(problems, source) from None
    preset = _resolve_adapter(preset)
    problems = _check_values(preset)
    if problems:
        raise PresetError(problems, source)
    return preset


# ---------------------------------------------------------------- YAML and secrets


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases: nested aliases expand exponentially ("billion laughs": a few hundred bytes
    take minutes and gigabytes) and an alias inside its own anchor recurses until RecursionError."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in presets; write the value out in full",
                event.start_mark)
        return super().compose_node(parent, index)


def load_yaml_text(text: str) -> Any:
    """YAML as yaml.safe_load reads it, but refusing aliases (the error names the line)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# Key names that hold credentials. A vocabulary token (pad_token, eos_token, ...) is not one.
_SECRET_NAME = re.compile(r"(^|_)(token|passwd|api_?key|access_?key|private_?key|credentials?)$|secret|password")
_VOCAB_TOKEN = re.compile(r"(^|_)(pad|eos|bos|unk|sep|cls|mask|image|video|audio|boi|eoi|start|end|special)_token$")


def _is_secret_key(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return bool(_SECRET_NAME.search(name)) and not _VOCAB_TOKEN.search(name)


def _secret_env_var(path: str) -> str:
    lowered = path.lower()
    if "wandb" in lowered:
        return "WANDB_API_KEY"
    if "token" in lowered or "hub" in lowered or "hf" in lowered:
        return "HF_TOKEN"
    return "the environment variable the library reads (e.g. HF_TOKEN, WANDB_API_KEY)"


def secret_problems(raw: Any, path: str = "") -> list[PresetProblem]:
    """Every credential-looking field with a value: a preset is copied into each run folder and checkpoint
    (and often shared), so a token there leaks; the libraries read it from the environment instead."""
    found: list[PresetProblem] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            where = f"{path}.{key}" if path else str(key)
            if _is_secret_key(str(key)) and isinstance(value, str) and value.strip():
                found.append(PresetProblem(where, f"looks like a secret; presets are copied into every run "
                                                  f"folder and checkpoint, so remove it and set "
                                                  f"{_secret_env_var(where)} in the environment instead"))
            else:
                found += secret_problems(value, where)
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            found += secret_problems(item, f"{path}[{i}]")
    return found


# ---------------------------------------------------------------- overrides and files


def parse_override(text: str) -> tuple[list[str], Any]:
    """`training.max_steps=20` -> (["training", "max_steps"], 20); the value is read as YAML."""
    if "=" not in text:
        raise PresetError([PresetProblem("--set", f"{text!r} is not key=value (e.g. training.max_steps=20)")])
    key, _, value_text = text.partition("=")
    keys = [k for k in key.strip().split(".")]
    if not all(keys):
        raise PresetError([PresetProblem("--set", f"{key!r} is not a dotted key (e.g. training.max_steps)")])
    try:
        value = load_yaml_text(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set` overrides to the raw mapping; the result is validated like the file itself."""
    raw = _deep_copy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            elif not isinstance(child, dict):
                where = ".".join(keys[: i + 1])
                raise PresetError([PresetProblem(where, f"is not a section, so --set {text} cannot go inside it")])
            node = child
        # The override wins over the file whichever spelling (TRL alias or ours) the file used.
        section_aliases = ALIASES.get(keys[-2], {}) if len(keys) >= 2 else {}
        canonical = section_aliases.get(keys[-1], keys[-1])
        for spelling in [canonical, *[a for a, c in section_aliases.items() if c == canonical]]:
            node.pop(spelling, None)
        node[keys[-1]] = value
    return raw


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def read_preset_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise PresetError([PresetProblem("", f"file not found: {path} (presets live in presets/*.yaml)")], str(path))
    if path.is_dir():
        raise PresetError([PresetProblem("", f"{path} is a folder; give the preset's .yaml file")], str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PresetError([PresetProblem("", "the file is not text (is it really a YAML preset?)")], str(path)) from None
    try:
        raw = load_yaml_text(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PresetError([PresetProblem("", f"not valid YAML: {where}{problem}")], str(path)) from None
    if not isinstance(raw, dict):
        preset_from_dict(raw, str(path))  # raises the "must be a mapping" error
    return raw


def load_preset(path: str | Path, overrides: list[str] | None = None) -> Preset:
    """Load, override and validate a preset. Relative data/image paths stay relative to the preset's folder."""
    raw = read_preset_yaml(path)
    raw = apply_overrides(raw, overrides or [])
    preset = preset_from_dict(raw, str(path))
    return resolve_paths(preset, Path(path).resolve().parent)


def resolve_paths(preset: Preset, base: Path) -> Preset:
    """Make local paths absolute against `base` (the preset's folder) when they exist there."""

    def fix(p: str | None) -> str | None:
        if not p or Path(p).is_absolute():  # "": data.path beside data.sources, not the preset's folder
            return p
        candidate = base / p
        return str(candidate.resolve()) if candidate.exists() else p

    model = dataclasses.replace(preset.model, name_or_path=fix(preset.model.name_or_path))
    sources = [dataclasses.replace(s, path=fix(s.path), image_dir=fix(s.image_dir)) for s in preset.data.sources]
    data = dataclasses.replace(preset.data, path=fix(preset.data.path), image_dir=fix(preset.data.image_dir),
                               sources=sources)
    prompts = [dataclasses.replace(sp, image=fix(sp.image)) for sp in preset.samples.prompts]
    samples = dataclasses.replace(preset.samples, prompts=prompts)
    # output_dir stays as written: relative to the working directory, as in TRL.
    return dataclasses.replace(preset, model=model, data=data, samples=samples)


def save_preset(preset: Preset, path: str | Path) -> Path:
    from trainer_core.base.atomic import atomic_write_text

    return atomic_write_text(Path(path), preset.to_yaml())
