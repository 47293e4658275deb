"""Turn rows of a detected format into TRL's dataset types, checking each row as it goes.

Output rows (what SFTTrainer / DPOTrainer take):
  SFT, conversational:  {"messages": [{role, content}], "images": [...]}  or
                        {"prompt": [user turns], "completion": [assistant turn], "images": [...]}
  SFT, plain text:      {"prompt": str, "completion": str}  or  {"text": str}
  DPO, conversational:  {"prompt": [turns], "chosen": [turn], "rejected": [turn], "images": [...]}
  DPO, plain text:      {"prompt": str, "chosen": str, "rejected": str}
Images are {"bytes", "path"} dicts that `datasets.Image` decodes lazily; TRL places them before the
first user turn. Conversational output is used for VLMs and for tokenizers with a chat template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_core.base.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_ROW_CHARS, ImageTooLarge, open_image_header
from trainer_core.data.formats import Detected
from trainer_core.data.problems import DataProblem

ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
              "model": "assistant", "system": "system", "tool": "tool"}
IMAGE_PLACEHOLDER = re.compile(r"\s*<image>\s*")


@dataclass
class Converted:
    rows: list[dict[str, Any]]
    # source row index of each output row
    kept: list[int]
    problems: list[DataProblem]
    has_images: bool


class _RowError(Exception):
    def __init__(self, column: str | None, message: str):
        self.column, self.message = column, message


def _text(value: Any, column: str) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[0]  # e.g. ChartQA's label: ["7"]
    if value is None:
        raise _RowError(column, "is empty")
    if not isinstance(value, (str, int, float)):
        raise _RowError(column, f"expected text, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise _RowError(column, "is empty")
    return text


def _content_text(content: Any, column: str) -> tuple[str, int]:
    """A turn's content as text, and how many images it referenced."""
    if isinstance(content, str):
        return IMAGE_PLACEHOLDER.sub(" ", content).strip(), content.count("<image>")
    if isinstance(content, list):
        texts, images = [], 0
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image":
                images += 1
            elif isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text") or ""))
            else:
                raise _RowError(column, f"content part {part!r} is neither {{type: text}} nor {{type: image}}")
        return " ".join(t.strip() for t in texts).strip(), images
    if content is None:
        return "", 0
    raise _RowError(column, f"turn content must be text or a list of parts, got {type(content).__name__}")


