"""How many tokens (and vision-encoder patches) one image becomes, per architecture, from config alone.

These follow the processors' own resize rules with their released defaults, so the planner can count
image tokens without loading a processor: SmolVLM/Idefics3 split an image into tiles plus a global
view; Qwen2-VL and Qwen2.5-VL resize to a multiple of 28 px within a pixel budget (dynamic
resolution); LLaVA-1.5 always gives 576. Checked against the real processors on an H100 run
(bench/memory_accuracy.py measures the same counts with the processor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Qwen2-VL's published preprocessor_config.json (min_pixels, max_pixels); recipes often lower max_pixels.
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 12845056
DEFAULT_IMAGE_SIZE = (768, 768)  # when the data gives no sizes: a typical chart / photo


@dataclass(frozen=True)
class ImageCost:
    tokens: int  # tokens the language model sees for one image
    patches: int  # patches the vision encoder processes for one image (all tiles)
    how: str  # one line on how it was counted
    tiles: int = 1  # crops the encoder sees (SmolVLM/Idefics3 splitting); 1 elsewhere


def _idefics3(config: Any, width: int, height: int, splitting: bool = True,
              longest_edge: int | None = None) -> ImageCost:
    v = config.vision_config
    tile = _side(v.image_size)
    per_tile_patches = (tile // _side(v.patch_size)) ** 2
    per_tile_tokens = per_tile_patches // (config.scale_factor**2)
    if not splitting:
        return ImageCost(per_tile_tokens, per_tile_patches, f"1 tile of {tile}px x {per_tile_tokens} tokens")
    edge = longest_edge or 4 * tile  # SmolVLM resizes the longest edge to 4 tiles by default
    scale = edge / max(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    cols, rows = math.ceil(w / tile), math.ceil(h / tile)
    tiles = rows * cols + (1 if rows * cols > 1 else 0)  # + the global (downscaled) view
    return ImageCost(tiles * per_tile_tokens, tiles * per_tile_patches,
                     f"{rows}x{cols} tiles of {tile}px + global view, {per_tile_tokens} tokens each", tiles)


def idefics3_longest_edge(config: Any, image_max_pixels: int) -> int:
    """data.image_max_pixels in SmolVLM/Idefics3's terms: the longest edge (size={"longest_edge": ...}) in whole
    tiles, so that a square image stays within the pixel budget (at least one tile)."""
    tile = _side(config.vision_config.image_size)
    return max(tile, math.floor(math.sqrt(image_max_pixels) / tile) * tile)


def has_resolution_knob(config: Any) -> bool:
    """Whether data.image_max_pixels changes this model's image tokens (fixed-size encoders such as LLaVA's: no)."""
    return config.model_type in ("idefics3", "smolvlm", "qwen2_vl", "qwen2_5_vl")


def _smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = QWEN_MIN_PIXELS,
                  max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """Qwen2-VL's resize: both sides multiples of `factor`, area within [min_pixels, max_pixels]."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _qwen_vl(config: Any, width: int, height: int, max_pixels: int = QWEN_MAX_PIXELS) -> ImageCost:
    v = config.vision_config
    patch = getattr(v, "patch_size", 14)
    merge = getattr(v, "spatial_merge_size", 2)
    h, w = _smart_resize(height, width, patch * merge, max_pixels=max_pixels)
    patches = (h // patch) * (w // patch)
    tokens = patches // (merge * merge)
    return ImageCost(tokens, patches, f"resized to {w}x{h}px, {patch}px patches merged {merge}x{merge}")


def image_cost(config: Any, width: int | None = None, height: int | None = None,
               processor: dict[str, Any] | None = None, image_max_pixels: int | None = None) -> ImageCost:
    """Tokens and patches for one image of `width` x `height` (default 768x768); `image_max_pixels` is the
    preset's data.image_max_pixels, in each processor's own terms."""
    width, height = width or DEFAULT_IMAGE_SIZE[0], height or DEFAULT_IMAGE_SIZE[1]
    processor = dict(processor or {})
    kind = config.model_type
    if image_max_pixels and kind in ("idefics3", "smolvlm"):
        processor["size"] = {"longest_edge": idefics3_longest_edge(config, image_max_pixels)}
    elif image_max_pixels and kind in ("qwen2_vl", "qwen2_5_vl"):
        processor["max_pixels"] = min(image_max_pixels, processor.get("max_pixels", QWEN_MAX_PIXELS))
    if getattr(config, "mm_tokens_per_image", None):  # Gemma 3: pooled to a fixed count
        n = int(config.mm_tokens_per_image)
        v = config.vision_config
        patches = (_side(v.image_size) // _side(v.patch_size)) ** 2
        return ImageCost(n, patches, f"fixed {n} tokens per image")
    if kind in ("idefics3", "smolvlm"):
        size = processor.get("size") or {}
        return _idefics3(config, width, height, processor.get("do_image_splitting", True), size.get("longest_edge"))
    if kind in ("qwen2_vl", "qwen2_5_vl"):
        return _qwen_vl(config, width, height, processor.get("max_pixels", QWEN_MAX_PIXELS))
    v = getattr(config, "vision_config", None)
    if v is not None and getattr(v, "image_size", None) and getattr(v, "patch_size", None):
        side = _side(v.image_size)
        n = (side // _side(v.patch_size)) ** 2
        return ImageCost(n, n, f"fixed {side}px, {n} patches (one token each)")
    return ImageCost(0, 0, "text-only model")


def _side(size: Any) -> int:
    """Configs give sizes as an int or as (height, width) (InternVL): the larger side."""
    return max(size) if isinstance(size, (list, tuple)) else int(size)


def processor_image_cost(processor: Any, width: int | None = None, height: int | None = None) -> ImageCost | None:
    """Exact count with the model's own processor: one blank image of that size through its chat template.
    None when the processor does not say which token stands for an image."""
    from PIL import Image

    width, height = width or DEFAULT_IMAGE_SIZE[0], height or DEFAULT_IMAGE_SIZE[1]
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None or not getattr(processor, "chat_template", None):
        return None
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    try:
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        enc = processor(text=[text], images=[[Image.new("RGB", (width, height))]], return_tensors="pt")
    except Exception:  # a processor with other expectations: the caller falls back to the config's count
        return None
    tokens = int((enc["input_ids"][0] == token_id).sum())
    pixels = enc.get("pixel_values")
    tiles = int(pixels.shape[1]) if pixels is not None and pixels.dim() == 5 else 1
    return ImageCost(tokens, tokens, f"counted with the model's processor ({tiles} tile{'s' if tiles != 1 else ''})",
                     tiles)
