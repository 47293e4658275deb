"""The one boundary where a Preset becomes library objects: LoraConfig, SFTConfig, DPOConfig.

Preset names follow TRL's where TRL has one; the few short names (micro_batch_size, epochs,
lr_scheduler, optimizer) map 1:1 below. Values the libraries reject come back as PresetErrors naming
the preset field, not as tracebacks from deep inside TRL.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import socket
from pathlib import Path
from typing import Any

from trainer_core.config.presets import Preset, PresetError, PresetProblem

# TRL 1.16's DPO losses (DPOTrainer._compute_loss).
DPO_LOSSES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
# Arguments the engine owns: changing them through `extra` would break resume, logging or progress.
ENGINE_ARGS = {"output_dir", "disable_tqdm", "save_strategy", "logging_dir", "resume_from_checkpoint",
               "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_steps",
               "num_train_epochs", "bf16", "fp16"}
# TRL arguments that are preset fields of their own (checked there): `extra` points at the field.
OWN_FIELDS = {"report_to": "training.report_to", "use_liger_kernel": "training.use_liger_kernel",
              "packing": "training.packing", "padding_free": "training.padding_free",
              "use_dora": "lora.use_dora", "use_rslora": "lora.use_rslora"}


def _check_choice(value: str, valid: list[str], path: str) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PresetError([PresetProblem(path, f"{value!r} is not known; {hint}valid: {', '.join(valid)}")])


def lora_config(preset: Preset, target_modules: str | list[str]):
    """The PEFT config of the preset's adapter: LoRA (with DoRA / rsLoRA / its init), prompt or prefix tuning.
    The engine calls this for every adapter type (`target_modules` only matters to LoRA)."""
    if preset.adapter_type == "prompt_tuning":
        return prompt_tuning_config(preset)
    if preset.adapter_type == "prefix_tuning":
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=preset.prefix_tuning.num_virtual_tokens,
                                  prefix_projection=preset.prefix_tuning.prefix_projection, task_type="CAUSAL_LM")
    from peft import LoraConfig

    lora = preset.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target_modules,
        modules_to_save=lora.modules_to_save,
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        init_lora_weights=lora.init_lora_weights,
        bias="none",
        task_type="CAUSAL_LM",
    )


def prompt_tuning_config(preset: Preset):
    from peft import PromptTuningConfig, PromptTuningInit

    pt = preset.prompt_tuning
    text = pt.prompt_tuning_init_text
    return PromptTuningConfig(
        num_virtual_tokens=pt.num_virtual_tokens, task_type="CAUSAL_LM",
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=text or None,
        # PEFT tokenizes the init text with the model's own tokenizer (a local folder or hub id).
        tokenizer_name_or_path=preset.model.name_or_path if text else None,
    )


def check_for_model(preset: Preset, *, is_vlm: bool) -> None:
    """What depends on the model's kind, refused before its weights load: prompt learning and packing are for
    text models (PEFT prepends virtual tokens to text embeddings; TRL packs and unpads text-only batches), the
    vision tower and connector of freeze_* for VLMs."""
    problems = []
    if is_vlm and preset.adapter_type in ("prompt_tuning", "prefix_tuning"):
        problems.append(PresetProblem("adapter", f"{preset.adapter} is for text models; {preset.model.name_or_path} "
                                      "is a vision-language model, where PEFT's virtual tokens do not fit around the "
                                      "image tokens. Use adapter: lora (or none)"))
    for name in ("packing", "padding_free"):
        if is_vlm and getattr(preset.training, name):
            problems.append(PresetProblem(f"training.{name}", "TRL supports it for text data only, and this "
                                          "vision-language model trains on images; set it to false"))
    model = preset.model.name_or_path
    if not is_vlm:  # a text model is all language model: no vision tower or connector to train or freeze
        for name in ("freeze_vision_tower", "freeze_multi_modal_projector"):
            if not getattr(preset, name):
                problems.append(PresetProblem(name, f"{model} is a text model, with no vision tower or connector; "
                                              f"remove {name}"))
        if preset.freeze_language_model:
            problems.append(PresetProblem("freeze_language_model", f"{model} is a text model, all language model: "
                                          "nothing would train; remove freeze_language_model"))
    if problems:
        raise PresetError(problems)


@functools.lru_cache(maxsize=4)
def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# What tracker_environment set in this process: a later run (the TUI starts several) replaces these, while what
# the user set stays.
_SET_HERE: dict[str, str] = {}


def _users(key: str) -> bool:
    return key in os.environ and os.environ[key] != _SET_HERE.get(key)


def tracker_environment(preset: Preset, run_dir: Path) -> dict[str, str]:
    """Environment for the preset's tracker, set before the Trainer makes its callback (they read it there):
    files in the run folder, and nothing that waits on a network this machine lacks (W&B offline, trackio and
    MLflow local). Values the user set already are kept, except TensorBoard's folder (the run folder's own)."""
    tracker, env = preset.training.report_to, {}
    if tracker == "tensorboard":
        env["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    elif tracker == "wandb":
        defaults = {"WANDB_DIR": str(run_dir), "WANDB_PROJECT": preset.name}
        from urllib.parse import urlparse

        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
        if not _reachable(host):
            defaults["WANDB_MODE"] = "offline"  # `wandb sync` uploads it later
        env = {k: v for k, v in defaults.items() if not _users(k)}
        if defaults.get("WANDB_MODE") and os.environ.get("WANDB_MODE", "offline") not in ("offline", "disabled"):
            env["WANDB_MODE"] = "offline"  # online mode without a network would hang the first step
    elif tracker == "trackio":
        env = {k: v for k, v in {"TRACKIO_DIR": str(run_dir / "trackio")}.items() if not _users(k)}
    elif tracker == "mlflow":
        defaults = {"MLFLOW_TRACKING_URI": (run_dir / "mlruns").resolve().as_uri(), "MLFLOW_EXPERIMENT_NAME": preset.name}
        env = {k: v for k, v in defaults.items() if not _users(k)}
    os.environ.update(env)
    _SET_HERE.update(env)
    return env


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
    if t.use_liger_kernel and use_cpu:
        raise PresetError([PresetProblem("training.use_liger_kernel", "Liger's kernels are Triton GPU kernels and "
                                         "this machine has no CUDA GPU; set training.use_liger_kernel: false here")])
    common: dict[str, Any] = {
        "output_dir": str(checkpoints_dir),
        **training_values(preset, precision),
        "use_cpu": use_cpu,
        "dataloader_pin_memory": not use_cpu and _cuda(),
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": (t.eval_steps or t.save_steps) if has_eval else None,
        # Our own progress display and event stream replace the console ones; a tracker is the user's choice.
        "report_to": t.report_to,
        "run_name": checkpoints_dir.parent.name,
        "project": preset.name,
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
    for name in ("use_liger_kernel", "padding_free", "packing"):
        if getattr(t, name):  # TRL's defaults (off) stay unset, so a trainer without the option never sees it
            common[name] = True
    extra = dict(t.extra)
    own = sorted(k for k in extra if k in OWN_FIELDS)
    if own:
        raise PresetError([PresetProblem(f"training.extra.{k}", f"is a preset field of its own: use {OWN_FIELDS[k]}")
                           for k in own])
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
    if t.report_to != "none":
        tracker_environment(preset, checkpoints_dir.parent)
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
