"""Full fine-tuning of the parts that train: the frozen parts' weights stop requiring gradients.

LoRA needs none of this (PEFT freezes every base weight and adapts only the target layers, which
lora_targets.select_targets takes from the parts that train).
"""

from __future__ import annotations

from typing import Any

from trainer_core.model.lora_targets import TrainedParts, part_of


def freeze_parts(model: Any, parts: TrainedParts) -> int:
    """Set requires_grad per part (by parameter name, as model/info.py counts the parts for the planner);
    returns the parameters that still train. Tied weights are one parameter, listed once."""
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad_(parts.trains(part_of(name)))
        trainable += param.numel() if param.requires_grad else 0
    return trainable
