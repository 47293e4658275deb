"""Talk to a model: load base (+ adapter), build the prompt with the chat template, generate or stream.

The same `generate` serves `vlmtune chat --prompt`, the sample outputs during training and (through
`stream`) the chat pane.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_core.base.limits import check_chat_template
from trainer_core.model.loading import LoadedModel, ModelLoadError, load_model


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0


def resolve_adapter(path: str | Path) -> Path:
    """A run directory or an adapter folder -> the adapter folder."""
    p = Path(path).expanduser()
    if (p / "adapter_config.json").exists():
        return p
    if (p / "adapter" / "adapter_config.json").exists():
        return p / "adapter"
    if p.exists():
        raise ModelLoadError(f"{p} holds no LoRA adapter (no adapter_config.json there or in {p / 'adapter'}); "
                             "give a run directory or its adapter/ folder")
    raise ModelLoadError(f"adapter not found: {p}")


def base_model_of(adapter_dir: Path) -> str:
    import json

    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    return config.get("base_model_name_or_path") or ""


def load_for_chat(model: str | None, adapter: str | Path | None = None, *, precision: str = "auto",
                  trust_remote_code: bool = False) -> LoadedModel:
    adapter_dir = resolve_adapter(adapter) if adapter else None
    if model is None:
        if adapter_dir is None:
            raise ModelLoadError("give --model (a base model) or --adapter (a run directory)")
        model = base_model_of(adapter_dir)
        if not model:
            raise ModelLoadError(f"{adapter_dir} does not name its base model; give --model")
    loaded = load_model(model, precision=precision, trust_remote_code=trust_remote_code)
    # A template that never finishes would hang the first answer: refuse it now, by name.
    check_chat_template(loaded.processing_class if loaded.is_vlm else loaded.tokenizer, loaded.is_vlm)
    if adapter_dir is not None:
        from peft import PeftModel

        loaded.model = PeftModel.from_pretrained(loaded.model, str(adapter_dir))
    loaded.model.eval()
    import torch

    if torch.cuda.is_available() and not getattr(loaded.model, "hf_device_map", None):
        loaded.model.to("cuda")
    return loaded


def _open_image(image: Any):
    if image is None:
        return None
    if hasattr(image, "convert"):
        return image.convert("RGB")
    from PIL import Image, UnidentifiedImageError

    path = Path(image).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image that Pillow can read") from None


def build_inputs(processing_class: Any, is_vlm: bool, messages: list[dict[str, Any]],
                 images: list[Any] | None = None, device: Any = None):
    """Tokenised inputs for `messages` (with string contents) plus optional images, on `device`."""
    pil = [_open_image(i) for i in images or []]
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    check_chat_template(processing_class if is_vlm else tokenizer, is_vlm)  # once per template; bounded
    if is_vlm:
        content_msgs = []
        placed = False
        for m in messages:
            parts: list[dict[str, Any]] = []
            if m["role"] == "user" and not placed and pil:
                parts += [{"type": "image"} for _ in pil]
                placed = True
            parts.append({"type": "text", "text": m["content"]})
            content_msgs.append({"role": m["role"], "content": parts})
        text = processing_class.apply_chat_template(content_msgs, add_generation_prompt=True)
        inputs = processing_class(text=[text], images=[pil] if pil else None, return_tensors="pt")
    else:
        if pil:
            raise ValueError("this is a text-only model: it cannot take an image")
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(m["content"] for m in messages)
        inputs = tokenizer([text], return_tensors="pt", add_special_tokens=not getattr(tokenizer, "chat_template", None))
    return inputs.to(device) if device is not None else inputs


def _gen_kwargs(settings: GenerationSettings, tokenizer: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    if settings.temperature > 0:
        kw.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kw


def generate(model: Any, processing_class: Any, is_vlm: bool, prompt: str, image: Any = None,
             settings: GenerationSettings | None = None, history: list[dict[str, Any]] | None = None) -> str:
    import torch

    settings = settings or GenerationSettings()
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    device = next(model.parameters()).device
    messages = [*(history or []), {"role": "user", "content": prompt}]
    inputs = build_inputs(processing_class, is_vlm, messages, [image] if image is not None else None, device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(**inputs, **_gen_kwargs(settings, tokenizer))
    finally:
        if was_training:
            model.train()
    new_tokens = out[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def stream(model: Any, processing_class: Any, is_vlm: bool, messages: list[dict[str, Any]],
           images: list[Any] | None = None, settings: GenerationSettings | None = None,
           stop: threading.Event | None = None, base: bool = False) -> Iterator[str]:
    """Yield text chunks as they are generated (generation runs in a helper thread).
    `base=True` answers with the LoRA adapter switched off: the base model, without a second copy."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    settings = settings or GenerationSettings()
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    device = next(model.parameters()).device
    inputs = build_inputs(processing_class, is_vlm, messages, images, device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    abandoned = threading.Event()  # set when the consumer leaves early; the caller's `stop` is left alone

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001
            return abandoned.is_set() or bool(stop and stop.is_set())

    kwargs = {**inputs, **_gen_kwargs(settings, tokenizer), "streamer": streamer,
              "stopping_criteria": StoppingCriteriaList([_Stop()])}
    failure: list[BaseException] = []

    def run() -> None:
        import contextlib

        adapter_off = model.disable_adapter() if base and hasattr(model, "disable_adapter") else contextlib.nullcontext()
        try:
            with torch.no_grad(), adapter_off:
                model.generate(**kwargs)
        except BaseException as exc:  # handed to the consumer below
            failure.append(exc)
            streamer.end()  # without the end marker the consumer would wait forever

    model.eval()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        abandoned.set()  # a consumer that leaves early stops the generation too
        thread.join()
    if failure:
        raise failure[0]
