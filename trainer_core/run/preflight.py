"""Checks a multi-process launch makes in the parent, before starting N processes that would each fail the
same way (each one importing torch and loading the model first: a minute or more on a small machine)."""

from __future__ import annotations

import os

from trainer_core.base.errors import UsageError
from trainer_core.config.presets import Preset


def check_launch(preset: Preset, *, gpus: int) -> None:
    """Refuse a layout this machine cannot run, and a model that cannot be found; `gpus` is the local count."""
    d = preset.distributed
    per_machine = max(1, d.num_processes // max(1, d.num_machines))
    cores = os.cpu_count() or 1
    if gpus and per_machine > gpus:
        raise UsageError(f"{per_machine} processes on this machine need {per_machine} GPUs, and it has {gpus}: "
                         f"use --num-processes {gpus * d.num_machines} (one process per GPU)")
    if not gpus and per_machine > cores:
        raise UsageError(f"{per_machine} processes on this machine, which has no GPU and {cores} CPU cores: "
                         f"several processes are for GPUs (one each); on this machine train with one process "
                         f"(leave out --num-processes), or use --num-processes {cores} to try the layout on the CPU")
    _model_reachable(preset)


def _model_reachable(preset: Preset) -> None:
    from trainer_core.model.loading import load_config

    # Raises ModelLoadError with what to do (a hub id offline, a wrong folder, remote code not allowed).
    load_config(preset.model.name_or_path, trust_remote_code=preset.model.trust_remote_code)
