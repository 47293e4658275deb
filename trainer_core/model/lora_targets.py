"""Which linear layers LoRA adapts when `lora.target_modules: auto`.

Auto = every linear layer of the parts that train (the preset's freeze_vision_tower / freeze_multi_modal_projector
/ freeze_language_model, LLaMA-Factory's names: by default the language model only; the older
`lora.train_vision_tower` unfreezes the vision encoder and the connector); the LM head is never adapted (it is
huge and rarely helps).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Module-name parts that mark the vision side of a VLM across architectures
# (Idefics3/SmolVLM: vision_model, connector; LLaVA: vision_tower, multi_modal_projector; Qwen2-VL: visual).
VISION_PARTS = ("vision_model", "vision_tower", "visual", "vision_encoder", "image_encoder")
CONNECTOR_PARTS = ("connector", "multi_modal_projector", "mm_projector", "merger", "projector")
HEAD_NAMES = ("lm_head", "output", "embed_out")


@dataclass(frozen=True)
class TrainedParts:
    """Which parts of a model train: LoRA adapts their linear layers, full fine-tuning their every weight."""

    vision: bool = False
    connector: bool = False
    language: bool = True

    def trains(self, part: str) -> bool:
        return {"vision": self.vision, "connector": self.connector}.get(part, self.language)


def trained_parts(freeze_vision_tower: bool = True, freeze_multi_modal_projector: bool = True,
                  freeze_language_model: bool = False, train_vision_tower: bool = False) -> TrainedParts:
    # lora.train_vision_tower (the older field) adapted the vision encoder and the connector together.
    return TrainedParts(vision=not freeze_vision_tower or train_vision_tower,
                        connector=not freeze_multi_modal_projector or train_vision_tower,
                        language=not freeze_language_model)


def parts_of(preset: Any) -> TrainedParts:
    """The parts a preset trains: a Preset, or the wizard's draft of one (a mapping, possibly mid-edit)."""

    def get(obj: Any, key: str, default: bool) -> bool:
        value = obj.get(key, default) if isinstance(obj, Mapping) else getattr(obj, key, default)
        return value if isinstance(value, bool) else default  # a draft's half-typed value plans as the default

    lora = preset.get("lora") if isinstance(preset, Mapping) else getattr(preset, "lora", None)
    return trained_parts(get(preset, "freeze_vision_tower", True), get(preset, "freeze_multi_modal_projector", True),
                         get(preset, "freeze_language_model", False), get(lora or {}, "train_vision_tower", False))


def part_of(name: str) -> str:
    """vision | connector | language for a module or parameter name (embeddings and the LM head belong to the
    language model, as in LLaMA-Factory). Vision wins over connector, as in model/info.py's components, so the
    planner's counts and the engine's choice agree (Qwen2-VL's visual.merger counts as vision)."""
    parts = _parts(name)
    if parts & set(VISION_PARTS):
        return "vision"
    if parts & set(CONNECTOR_PARTS):
        return "connector"
    return "language"


def _is_linear(module: Any) -> bool:
    import torch

    # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear, so quantized models are covered.
    return isinstance(module, torch.nn.Linear)


def linear_layers(model: Any) -> list[str]:
    return [name for name, module in model.named_modules() if name and _is_linear(module)]


def _parts(name: str) -> set[str]:
    return set(name.split("."))


def select_targets(names: list[str], include_vision: bool = False, *,
                   parts: TrainedParts | None = None) -> list[str]:
    """The full names of the layers LoRA should adapt, from all linear layer names: those of the parts that train
    (`parts`; else the language model, with the vision encoder and connector when `include_vision`)."""
    parts = parts or trained_parts(train_vision_tower=include_vision)
    return [name for name in names if name.split(".")[-1] not in HEAD_NAMES and parts.trains(part_of(name))]


def targets_regex(selected: list[str]) -> str:
    """A PEFT target_modules regex (matched with re.fullmatch) that names exactly `selected`."""
    if not selected:
        raise ValueError("no linear layers to adapt")
    # Layer indices generalise (layers.0.x, layers.1.x -> layers.\d+.x) so the regex stays short.
    patterns = dict.fromkeys(re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n)) for n in selected)
    return "|".join(patterns)


def auto_target_modules(model: Any, include_vision: bool = False, *, parts: TrainedParts | None = None) -> str:
    return targets_regex(select_targets(linear_layers(model), include_vision, parts=parts))
