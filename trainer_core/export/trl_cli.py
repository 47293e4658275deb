"""A preset as a config for TRL's own command line (`trl sft --config FILE`, `trl dpo --config FILE`).

The run then happens outside vlmtune with the same model, data, LoRA and training values: the data is
exported once (already converted to TRL's format by the engine's own `prepare_dataset`) as parquet, and
every value goes through the same decisions as the engine (precision, quantization, LoRA targets,
training.extra checks). Keys are TRL 1.16's: ScriptArguments, SFTConfig/DPOConfig and ModelConfig share
one flat YAML mapping. An unknown key would not fail in `trl`: its CLI hands leftover keys to
`accelerate launch`, so every key written here is checked against those dataclasses first.

torch, transformers, datasets and trl are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from trainer_core.base.errors import UsageError
from trainer_core.base.safe_text import one_line
from trainer_core.config.presets import Preset, PresetError, PresetProblem

# The engine's precision names as TRL's ModelConfig.dtype spells them.
TRL_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Names that hold credentials: never written to a file that may be shared (HF_TOKEN does the job).
SECRET_KEYS = frozenset({"hub_token", "token", "use_auth_token"})
# training.extra keys the engine folds into its checkpointing setting; written from the resolved args.
CHECKPOINTING_KEYS = frozenset({"gradient_checkpointing", "activation_checkpointing",
                                "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"})
TRAIN_FILE = "train.parquet"
# TRL's scripts evaluate on ScriptArguments.dataset_test_split, "test" by default.
TEST_FILE = "test.parquet"
# Says that vlmtune created the export folder, so a later export may write into it again.
EXPORT_MARKER = ".vlmtune-export"
# Everything an export writes (relative to its folder): nothing else there is ever replaced or removed.
EXPORT_FILES = ("preset.yaml", "trl-sft.yaml", "trl-dpo.yaml", "accelerate.yaml", "launch.sh",
                f"data/{TRAIN_FILE}", f"data/{TEST_FILE}")


class ExportFolderError(UsageError):
    """The export folder holds the user's own files, which an export would overwrite or mix with."""


@dataclass(frozen=True)
class TrlCliConfig:
    command: Literal["sft", "dpo"]
    # Ready for yaml.safe_dump: plain str/int/float/bool/None, lists and dicts.
    values: dict[str, Any]
    # What could not carry over exactly, and why.
    notes: list[str]


# ---------------------------------------------------------------- public API


def trl_cli_config(preset: Preset, dataset_dir: str | Path) -> TrlCliConfig:
    """The TRL CLI values for `preset`, reading its data from `dataset_dir` (as written by export_dataset).

    Whether there is an eval split is read from `dataset_dir` when it exists, else predicted from
    data.eval_fraction. Reads the model's config.json only (no weights).
    """
    dataset_dir = Path(dataset_dir)
    has_eval = (dataset_dir / TEST_FILE).exists() if dataset_dir.is_dir() else preset.data.eval_fraction > 0
    return _build(preset, dataset_dir, has_eval)


def export_dataset(preset: Preset, out_dir: str | Path) -> Path:
    """Write the preset's data, converted to TRL's format, to `out_dir/data/` (train.parquet [+ test.parquet])."""
    path, _ = _export_dataset(preset, claim_export_dir(out_dir))
    return path


