"""Load a model and its processor or tokenizer from a local folder or a hub id, chosen from its config.

VLMs (configs with a vision part) load with AutoModelForImageTextToText + AutoProcessor, text LLMs with
AutoModelForCausalLM + AutoTokenizer. Weights load as safetensors only; remote code only on request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_core.base.errors import VlmtuneError


class ModelLoadError(VlmtuneError, RuntimeError):
    """A model that cannot be loaded, said in words: what, where, and what to do."""


@dataclass
class LoadedModel:
    model: Any
    processing_class: Any  # a ProcessorMixin for VLMs, a tokenizer for text models
    tokenizer: Any
    is_vlm: bool
    precision: str  # bf16 | fp16 | fp32 as resolved


def _is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))


def _offline_kwargs(name_or_path: str) -> dict[str, Any]:
    """Without a reachable hub, read only the local cache: fails at once instead of retrying for minutes."""
    from trainer_core.model.hub import hub_reachable

    return {} if _is_local(name_or_path) or hub_reachable() else {"local_files_only": True}


def _unreachable(name: str, exc: Exception) -> ModelLoadError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(
        f"could not reach the model {name!r} on the Hugging Face hub ({first}). This machine may have no "
        "network, or the id may be wrong or gated (set HF_TOKEN for gated models). A local path works: "
        "download the model where there is network (`hf download ID --local-dir DIR`) and set "
        "model.name_or_path to that folder."
    )


def load_config(name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """The model's config (config.json only: no weights are read)."""
    from transformers import AutoConfig

    if _is_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model folder not found: {path}")
        if path.is_file():
            raise ModelLoadError(f"{path} is a file; model.name_or_path must be the model's folder "
                                 "(the one holding config.json)")
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} has no config.json, so it is not a Hugging Face model folder "
                                 "(it should hold config.json and *.safetensors)")
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision,
                                          **_offline_kwargs(name_or_path))
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{name_or_path!r} needs custom code from its repository. Set model.trust_remote_code: true only "
                "if you trust that code (it runs on this machine)."
            ) from None
        if "model type" in str(exc) or "Unrecognized" in str(exc):
            raise ModelLoadError(f"transformers does not know this model's architecture: {str(exc).splitlines()[0]}. "
                                 "Upgrade transformers, or use trust_remote_code if the model ships its code.") from None
        raise
    except OSError as exc:
        if _is_local(name_or_path):
            raise ModelLoadError(f"could not read the model config in {name_or_path}: {exc}") from None
        raise _unreachable(name_or_path, exc) from None
    except Exception as exc:  # network layers raise many types (httpx, requests, hub errors)
        if _is_local(name_or_path):
            raise
        raise _unreachable(name_or_path, exc) from None


