"""The one boundary where a Preset becomes library objects: LoraConfig, SFTConfig, DPOConfig.

Preset names follow TRL's where TRL has one; the few short names (micro_batch_size, epochs,
lr_scheduler, optimizer) map 1:1 below. Values the libraries reject come back as PresetErrors naming
the preset field, not as tracebacks from deep inside TRL.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from trainer_core.config.presets import Preset, PresetError, PresetProblem

# TRL 1.16's DPO losses (DPOTrainer._compute_loss).
DPO_LOSSES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
# Arguments the engine owns: changing them through `extra` would break resume, logging or progress.
ENGINE_ARGS = {"output_dir", "report_to", "disable_tqdm", "save_strategy", "logging_dir", "resume_from_checkpoint",
               "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_steps",
               "num_train_epochs", "bf16", "fp16"}


def _check_choice(value: str, valid: list[str], path: str) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PresetError([PresetProblem(path, f"{value!r} is not known; {hint}valid: {', '.join(valid)}")])


def lora_config(preset: Preset, target_modules: str | list[str]):
    from peft import LoraConfig

    lora = preset.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target_modules,
        modules_to_save=lora.modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )


def training_values(preset: Preset, precision: str) -> dict[str, Any]:
    """The preset's training section by TrainingArguments' names: one mapping for the engine's SFTConfig/DPOConfig
    and for the TRL CLI config that `export-config` writes."""
    t = preset.training
    return {
        "per_device_train_batch_size": t.micro_batch_size,
        "per_device_eval_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "max_steps": t.max_steps,
        "num_train_epochs": t.epochs,
        "max_length": t.max_length,
        # transformers 5 takes the warmup ratio as a float warmup_steps in [0, 1).
        "warmup_steps": t.warmup_ratio,
        "lr_scheduler_type": t.lr_scheduler,
        "optim": t.optimizer,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "seed": t.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
    }


def trainer_args(preset: Preset, *, checkpoints_dir: Path, precision: str, has_eval: bool,
                 use_cpu: bool = False):
    """SFTConfig or DPOConfig for the preset (TRL's own classes, so every TRL default applies)."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    t = preset.training
    _check_choice(t.lr_scheduler, [s.value for s in SchedulerType], "training.lr_scheduler")
    _check_choice(t.optimizer, [o.value for o in OptimizerNames], "training.optimizer")
    common: dict[str, Any] = {
        "output_dir": str(checkpoints_dir),
        **training_values(preset, precision),
        "use_cpu": use_cpu,
        "dataloader_pin_memory": not use_cpu and _cuda(),
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": (t.eval_steps or t.save_steps) if has_eval else None,
        # Our own progress display and event stream replace these.
        "report_to": "none",
        "disable_tqdm": True,
        # TRL's trainers count tokens themselves (logged as num_tokens); the Trainer's own count would add a
        # gather and a device sync to every micro-step.
        "include_num_input_tokens_seen": "no",
        "dataloader_num_workers": 0,
    }
    if preset.task == "sft":
        from trl import SFTConfig as Config
    else:
        from trl import DPOConfig as Config

        # DPOConfig takes any string and TRL only objects at the first step: check before loading anything.
        _check_choice(preset.dpo.loss_type, DPO_LOSSES, "dpo.loss_type")
        common["beta"] = preset.dpo.beta
        common["loss_type"] = [preset.dpo.loss_type]
    valid = {f.name for f in dataclasses.fields(Config)}
    extra = dict(t.extra)
    owned = sorted(k for k in extra if k in ENGINE_ARGS)
    if owned:
        raise PresetError([PresetProblem(f"training.extra.{k}", "set by vlmtune itself; use the preset's own "
                                                                "field (training.*, precision) instead")
                           for k in owned])
    gc_on = bool(extra.pop("gradient_checkpointing", extra.pop("activation_checkpointing", t.gradient_checkpointing)))
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    # Non-reentrant checkpointing is the one that works with LoRA under DDP.
    ckpt_kwargs = {"use_reentrant": False} if gc_on else None
    if "activation_checkpointing" in valid:
        common.update(activation_checkpointing=gc_on, activation_checkpointing_kwargs=ckpt_kwargs,
                      gradient_checkpointing=None, gradient_checkpointing_kwargs=None)
    else:
        common.update(gradient_checkpointing=gc_on, gradient_checkpointing_kwargs=ckpt_kwargs)
    if "ddp_find_unused_parameters" in valid:
        # LoRA on the language model uses every trainable weight in each forward: the search for unused ones is an
        # extra pass over the graph per step under DDP (a model with branches can set it in training.extra).
        common["ddp_find_unused_parameters"] = False
    unknown = [k for k in extra if k not in valid]
    if unknown:
        problems = []
        for k in unknown:
            close = difflib.get_close_matches(k, sorted(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(PresetProblem(f"training.extra.{k}", f"not a {Config.__name__} argument{hint}"))
        raise PresetError(problems)
    try:
        return Config(**{**common, **extra})
    except (ValueError, TypeError) as exc:
        raise PresetError([PresetProblem(_guess_field(str(exc), preset), str(exc).splitlines()[0])]) from None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _guess_field(message: str, preset: Preset) -> str:
    if "loss_type" in message or preset.dpo.loss_type in message:
        return "dpo.loss_type"
    for key in preset.training.extra:
        if key in message:
            return f"training.extra.{key}"
    return "training"