def claim_export_dir(out_dir: str | Path, *, force: bool = False) -> Path:
    """Make sure an export may write into `out_dir`, and create it (with its marker) when missing or empty.

    Allowed: a missing or empty folder, or one an export created (it has EXPORT_MARKER). With `force`, any
    folder, where only EXPORT_FILES are replaced. Never allowed: a data/ folder holding other files, since
    TRL loads every data file of that folder as the dataset.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportFolderError(f"--out {out_dir} is a file; give a folder (it is created if missing)")
    entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / EXPORT_MARKER).write_text("written by vlmtune export-config; it may write here again\n",
                                             encoding="utf-8")
    elif not (out_dir / EXPORT_MARKER).is_file() and not force:
        raise ExportFolderError(
            f"--out {out_dir} already holds files vlmtune did not put there ({_listing(entries)}); an export "
            "would overwrite or mix with them. Export into a new or empty folder, or add --force to replace "
            f"only the files an export writes ({', '.join(EXPORT_FILES)}); nothing else is changed or removed")
    _check_data_folder(out_dir / "data")
    return out_dir


def _listing(entries: list[Path], shown: int = 4) -> str:
    names = [one_line(p.name) + ("/" if p.is_dir() else "") for p in entries[:shown]]
    more = f" and {len(entries) - shown} more" if len(entries) > shown else ""
    return ", ".join(names) + more


def _check_data_folder(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise ExportFolderError(f"{data_dir} is a file; the exported data goes into a data/ folder there")
    if not data_dir.is_dir():
        return
    others = [p for p in sorted(data_dir.iterdir())
              if p.name not in (TRAIN_FILE, TEST_FILE) and not p.name.startswith(".")]
    if others:
        raise ExportFolderError(
            f"{data_dir} holds other files ({_listing(others)}): TRL would load them as part of the exported "
            "data, and vlmtune does not remove what it did not write. Export into a new or empty folder")


def write_trl_config(preset: Preset, out_dir: str | Path, *, force: bool = False) -> tuple[Path, TrlCliConfig]:
    """Export the dataset and write `out_dir/trl-<sft|dpo>.yaml`; returns the YAML's path and its content.

    `out_dir` must be one claim_export_dir accepts (`force` as there); only EXPORT_FILES are written in it.
    """
    from trainer_core.base.atomic import atomic_write_text

    # Cheap checks first: a typo in the preset should not wait for a long data export.
    _validated_args(preset, has_eval=False)
    out_dir = claim_export_dir(out_dir, force=force)
    data_dir, prepared = _export_dataset(preset, out_dir)
    config = _build(preset, data_dir, has_eval=prepared.eval is not None)
    if prepared.skipped:
        config = dataclasses.replace(config, notes=[
            *config.notes, f"data.skip_invalid: {len(prepared.skipped)} invalid rows were left out of the "
                           f"exported data, as vlmtune would (first: {prepared.skipped[0]})"])
    path = out_dir / f"trl-{config.command}.yaml"
    atomic_write_text(path, _yaml_text(preset, config, path))
    if _is_distributed(preset):
        from trainer_core.run.distributed import write_accelerate_config

        # The engine's own launch layout, with mixed precision agreeing with the YAML's bf16/fp16.
        write_accelerate_config(out_dir, preset.distributed, precision=_precision_of(config.values))
    return path, config


# ---------------------------------------------------------------- values


def _build(preset: Preset, dataset_dir: Path, has_eval: bool) -> TrlCliConfig:
    from trainer_core.model.loading import is_vision_config, load_config

    m = preset.model
    model_config = load_config(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision)
    is_vlm = is_vision_config(model_config)
    notes: list[str] = []
    precision = _precision(preset, notes)
    values: dict[str, Any] = {
        **_model_values(preset, precision),
        **_lora_values(preset, model_config, is_vlm, notes),
        **_data_values(dataset_dir, has_eval),
        **_training_values(preset, precision, has_eval, notes),
    }
    notes += _engine_only_notes(preset, values["output_dir"])
    notes += _distributed_notes(preset)
    _check_keys(values, preset.task)
    return TrlCliConfig(preset.task, values, notes)


def _precision(preset: Preset, notes: list[str]) -> str:
    """The engine's precision; `auto` is resolved here, since TRL's defaults (bf16 on, fp32 weights) differ."""
    if preset.precision != "auto":
        # Not resolve_precision: it refuses fp16 without a GPU, and the config is meant for another machine.
        return preset.precision
    from trainer_core.model.loading import resolve_precision

    resolved = resolve_precision("auto", preset.quantization)
    notes.append(f"precision: auto resolved to {resolved} on this machine, as vlmtune would here; on other "
                 "hardware edit dtype and bf16/fp16 (bf16 needs an Ampere or newer GPU, fp16 any CUDA GPU)")
    return resolved


def _model_values(preset: Preset, precision: str) -> dict[str, Any]:
    m = preset.model
    dtype = TRL_DTYPES[precision]
    values: dict[str, Any] = {"model_name_or_path": m.name_or_path}
    if m.revision:
        values["model_revision"] = m.revision
    # In TRL 1.16 trust_remote_code is an SFTConfig/DPOConfig field, not a ModelConfig one.
    values["trust_remote_code"] = m.trust_remote_code
    if m.attn_implementation:
        values["attn_implementation"] = m.attn_implementation
    # The engine loads the weights in the training precision (not fp32 master weights).
    values["dtype"] = dtype
    if preset.quantization == "4bit":
        # TRL computes 4-bit layers in `dtype`; the engine computes and stores them in the training precision.
        values.update(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True,
                      bnb_4bit_quant_storage=dtype)
    elif preset.quantization == "8bit":
        values["load_in_8bit"] = True
    return values


class NotExportable(UsageError):
    """A preset option TRL's CLI has no flag for: the export would train something else."""