def is_vision_config(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return getattr(config, "vision_config", None) is not None or (
        config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        and config.model_type not in _TEXT_ONLY_IN_VLM_MAPPING
    )


# Text LLMs that also appear in the image-text-to-text mapping (none today; kept as the one place to add them).
_TEXT_ONLY_IN_VLM_MAPPING: frozenset[str] = frozenset()


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    import torch

    # Without emulation: torch otherwise says yes on a T4/V100, where bf16 is emulated and very slow.
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, quantization: str = "none") -> str:
    """auto = bf16 where the GPU supports it, else fp16 on CUDA, else fp32 (CPU)."""
    if precision == "auto":
        if bf16_supported():
            return "bf16"
        if cuda_available():
            return "fp16"
        # bitsandbytes' CPU kernels compute quantized layers in bf16; plain CPU training is exact in fp32.
        return "bf16" if quantization != "none" else "fp32"
    if precision == "fp16" and not cuda_available():
        raise ModelLoadError("precision fp16 needs a CUDA GPU (mixed precision with fp16 is not available on CPU); "
                             "use precision: auto (fp32 on CPU) or bf16")
    if precision == "bf16" and cuda_available() and not bf16_supported():
        raise ModelLoadError("this GPU does not support bf16 (it needs compute capability 8.0+, e.g. A100, "
                             "RTX 30xx or newer); use precision: fp16 or auto")
    return precision


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def quantization_config(quantization: str, precision: str):
    """BitsAndBytesConfig for 8-bit, or 4-bit NF4 + double quantization (QLoRA); None for none."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = "bf16" if precision == "fp32" else precision
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch_dtype(compute),
        # Equal to the compute dtype so that FSDP can shard the packed weights.
        bnb_4bit_quant_storage=torch_dtype(compute),
    )


def load_processing_class(name_or_path: str, is_vlm: bool, *, trust_remote_code: bool = False,
                          revision: str | None = None):
    from transformers import AutoProcessor, AutoTokenizer

    loader = AutoProcessor if is_vlm else AutoTokenizer
    try:
        proc = loader.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision,
                                      **_offline_kwargs(name_or_path))
    except OSError as exc:
        if _is_local(name_or_path):
            raise ModelLoadError(f"could not load the {'processor' if is_vlm else 'tokenizer'} from "
                                 f"{name_or_path}: {str(exc).splitlines()[0]}") from None
        raise _unreachable(name_or_path, exc) from None
    tokenizer = getattr(proc, "tokenizer", proc)
    if tokenizer.pad_token is None:
        # Padding with EOS is the usual choice for decoder-only models without a pad token.
        tokenizer.pad_token = tokenizer.eos_token
    return proc, tokenizer


def apply_image_max_pixels(processor: Any, config: Any, image_max_pixels: int | None) -> str | None:
    """Set data.image_max_pixels on a VLM processor in its own terms (SmolVLM/Idefics3: the longest edge in whole
    tiles; Qwen2-VL: max_pixels). Returns why it has no effect (a fixed-size model such as LLaVA), else None."""
    from trainer_core.model.image_tokens import has_resolution_knob, idefics3_longest_edge

    image_processor = getattr(processor, "image_processor", None)
    if not image_max_pixels or image_processor is None:
        return None
    kind = config.model_type
    if not has_resolution_knob(config):
        return (f"data.image_max_pixels has no effect on {kind}: its processor resizes every image to one fixed "
                "size (the image tokens per image do not change)")
    if kind in ("idefics3", "smolvlm"):
        image_processor.size = {"longest_edge": idefics3_longest_edge(config, image_max_pixels)}
    else:  # Qwen2-VL / Qwen2.5-VL: size carries the pixel budget (min as shortest_edge, max as longest_edge)
        size = dict(image_processor.size or {})
        low = min(int(size.get("shortest_edge") or 56 * 56), image_max_pixels)
        image_processor.size = {"shortest_edge": low, "longest_edge": image_max_pixels}
        for name, value in (("max_pixels", image_max_pixels), ("min_pixels", low)):
            if hasattr(image_processor, name):
                setattr(image_processor, name, value)
    return None


def load_model(name_or_path: str, *, precision: str = "auto", quantization: str = "none",
               trust_remote_code: bool = False, revision: str | None = None,
               attn_implementation: str | None = None, device_map: Any = None, config: Any = None,
               processing: tuple[Any, Any] | None = None) -> LoadedModel:
    """`config` and `processing` (processor, tokenizer): what the caller already loaded, not read again."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    if config is None:
        config = load_config(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    is_vlm = is_vision_config(config)
    resolved = resolve_precision(precision, quantization)
    bnb = quantization_config(quantization, resolved)
    processing_class, tokenizer = processing or load_processing_class(
        name_or_path, is_vlm, trust_remote_code=trust_remote_code, revision=revision
    )
    kwargs: dict[str, Any] = {
        "trust_remote_code": trust_remote_code,
        "revision": revision,
        "use_safetensors": True,
        **_offline_kwargs(name_or_path),
        # Weights stay in the training precision: bf16/fp16 halve the memory of fp32.
        "dtype": torch_dtype(resolved),
        "config": config,
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if bnb is not None:
        kwargs["quantization_config"] = bnb
        # Each process keeps its whole quantized model on its own GPU (right under DDP); under FSDP the
        # wrapper places the shards itself.
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() not in ("1", "true"):
            kwargs["device_map"] = device_map if device_map is not None else {"": _local_device()}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    auto = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(name_or_path, **kwargs)
    except OSError as exc:
        msg = str(exc)
        if "safetensors" in msg.lower() or ".bin" in msg:
            raise ModelLoadError(f"{name_or_path} has no .safetensors weights; vlmtune loads only safetensors "
                                 "(pickled .bin files can run code). Convert them with a trusted script first.") from None
        if _is_local(name_or_path):
            raise ModelLoadError(f"could not load the weights in {name_or_path}: {msg.splitlines()[0]}") from None
        raise _unreachable(name_or_path, exc) from None
    return LoadedModel(model, processing_class, tokenizer, is_vlm, resolved)


def _local_device() -> int | str:
    return int(os.environ.get("LOCAL_RANK", "0")) if cuda_available() else "cpu"
