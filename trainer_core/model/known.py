"""An offline registry of popular model shapes, so memory planning works with no network.

Each file under ``trainer_core/registry/`` holds one model's ``config.json`` content (the fields transformers
needs to build the model on the meta device) plus a ``_vlmtune`` block with the hub id, the published
parameter count and where that figure comes from. File name: the hub id with ``/`` replaced by ``--``.

Importing this module is cheap: no torch, no transformers. ``known_config`` imports transformers when called.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig

META_KEY = "_vlmtune"
_REGISTRY_DIR = "registry"

KNOWN_MODELS: list[str] = [
    "HuggingFaceTB/SmolVLM-256M-Instruct",
    "HuggingFaceTB/SmolVLM-500M-Instruct",
    "HuggingFaceTB/SmolVLM-Instruct",
    "HuggingFaceM4/Idefics3-8B-Llama3",
    "Qwen/Qwen2-VL-2B-Instruct",
    "Qwen/Qwen2-VL-7B-Instruct",
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "llava-hf/llava-1.5-7b-hf",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
]

_BY_LOWER: dict[str, str] = {hub_id.lower(): hub_id for hub_id in KNOWN_MODELS}


def _canonical(hub_id: str) -> str | None:
    if not isinstance(hub_id, str):
        return None
    key = hub_id.strip().strip("/").lower()
    if key.startswith("https://huggingface.co/"):
        key = key[len("https://huggingface.co/") :]
    return _BY_LOWER.get(key)


def registry_filename(hub_id: str) -> str:
    return hub_id.replace("/", "--") + ".json"


@cache
def _load(canonical_id: str) -> dict[str, Any]:
    text = (
        resources.files(__package__)
        .joinpath(_REGISTRY_DIR, registry_filename(canonical_id))
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


def _raw(hub_id: str) -> dict[str, Any] | None:
    canonical = _canonical(hub_id)
    return None if canonical is None else _load(canonical)


def known_config_dict(hub_id: str) -> dict[str, Any] | None:
    """The registry's config.json content for ``hub_id`` (case-insensitive), without ``_vlmtune``; else None.

    Returns a fresh deep copy each call, so callers may mutate it.
    """
    raw = _raw(hub_id)
    if raw is None:
        return None
    return {k: copy.deepcopy(v) for k, v in raw.items() if k != META_KEY}


def known_meta(hub_id: str) -> dict[str, Any] | None:
    """The ``_vlmtune`` block (hub_id, published_params, source) for ``hub_id``, or None."""
    raw = _raw(hub_id)
    return None if raw is None else dict(raw[META_KEY])


def published_params(hub_id: str) -> float | None:
    """The parameter count the model card / hub metadata gives for ``hub_id``, or None if unknown."""
    meta = known_meta(hub_id)
    return None if meta is None else float(meta["published_params"])


def is_vlm(hub_id: str) -> bool | None:
    """True for vision-language entries (their config has a vision_config), None if unknown."""
    d = _raw(hub_id)
    return None if d is None else "vision_config" in d


def known_config(hub_id: str) -> PretrainedConfig | None:
    """A transformers config built from the registry entry (no network), or None if unknown."""
    d = known_config_dict(hub_id)
    if d is None:
        return None
    from transformers import AutoConfig

    model_type = d.pop("model_type")
    config = AutoConfig.for_model(model_type, **d)
    config._name_or_path = _canonical(hub_id) or hub_id
    return config


def empty_model(hub_id: str):
    """Build the registry model on the meta device (no memory, no download), or None if unknown.

    VLMs (configs with a vision_config) go through AutoModelForImageTextToText, text models through
    AutoModelForCausalLM. Weights are re-tied afterwards: under accelerate's ``init_empty_weights`` a tied
    lm_head comes out as a separate meta tensor, so ``num_parameters()`` would count it twice
    (+28% for Qwen2.5-0.5B) without the ``tie_weights()`` call.
    """
    config = known_config(hub_id)
    if config is None:
        return None
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = (
        AutoModelForImageTextToText
        if getattr(config, "vision_config", None) is not None
        else AutoModelForCausalLM
    )
    with init_empty_weights():
        model = auto.from_config(config)
    model.tie_weights()
    return model