def _lora_values(preset: Preset, model_config: Any, is_vlm: bool, notes: list[str]) -> dict[str, Any]:
    lora = preset.lora
    kind = preset.adapter_type
    if kind in ("prompt_tuning", "prefix_tuning"):
        raise NotExportable(f"adapter: {kind}: TRL's CLI ({preset.task}) has flags for LoRA only (use_peft, "
                            "lora_*), so the exported config would train something else. Train it with "
                            "`vlmtune train PRESET --headless`, or export with adapter: lora")
    if kind == "none":
        if is_vlm and (preset.freeze_vision_tower or preset.freeze_multi_modal_projector
                       or preset.freeze_language_model):
            raise NotExportable("full fine-tuning of a vision-language model with parts frozen (freeze_*): TRL's "
                                "CLI trains every weight and has no flag to freeze one, so the exported run would "
                                "differ. Train it with `vlmtune train PRESET --headless`, or set all three "
                                "freeze_* fields to false to export a run that trains everything")
        return {"use_peft": False}
    values: dict[str, Any] = {"use_peft": True, "lora_r": lora.r, "lora_alpha": lora.alpha,
                              "lora_dropout": lora.dropout,
                              "lora_target_modules": _target_modules(preset, model_config, is_vlm, notes)}
    if lora.use_dora:
        values["use_dora"] = True
    if lora.use_rslora:
        values["use_rslora"] = True
    if lora.modules_to_save:
        values["lora_modules_to_save"] = list(lora.modules_to_save)
    return values


def _target_modules(preset: Preset, model_config: Any, is_vlm: bool, notes: list[str]) -> str | list[str]:
    targets = preset.lora.target_modules
    if targets == "auto":
        regex, built_as = _auto_targets(preset, model_config, is_vlm)
        from trainer_core.model.lora_targets import parts_of

        parts = parts_of(preset)
        scope = "every linear layer but the LM head" if not is_vlm else \
            "every linear layer of the " + " and the ".join(
                name for name, on in (("vision tower", parts.vision), ("connector", parts.connector),
                                      ("language model", parts.language)) if on)
        differs = " (TRL's all-linear would adapt every part)" if is_vlm and not (
            parts.vision and parts.connector and parts.language) else ""
        notes.append(f"lora.target_modules: auto written as the regex vlmtune computes for this architecture: "
                     f"{scope}{differs}")
        trl_class = (getattr(model_config, "architectures", None) or [None])[0]
        if trl_class and trl_class != built_as:
            notes.append(f"TRL loads this model as {trl_class} and vlmtune as {built_as}; the LoRA target regex "
                         "names vlmtune's module layout, so check that it matches when TRL starts")
        return regex
    if isinstance(targets, list) and len(targets) == 1:
        # ModelConfig turns a one-item list into a string, which PEFT reads as a regex over the full module
        # name: "q_proj" alone would then match nothing. This regex keeps PEFT's list meaning (name suffix).
        notes.append(f"lora.target_modules: [{targets[0]}] written as a regex with the same meaning, because "
                     "TRL's CLI turns a one-item list into a full-name regex")
        return rf"(?:.*\.)?{re.escape(targets[0])}"
    return list(targets) if isinstance(targets, list) else targets