def _turns(value: Any, column: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _RowError(column, "expected a non-empty list of turns")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise _RowError(column, f"turn {i} is not an object with role/content")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        mapped = ROLE_NAMES.get(str(role).lower()) if role is not None else None
        if mapped is None:
            raise _RowError(column, f"turn {i} has role {role!r}; expected user/assistant/system "
                                    "(or human/gpt in ShareGPT)")
        text, _ = _content_text(content, column)
        if not text and mapped == "assistant":
            raise _RowError(column, f"turn {i} (assistant) is empty")
        out.append({"role": mapped, "content": text})
    return out


class _ImageChecker:
    """Checks each distinct image once (rows often share images) and remembers the verdict."""

    def __init__(self, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self._seen: dict[Any, str | None] = {}
        self.max_pixels = max_pixels

    def problem(self, image: dict[str, Any]) -> str | None:
        key = image["path"] if image.get("path") and not image.get("bytes") else id(image.get("bytes"))
        if key not in self._seen:
            self._seen[key] = self._decode(image)
        return self._seen[key]

    def _decode(self, image: dict[str, Any]) -> str | None:
        import io

        from PIL import UnidentifiedImageError

        name = image.get("path") or "embedded image bytes"
        try:
            src = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
            with open_image_header(src) as im:
                # The size is in the header: an image too big to train on is refused before any decoding.
                too_big = _too_many_pixels(im.size, self.max_pixels, name)
                if too_big:
                    return too_big
                im.verify()  # checks the file's structure without keeping the pixels
        except ImageTooLarge as exc:
            return _bomb_problem(exc, name)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return f"image does not decode: {name} ({str(exc).splitlines()[0][:120] or type(exc).__name__})"
        return None


def _too_many_pixels(size: tuple[int, int], max_pixels: int, name: str) -> str | None:
    width, height = size
    if width * height <= max_pixels:
        return None
    return (f"image is {width:,} x {height:,} pixels ({width * height / 1e6:.1f} megapixels; data.max_image_pixels "
            f"is {max_pixels:,}): {name}; each training step would decode it whole. Resize it, or raise "
            "data.max_image_pixels")


def _bomb_problem(exc: ImageTooLarge, name: str) -> str:
    pixels = f"{exc.pixels / 1e6:.1f} megapixels" if exc.pixels else "too many pixels"
    return (f"image is too large to open ({pixels}; Pillow refuses it as a possible decompression bomb): {name}. "
            "Resize it")


def _images(value: Any, base_dir: Path | None, column: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict) and (item.get("bytes") or item.get("path")):
            if item.get("bytes"):
                out.append({"bytes": item["bytes"], "path": item.get("path")})
                continue
            item = item["path"]
        if hasattr(item, "save") and hasattr(item, "size"):  # a PIL image from a hub dataset
            import io

            buf = io.BytesIO()
            item.save(buf, format="PNG")
            out.append({"bytes": buf.getvalue(), "path": None})
            continue
        if not isinstance(item, str) or not item.strip():
            raise _RowError(column, f"expected an image path, got {type(item).__name__}")
        p = Path(item).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if not p.is_file():
            raise _RowError(column, f"image not found: {p}")
        out.append({"bytes": None, "path": str(p)})
    return out


def _as_assistant(value: Any, column: str) -> list[dict[str, str]]:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        turns = _turns(value, column)
        if turns[-1]["role"] != "assistant":
            raise _RowError(column, "the last turn must be the assistant's answer")
        return turns
    return [{"role": "assistant", "content": _text(value, column)}]


def _convert_row(row: dict[str, Any], det: Detected, conversational: bool, base_dir: Path | None) -> dict:
    m = det.mapping
    fmt = det.format.name
    out: dict[str, Any] = {}
    if "images" in m:
        out["images"] = _images(row.get(m["images"]), base_dir, m["images"])
    system = row.get(m["system"]) if "system" in m else None
    sys_turn = [{"role": "system", "content": str(system)}] if system else []

    if fmt == "messages":
        turns = _turns(row.get(m["messages"]), m["messages"])
        if turns[-1]["role"] != "assistant":
            raise _RowError(m["messages"], "the last turn is not the assistant's: there is no answer to learn")
        if not conversational:
            raise _RowError(m["messages"], "conversations need a chat template, and this tokenizer has none; "
                                           "use prompt/completion data or a model with a chat template")
        out["messages"] = turns
    elif fmt == "text":
        out["text"] = _text(row.get(m["text"]), m["text"])
    elif det.format.task == "sft":
        prompt = _text(row.get(m["prompt"]), m["prompt"])
        if "input" in m and row.get(m["input"]):
            prompt = f"{prompt}\n\n{row[m['input']]}"
        prompt = IMAGE_PLACEHOLDER.sub(" ", prompt).strip()
        completion = _text(row.get(m["completion"]), m["completion"])
        if conversational:
            out["prompt"] = [*sys_turn, {"role": "user", "content": prompt}]
            out["completion"] = [{"role": "assistant", "content": completion}]
        else:
            out["prompt"], out["completion"] = prompt, completion
    else:  # dpo
        chosen = _as_assistant(row.get(m["chosen"]), m["chosen"])
        rejected = _as_assistant(row.get(m["rejected"]), m["rejected"])
        if "prompt" in m:
            raw_prompt = row.get(m["prompt"])
            if isinstance(raw_prompt, list):
                prompt_turns = _turns(raw_prompt, m["prompt"])
            else:
                prompt_turns = [{"role": "user", "content": IMAGE_PLACEHOLDER.sub(" ", _text(raw_prompt, m["prompt"])).strip()}]
            prompt_turns = [*sys_turn, *prompt_turns]
        else:  # implicit prompt: the shared opening turns
            n = 0
            while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
                n += 1
            if n == 0:
                raise _RowError(m["chosen"], "chosen and rejected share no opening turns, so there is no prompt")
            prompt_turns, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        if chosen == rejected:
            raise _RowError(m["rejected"], "chosen and rejected are identical: nothing to prefer")
        if conversational:
            out["prompt"], out["chosen"], out["rejected"] = prompt_turns, chosen[-1:], rejected[-1:]
        else:
            out["prompt"] = "\n\n".join(t["content"] for t in prompt_turns)
            out["chosen"], out["rejected"] = chosen[-1]["content"], rejected[-1]["content"]
    return out


def _placeholders(row: dict[str, Any], det: Detected) -> int:
    """How many <image> placeholders the row's text holds (ShareGPT / LLaVA style)."""
    count = 0
    for role, col in det.mapping.items():
        if role == "images":
            continue
        value = row.get(col)
        if isinstance(value, str):
            count += value.count("<image>")
        elif isinstance(value, list):
            for turn in value:
                if isinstance(turn, dict):
                    text = turn.get("content", turn.get("value"))
                    if isinstance(text, str):
                        count += text.count("<image>")
    return count


def _chars(value: Any) -> int:
    """Characters of text in a cell, however nested (turns, content parts)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def _check_length(row: dict[str, Any], det: Detected) -> None:
    """A row past MAX_ROW_CHARS is a mistake (a document pasted into a cell); tokenizing it alone would take
    seconds and gigabytes, so it is refused by name before any other work."""
    sizes = {col: _chars(row.get(col)) for role, col in det.mapping.items() if role != "images"}
    total = sum(sizes.values())
    if total > MAX_ROW_CHARS:
        column = max(sizes, key=sizes.get)
        raise _RowError(column, f"the row holds {total:,} characters of text, over the limit of {MAX_ROW_CHARS:,} "
                                "(about 250,000 tokens, far past training.max_length): shorten or split it")


def _check_images(row: dict[str, Any], converted: dict[str, Any], det: Detected,
                  checker: _ImageChecker | None) -> None:
    images = converted.get("images") or []
    marks = _placeholders(row, det)
    if marks and marks != len(images):
        raise _RowError(det.mapping.get("images"), f"the text has {marks} <image> placeholder"
                        f"{'s' if marks != 1 else ''} but the row has {len(images)} image"
                        f"{'s' if len(images) != 1 else ''}")
    if checker is not None:
        for image in images:
            problem = checker.problem(image)
            if problem:
                raise _RowError(det.mapping.get("images"), problem)


def convert_rows(rows: list[dict[str, Any]], det: Detected, *, conversational: bool, base_dir: Path | None,
                 line_numbers: list[int] | None = None, check_images: bool = True,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Converted:
    out, kept, problems = [], [], []
    checker = _ImageChecker(max_image_pixels) if check_images else None
    for i, row in enumerate(rows):
        try:
            _check_length(row, det)
            converted = _convert_row(row, det, conversational, base_dir)
            _check_images(row, converted, det, checker)
            out.append(converted)
            kept.append(i)
        except _RowError as err:
            line = line_numbers[i] if line_numbers else None
            problems.append(DataProblem(i, err.column, err.message, line=line))
    has_images = any(r.get("images") for r in out)
    if has_images:
        for r in out:
            r.setdefault("images", [])
    else:
        for r in out:
            r.pop("images", None)
    return Converted(out, kept, problems, has_images)
