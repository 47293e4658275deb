"""What a model is, from its config alone: parameters per component, shapes, LoRA-targetable layers.

The model is built on the meta device (accelerate's init_empty_weights), so nothing is downloaded but
config.json, and the counts are the real module's, not a formula's. Known hub ids come from the
offline registry (trainer_core/registry), so planning works with no network.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from trainer_core.model.lora_targets import CONNECTOR_PARTS, HEAD_NAMES, VISION_PARTS, select_targets

COMPONENTS = ("vision", "connector", "language", "embeddings", "lm_head")


@dataclass(frozen=True)
class LinearLayer:
    name: str
    in_features: int
    out_features: int
    component: str


@dataclass(frozen=True)
class TextShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int


@dataclass(frozen=True)
class VisionShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    image_size: int | None
    patch_size: int | None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    model_type: str
    architecture: str
    is_vlm: bool
    # parameters per component (see COMPONENTS) and in total; equals model.num_parameters()
    params: dict[str, int]
    total_params: int
    text: TextShape
    vision: VisionShape | None
    linear_layers: list[LinearLayer] = field(repr=False)
    tie_word_embeddings: bool = False
    # the dtype the weights are stored in (config.dtype), e.g. "bfloat16"
    stored_dtype: str | None = None
    source: str = "config"  # config | registry

    def lora_targets(self, targets: str | list[str] = "auto", include_vision: bool = False) -> list[LinearLayer]:
        """The layers LoRA adapts: `auto` as the engine chooses, a list of module names, or a regex."""
        if targets == "auto":
            chosen = set(select_targets([ly.name for ly in self.linear_layers], include_vision))
            return [ly for ly in self.linear_layers if ly.name in chosen]
        if isinstance(targets, str):  # PEFT: a string is a regex matched against the full name
            return [ly for ly in self.linear_layers if re.fullmatch(targets, ly.name)]
        names = set(targets)
        # PEFT: a list entry matches the full name or its last dotted parts
        return [ly for ly in self.linear_layers
                if ly.name in names or any(ly.name.endswith("." + t) for t in names)]

    def lora_params(self, r: int, targets: str | list[str] = "auto", include_vision: bool = False) -> int:
        """Exact LoRA parameter count: A (r x in) + B (out x r) per adapted layer."""
        return sum(r * (ly.in_features + ly.out_features) for ly in self.lora_targets(targets, include_vision))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("linear_layers")
        d["linear_layer_count"] = len(self.linear_layers)
        return d


def _component(name: str) -> str:
    parts = set(name.split("."))
    if parts & set(VISION_PARTS):
        return "vision"
    if parts & set(CONNECTOR_PARTS):
        return "connector"
    leaf_module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
    if leaf_module in HEAD_NAMES or name.startswith(HEAD_NAMES):
        return "lm_head"
    if any(p in ("embed_tokens", "wte", "word_embeddings", "embed_in") for p in parts):
        return "embeddings"
    return "language"


def _get(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def _text_shape(config: Any) -> TextShape:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = _get(text, "hidden_size", "n_embd")
    heads = _get(text, "num_attention_heads", "n_head")
    if not hidden or not heads:
        raise ValueError(f"{getattr(config, 'model_type', 'this model')}: no attention heads in its config; "
                         "vlmtune plans attention-based decoders only")
    return TextShape(
        hidden_size=hidden,
        num_layers=_get(text, "num_hidden_layers", "n_layer"),
        num_heads=heads,
        num_kv_heads=_get(text, "num_key_value_heads", default=heads),
        head_dim=_get(text, "head_dim", default=hidden // heads),
        intermediate_size=_get(text, "intermediate_size", "n_inner", default=4 * hidden),
        vocab_size=_get(text, "vocab_size"),
    )


def _vision_shape(config: Any) -> VisionShape | None:
    v = getattr(config, "vision_config", None)
    if v is None:
        return None
    hidden = _get(v, "hidden_size", "embed_dim")
    # Qwen2-VL names its width embed_dim and its depth depth
    if getattr(v, "embed_dim", None) and getattr(v, "depth", None):
        hidden = v.embed_dim
    mlp = _get(v, "intermediate_size", default=None)
    if mlp is None and getattr(v, "mlp_ratio", None):
        mlp = int(hidden * v.mlp_ratio)
    image_size = _get(v, "image_size", default=None)
    return VisionShape(
        hidden_size=hidden,
        num_layers=_get(v, "num_hidden_layers", "depth"),
        num_heads=_get(v, "num_attention_heads", "num_heads"),
        intermediate_size=mlp or 4 * hidden,
        image_size=image_size if isinstance(image_size, int) else None,
        patch_size=_get(v, "patch_size", default=None),
    )


def resolve_config(name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """(config, source): the offline registry for known hub ids, else config.json (local or hub)."""
    from pathlib import Path

    if not Path(name_or_path).expanduser().exists():
        try:
            from trainer_core.model.known import known_config
        except ImportError:  # registry not installed
            known_config = None  # type: ignore[assignment]
        if known_config is not None:
            cfg = known_config(name_or_path)
            if cfg is not None:
                return cfg, "registry"
    from trainer_core.model.loading import load_config

    return load_config(name_or_path, trust_remote_code=trust_remote_code, revision=revision), "config"


def build_meta_model(config: Any, *, trust_remote_code: bool = False):
    """The model with every tensor on the meta device: real module structure, no memory."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from trainer_core.model.loading import is_vision_config

    auto = AutoModelForImageTextToText if is_vision_config(config) else AutoModelForCausalLM
    with init_empty_weights():
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
    # Under init_empty_weights a tied LM head comes out as its own meta tensor; re-tie so that it is
    # counted once, as num_parameters() of the real model counts it.
    model.tie_weights()
    return model


def inspect_model(name_or_path: str | None = None, *, config: Any = None, trust_remote_code: bool = False,
                  revision: str | None = None) -> ModelInfo:
    import torch

    from trainer_core.model.loading import is_vision_config

    source = "config"
    if config is None:
        if name_or_path is None:
            raise ValueError("give a model name/path or a config")
        config, source = resolve_config(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    model = build_meta_model(config, trust_remote_code=trust_remote_code)
    params = dict.fromkeys(COMPONENTS, 0)
    for pname, p in model.named_parameters():  # shared (tied) tensors are listed once, as num_parameters does
        params[_component(pname)] += p.numel()
    linears = [LinearLayer(n, m.in_features, m.out_features, _component(n + ".weight"))
               for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return ModelInfo(
        name=name_or_path or getattr(config, "_name_or_path", "") or config.model_type,
        model_type=config.model_type,
        architecture=type(model).__name__,
        is_vlm=is_vision_config(config),
        params=params,
        total_params=sum(params.values()),
        text=_text_shape(config),
        vision=_vision_shape(config),
        linear_layers=linears,
        tie_word_embeddings=bool(getattr(text_cfg, "tie_word_embeddings", False)
                                 or getattr(config, "tie_word_embeddings", False)),
        stored_dtype=str(dtype).replace("torch.", "") if dtype is not None else None,
        source=source,
    )