def _auto_targets(preset: Preset, model_config: Any, is_vlm: bool) -> tuple[str, str]:
    """The engine's auto regex, from the model built on the meta device (module names only, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from trainer_core.model.loading import ModelLoadError
    from trainer_core.model.lora_targets import auto_target_modules

    auto = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            model = auto.from_config(model_config, trust_remote_code=preset.model.trust_remote_code)
    except Exception as exc:  # model code can fail in many ways on the meta device
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not list the layers of {preset.model.name_or_path} to resolve "
                             f"lora.target_modules: auto ({first}); set lora.target_modules to module names "
                             "or a regex instead") from None
    from trainer_core.model.lora_targets import parts_of

    return auto_target_modules(model, parts=parts_of(preset)), type(model).__name__


def _data_values(dataset_dir: Path, has_eval: bool) -> dict[str, Any]:
    # Absolute, so that `trl` finds the data from any working directory.
    values: dict[str, Any] = {"dataset_name": str(dataset_dir.resolve()), "dataset_train_split": "train"}
    if has_eval:
        values["dataset_test_split"] = Path(TEST_FILE).stem
    return values


def _validated_args(preset: Preset, *, has_eval: bool) -> Any:
    """The engine's SFTConfig/DPOConfig for the preset: the same checks, the same PresetErrors."""
    from trainer_core.config.library_args import trainer_args

    # fp32 on CPU: the precision is checked elsewhere, and this machine need not be the one that trains.
    return trainer_args(preset, checkpoints_dir=Path(preset.output_dir), precision="fp32",
                        has_eval=has_eval, use_cpu=True)


def _training_values(preset: Preset, precision: str, has_eval: bool, notes: list[str]) -> dict[str, Any]:
    from trainer_core.config.library_args import training_values

    t = preset.training
    args = _validated_args(preset, has_eval=has_eval)
    values: dict[str, Any] = {
        # A fixed folder: TRL writes checkpoints and the final model straight into output_dir.
        "output_dir": str(Path(preset.output_dir) / f"{preset.name}-trl"),
        # The engine's own mapping; TRL's bf16 defaults to on, so bf16/fp16 are always written.
        **training_values(preset, precision),
        "eval_strategy": "steps" if has_eval else "no",
    }
    if has_eval:
        values["eval_steps"] = t.eval_steps or t.save_steps
    values.update(_checkpointing_values(args))
    if getattr(args, "ddp_find_unused_parameters", None) is not None:
        # The engine's DDP choice (only matters with several processes).
        values["ddp_find_unused_parameters"] = args.ddp_find_unused_parameters
    if preset.task == "dpo":
        values["beta"] = preset.dpo.beta
        values["loss_type"] = [preset.dpo.loss_type]
    values.update(_extra_values(t.extra, notes))
    return values


def _checkpointing_values(args: Any) -> dict[str, Any]:
    """As the engine resolved it (TRL defaults to on; the engine to the preset's value, non-reentrant)."""
    if hasattr(args, "activation_checkpointing"):
        values = {"activation_checkpointing": bool(args.activation_checkpointing)}
        kwargs = args.activation_checkpointing_kwargs
        key = "activation_checkpointing_kwargs"
    else:  # older transformers: only the old name exists
        values = {"gradient_checkpointing": bool(args.gradient_checkpointing)}
        kwargs = args.gradient_checkpointing_kwargs
        key = "gradient_checkpointing_kwargs"
    if kwargs:
        values[key] = dict(kwargs)
    return values


