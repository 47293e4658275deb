"""Which linear layers LoRA adapts when `lora.target_modules: auto`.

Auto = every linear layer of the language model; the vision encoder and the connector stay frozen
unless `train_vision_tower` is set, and the LM head is never adapted (it is huge and rarely helps).
"""

from __future__ import annotations

import re
from typing import Any

# Module-name parts that mark the vision side of a VLM across architectures
# (Idefics3/SmolVLM: vision_model, connector; LLaVA: vision_tower, multi_modal_projector; Qwen2-VL: visual).
VISION_PARTS = ("vision_model", "vision_tower", "visual", "vision_encoder", "image_encoder")
CONNECTOR_PARTS = ("connector", "multi_modal_projector", "mm_projector", "merger", "projector")
HEAD_NAMES = ("lm_head", "output", "embed_out")


def _is_linear(module: Any) -> bool:
    import torch

    # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear, so quantized models are covered.
    return isinstance(module, torch.nn.Linear)


def linear_layers(model: Any) -> list[str]:
    return [name for name, module in model.named_modules() if name and _is_linear(module)]


def _parts(name: str) -> set[str]:
    return set(name.split("."))


def select_targets(names: list[str], include_vision: bool = False) -> list[str]:
    """The full names of the layers LoRA should adapt, from all linear layer names."""
    out = []
    for name in names:
        parts = _parts(name)
        if name.split(".")[-1] in HEAD_NAMES:
            continue
        if not include_vision and parts & set(VISION_PARTS + CONNECTOR_PARTS):
            continue
        out.append(name)
    return out


def targets_regex(selected: list[str]) -> str:
    """A PEFT target_modules regex (matched with re.fullmatch) that names exactly `selected`."""
    if not selected:
        raise ValueError("no linear layers to adapt")
    # Layer indices generalise (layers.0.x, layers.1.x -> layers.\d+.x) so the regex stays short.
    patterns = dict.fromkeys(re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n)) for n in selected)
    return "|".join(patterns)


def auto_target_modules(model: Any, include_vision: bool = False) -> str:
    return targets_regex(select_targets(linear_layers(model), include_vision))