def _extra_values(extra: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """training.extra as it is (already checked against TRL's config), less secrets and checkpointing."""
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if key in CHECKPOINTING_KEYS:
            continue
        if key in SECRET_KEYS:
            notes.append(f"training.extra.{key} left out: secrets are never written (set HF_TOKEN in the "
                         "environment instead)")
            continue
        out[key] = _without_secrets(value, f"training.extra.{key}", notes)
    return out


def _without_secrets(value: Any, path: str, notes: list[str]) -> Any:
    if not isinstance(value, dict):
        return value
    kept = {}
    for key, inner in value.items():
        if key in SECRET_KEYS:
            notes.append(f"{path}.{key} left out: secrets are never written (set HF_TOKEN in the environment "
                         "instead)")
            continue
        kept[key] = _without_secrets(inner, f"{path}.{key}", notes)
    return kept


def _engine_only_notes(preset: Preset, output_dir: str) -> list[str]:
    notes = [f"output_dir: TRL writes checkpoints and the final model into {output_dir} itself; vlmtune's "
             "timestamped run folder (events, summary, samples) has no TRL equivalent"]
    if preset.samples.prompts:
        notes.append("samples: TRL's CLI does not generate sample answers during training; the "
                     f"{len(preset.samples.prompts)} sample prompt(s) are not carried over")
    return notes


def _is_distributed(preset: Preset) -> bool:
    from trainer_core.run.distributed import is_distributed

    return is_distributed(preset.distributed)


def _distributed_notes(preset: Preset) -> list[str]:
    """Processes are accelerate's business, not a TRL config key: say how to launch them the engine's way."""
    if not _is_distributed(preset):
        return []
    d = preset.distributed
    command = f"trl {preset.task} --config trl-{preset.task}.yaml --accelerate_config accelerate.yaml"
    note = (f"distributed: {d.num_processes} processes ({d.strategy}) are started by accelerate, not by this file; "
            f"run `{command}` in the export folder (vlmtune's own accelerate config is written next to it; "
            "TRL's bundled ones force bf16 mixed precision)")
    if d.num_machines > 1:
        note += f"; on each other machine add --machine_rank N (0 to {d.num_machines - 1})"
    return [note]


def _precision_of(values: dict[str, Any]) -> str:
    return {dtype: precision for precision, dtype in TRL_DTYPES.items()}[values["dtype"]]


def _check_keys(values: dict[str, Any], command: str) -> None:
    """Every key must be one TRL's script parses: leftovers would go to `accelerate launch` and fail there."""
    from trl import DatasetMixtureConfig, DPOConfig, ModelConfig, ScriptArguments, SFTConfig

    config_class = SFTConfig if command == "sft" else DPOConfig
    known = {f.name for cls in (ScriptArguments, config_class, ModelConfig, DatasetMixtureConfig)
             for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PresetError([PresetProblem("", f"TRL's `trl {command}` does not accept {k!r} (installed TRL is "
                                             "older or newer than vlmtune expects)") for k in unknown])


# ---------------------------------------------------------------- data


def _export_dataset(preset: Preset, out_dir: Path):
    """Prepare the data as the engine does and write it as parquet; returns (data folder, PreparedData).

    Only data/train.parquet and data/test.parquet are written or removed (claim_export_dir checked data/).
    """
    with _quiet_datasets():
        prepared = _prepare(preset)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    _replace_parquet(prepared.train, data_dir / TRAIN_FILE)
    if prepared.eval is not None:
        _replace_parquet(prepared.eval, data_dir / TEST_FILE)
    else:
        # A test.parquet from an earlier export would add an eval split the preset does not have.
        (data_dir / TEST_FILE).unlink(missing_ok=True)
    return data_dir, prepared


def _replace_parquet(ds: Any, path: Path) -> None:
    """Written beside, then renamed over: a failed export never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_parquet(ds, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare(preset: Preset):
    """The engine's own data preparation, with the same is_vlm and conversational decisions."""
    from trainer_core.data.prepare import prepare_dataset
    from trainer_core.model.loading import is_vision_config, load_config, load_processing_class

    m = preset.model
    config = load_config(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision)
    is_vlm = is_vision_config(config)
    _, tokenizer = load_processing_class(m.name_or_path, is_vlm, trust_remote_code=m.trust_remote_code,
                                         revision=m.revision)
    return prepare_dataset(preset.data, preset.task, conversational=bool(getattr(tokenizer, "chat_template", None)),
                           is_vlm=is_vlm, seed=preset.training.seed)


def _write_parquet(ds: Any, path: Path) -> None:
    """Parquet with the image bytes inside; datasets keeps the features (Image) in the file's metadata."""
    from datasets.features.features import require_storage_embed
    from datasets.table import embed_table_storage

    with _quiet_datasets():
        if any(require_storage_embed(feature) for feature in ds.features.values()):
            # Prepared rows point at image files on this machine; the export must stand on its own.
            ds = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
        ds.to_parquet(str(path))


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No datasets progress bars (they would write behind a TUI); the previous setting comes back after."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


# ---------------------------------------------------------------- YAML


def _yaml_text(preset: Preset, config: TrlCliConfig, path: Path) -> str:
    # Comments hold text from the preset and the data (paths, a skipped row's problem): flattened to one
    # line each, so that a line break in them cannot end the comment and start a key.
    header = [f"# TRL CLI config written by vlmtune from preset {one_line(repr(preset.name))}.",
              f"# Run it with: trl {config.command} --config {one_line(path.name)}"]
    if config.notes:
        header.append("# Notes:")
        header += [f"#  - {one_line(note)}" for note in config.notes]
    body = yaml.safe_dump(config.values, sort_keys=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body
