"""Turn rows of a detected format into TRL's dataset types, checking each row as it goes.

Output rows (what SFTTrainer / DPOTrainer take):
  SFT, conversational:  {"messages": [{role, content}], "images": [...]}  or
                        {"prompt": [user turns], "completion": [assistant turn], "images": [...]}
  SFT, plain text:      {"prompt": str, "completion": str}  or  {"text": str}
  DPO, conversational:  {"prompt": [turns], "chosen": [turn], "rejected": [turn], "images": [...]}
  DPO, plain text:      {"prompt": str, "chosen": str, "rejected": str}
Images are {"bytes", "path"} dicts that `datasets.Image` decodes lazily; TRL places them before the
first user turn; image URLs are downloaded once into a cache (remote_images). Conversational output is
used for VLMs and for tokenizers with a chat template. A system column becomes the first turn, a history
column ([[instruction, response], ...]) the turns before the prompt; tool calls stay on their assistant
turns (`tool_calls`) and a `tools` column becomes a JSON string, both as TRL hands them to the chat template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_core.base.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_ROW_CHARS, ImageTooLarge, open_image_header
from trainer_core.data.formats import Detected
from trainer_core.data.problems import DataProblem
from trainer_core.data.remote_images import fetch_all, is_url

CALL = "tool call"  # internal role of a turn whose content is a tool call (expanded into assistant.tool_calls)

ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
              "model": "assistant", "system": "system", "tool": "tool",
              # tool results: LLaMA-Factory's observation, ms-swift's tool_response, OpenAI's legacy function role
              "observation": "tool", "tool_response": "tool", "function": "tool", "ipython": "tool",
              # a turn whose content is the call itself ({"name", "arguments"} as JSON): LLaMA-Factory, ms-swift
              "function_call": CALL, "tool_call": CALL}
IMAGE_PLACEHOLDER = re.compile(r"\s*<image>\s*")
VIDEO_REASON = ("vlmtune trains on images and text, not video: drop these rows, or extract frames into the "
                "images column")
AUDIO_REASON = "vlmtune trains on images and text, not audio: drop these rows"


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
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                images += 1
            elif kind == "text":
                texts.append(str(part.get("text") or ""))
            elif kind in ("video", "video_url"):
                raise _RowError(column, f"a turn holds a video part; {VIDEO_REASON}")
            elif kind in ("audio", "input_audio"):
                raise _RowError(column, f"a turn holds an audio part; {AUDIO_REASON}")
            elif kind == "image_url":
                raise _RowError(column, "a turn holds an OpenAI image_url part, which is not read: put the image's "
                                        "path or URL in an images column and a {type: image} part (or <image>) "
                                        "where it goes")
            elif kind in ("tool_use", "tool_result"):
                raise _RowError(column, f"a turn holds an Anthropic {kind} block, which is not read: write tool "
                                        "calls as the assistant's tool_calls and results as role tool turns")
            else:
                raise _RowError(column, f"content part {part!r} is neither {{type: text}} nor {{type: image}}")
        return " ".join(t.strip() for t in texts).strip(), images
    if content is None:
        return "", 0
    raise _RowError(column, f"turn content must be text or a list of parts, got {type(content).__name__}")


def _json(value: Any, column: str, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise _RowError(column, f"{what} is not valid JSON ({exc.msg} at character {exc.pos}): "
                                f"{value[:80]!r}") from None


def _tool_call(call: Any, column: str, where: str) -> dict[str, Any]:
    """One call as chat templates take it: {type: function, function: {name, arguments: dict}}."""
    call = _json(call, column, f"{where}'s tool call")
    fn = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise _RowError(column, f"{where} has a tool call without a function name: {str(call)[:80]!r}; "
                                'expected {"name": ..., "arguments": {...}}')
    args = _json(fn.get("arguments", fn.get("parameters", {})), column, f"{where}'s tool call arguments")
    return {"type": "function", "function": {"name": fn["name"], "arguments": args if args is not None else {}}}


def _calls(value: Any, column: str, where: str) -> list[dict[str, Any]]:
    value = _json(value, column, f"{where}'s tool call")
    items = value if isinstance(value, list) else [value]
    return [_tool_call(c, column, where) for c in items]


class _Reader:
    """How turns are spelled: role/content keys and role names (defaults, or LLaMA-Factory-style tags)."""

    def __init__(self, tags: dict[str, str]) -> None:
        self.role_keys = (tags["role_tag"],) if tags.get("role_tag") else ("role", "from")
        self.content_keys = (tags["content_tag"],) if tags.get("content_tag") else ("content", "value")
        self.names = dict(ROLE_NAMES)
        for tag, role in (("user_tag", "user"), ("assistant_tag", "assistant"), ("observation_tag", "tool"),
                          ("function_tag", CALL), ("system_tag", "system")):
            if tags.get(tag):
                self.names[tags[tag].lower()] = role

    def get(self, turn: dict[str, Any], keys: tuple[str, ...]) -> Any:
        return next((turn[k] for k in keys if k in turn), None)

    def turns(self, value: Any, column: str) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not value:
            raise _RowError(column, "expected a non-empty list of turns")
        out: list[dict[str, Any]] = []
        for i, turn in enumerate(value):
            if not isinstance(turn, dict):
                raise _RowError(column, f"turn {i} is not an object with role/content")
            role = self.get(turn, self.role_keys)
            if role is None and any(k in turn for k in ("human", "assistant")):
                # ms-swift's ShareGPT: each item is one exchange, {"human": ..., "assistant": ...}
                out += [{"role": "user", "content": _content_text(turn.get("human"), column)[0]},
                        {"role": "assistant", "content": _text(turn.get("assistant"), column)}]
                continue
            mapped = self.names.get(str(role).lower()) if role is not None else None
            if mapped is None:
                names = "/".join(self.names)
                raise _RowError(column, f"turn {i} has role {role!r}; expected one of {names} (under the key "
                                        f"{'/'.join(self.role_keys)})")
            content = self.get(turn, self.content_keys)
            if mapped == CALL:
                calls = _calls(content, column, f"turn {i}")
                # Consecutive call turns are one assistant turn making parallel calls (ms-swift's tool_call).
                if out and out[-1].get("_calls_only"):
                    out[-1]["tool_calls"] += calls
                else:
                    out.append({"role": "assistant", "content": "", "tool_calls": calls, "_calls_only": True})
                continue
            text, _ = _content_text(content, column)
            entry: dict[str, Any] = {"role": mapped, "content": text}
            if mapped == "assistant" and turn.get("tool_calls"):
                entry["tool_calls"] = _calls(turn["tool_calls"], column, f"turn {i}")
            elif not text and mapped == "assistant":
                raise _RowError(column, f"turn {i} (assistant) is empty")
            out.append(entry)
        for t in out:
            t.pop("_calls_only", None)
        return out

    def answer(self, value: Any, column: str) -> list[dict[str, Any]]:
        """An answer given as text, as one {role, content} message (LLaMA-Factory's sharegpt ranking) or as
        turns ending with the assistant's."""
        if isinstance(value, dict):
            value = [value]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            turns = self.turns(value, column)
            if turns[-1]["role"] != "assistant":
                raise _RowError(column, "the last turn must be the assistant's answer")
            return turns
        return [{"role": "assistant", "content": _text(value, column)}]


def _history(value: Any, column: str) -> list[dict[str, str]]:
    """LLaMA-Factory / ms-swift history: [[instruction, response], ...], the turns before this one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if not isinstance(value, list):
        raise _RowError(column, f"history must be a list of [instruction, response] pairs, got "
                                f"{type(value).__name__}")
    turns = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise _RowError(column, f"history item {i} is not an [instruction, response] pair of texts: "
                                    f"{str(pair)[:80]!r}")
        turns += [{"role": "user", "content": IMAGE_PLACEHOLDER.sub(" ", pair[0]).strip()},
                  {"role": "assistant", "content": pair[1]}]
    return turns


def _tools(value: Any, column: str) -> str | None:
    """The tool schemas as a JSON string: TRL parses a string, and a string keeps each row's schema exact
    (Arrow would merge differing schemas into one struct, adding null fields to every tool)."""
    if value is None or (isinstance(value, (str, list)) and not value):
        return None
    parsed = _json(value, column, "tools")
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
        raise _RowError(column, "tools must be a JSON list of tool schemas ({name, description, parameters} "
                                "or {type: function, function: {...}})")
    return json.dumps(parsed, ensure_ascii=False) if parsed else None


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


def _images(value: Any, base_dir: Path | None, column: str, remote: dict[str, Path | str]) -> list[dict[str, Any]]:
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
        if is_url(item):
            got = remote.get(item.strip())
            if not isinstance(got, Path):
                raise _RowError(column, f"image URL could not be downloaded: {got or item}. Check the URL, or "
                                        "download the images and put their local paths in the column")
            out.append({"bytes": None, "path": str(got)})
            continue
        p = Path(item).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if not p.is_file():
            raise _RowError(column, f"image not found: {p}")
        out.append({"bytes": None, "path": str(p)})
    return out


def _remote_images(rows: list[dict[str, Any]], det: Detected) -> dict[str, Path | str]:
    """Image URLs of these rows, each downloaded once (cached): url -> local path, or why it failed."""
    col = det.mapping.get("images")
    if col is None:
        return {}
    urls = []
    for row in rows:
        value = row.get(col)
        for item in value if isinstance(value, list) else [value]:
            item = item.get("path") if isinstance(item, dict) and not item.get("bytes") else item
            if is_url(item):
                urls.append(item.strip())
    if not urls:
        return {}
    paths, failures = fetch_all(urls)
    return {**paths, **failures}


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (str, list, dict, tuple)):
        return bool(value)
    return True


def _refuse_unsupported(row: dict[str, Any], m: dict[str, str]) -> None:
    """Columns that carry meaning vlmtune cannot train on: refused by row, never ignored."""
    if "videos" in m and _present(row.get(m["videos"])):
        raise _RowError(m["videos"], f"the row has videos; {VIDEO_REASON}")
    if "audios" in m and _present(row.get(m["audios"])):
        raise _RowError(m["audios"], f"the row has audio; {AUDIO_REASON}")
    if "label" in m and _present(row.get(m["label"])):
        raise _RowError(m["label"], f"the row has a label ({str(row[m['label']])[:20]}): KTO-style good/bad "
                                    "feedback, which SFT and DPO have no place for (SFT would learn the bad "
                                    "answers too). Pair answers into prompt/chosen/rejected for DPO, or drop the "
                                    "rejected rows and the column for SFT")


def _implicit_text(chosen: str, rejected: str, column: str) -> tuple[str, str, str]:
    """TRL's implicit prompt for plain text: the shared prefix, the answers keeping their leading space
    ("The sky is" + " blue." / " green.")."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == len(chosen) == len(rejected):
        raise _RowError(column, "chosen and rejected are identical: nothing to prefer")
    if n > 0 and chosen[n - 1] == " ":
        n -= 1
    if not chosen[:n].strip():
        raise _RowError(column, "chosen and rejected share no opening text, so there is no prompt; give a "
                                "prompt column")
    return chosen[:n], chosen[n:], rejected[n:]


def _lead(turns: list[dict[str, Any]], sys_turn: list[dict[str, Any]],
          history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """System first, then the history, then the turns. A system turn already in the data wins over a system
    column (LLaMA-Factory: the system tag overrides the column), so there is never a second one."""
    if turns and turns[0]["role"] == "system":
        return [turns[0], *history, *turns[1:]]
    return [*sys_turn, *history, *turns]


def _plain(turns: list[dict[str, Any]]) -> str:
    return "\n\n".join(t["content"] for t in turns if t["content"])


def _has_tool_turns(*turn_lists: list[dict[str, Any]]) -> bool:
    """Whether any turn calls a tool or answers as one (checked before turns are flattened to plain text)."""
    return any(t.get("tool_calls") or t["role"] == "tool" for turns in turn_lists for t in turns)


def _convert_row(row: dict[str, Any], det: Detected, conversational: bool, base_dir: Path | None,
                 remote: dict[str, Path | str], tools_supported: bool | None) -> dict:
    m = det.mapping
    fmt = det.format.name
    reader = _Reader(det.tags)
    _refuse_unsupported(row, m)
    out: dict[str, Any] = {}
    if "images" in m:
        out["images"] = _images(row.get(m["images"]), base_dir, m["images"], remote)
    system = row.get(m["system"]) if "system" in m else None
    sys_turn = [{"role": "system", "content": _text(system, m["system"])}] if _present(system) else []
    history = _history(row.get(m["history"]), m["history"]) if "history" in m else []
    if "tools" in m:
        out["tools"] = _tools(row.get(m["tools"]), m["tools"])

    if fmt in ("messages", "text") or det.format.task == "sft":
        calls = _sft_fields(row, det, reader, sys_turn, history, conversational, out)
    else:
        calls = _dpo_fields(row, det, reader, sys_turn, history, conversational, out)
        if calls is None:  # plain-text implicit preferences: no turns, so no tool calls either
            return out
    _check_tools(calls, out, m, conversational, tools_supported)
    return out


def _sft_fields(row: dict[str, Any], det: Detected, reader: Any, sys_turn: list[dict[str, Any]],
                history: list[dict[str, Any]], conversational: bool, out: dict[str, Any]) -> bool:
    """SFT's TRL fields into `out`; whether the row calls tools."""
    m, fmt = det.mapping, det.format.name
    if fmt == "messages":
        turns = reader.turns(row.get(m["messages"]), m["messages"])
        if turns[-1]["role"] != "assistant":
            raise _RowError(m["messages"], "the last turn is not the assistant's: there is no answer to learn")
        if not conversational:
            raise _RowError(m["messages"], "conversations need a chat template, and this tokenizer has none; "
                                           "use prompt/completion data or a model with a chat template")
        # A system column (LLaMA-Factory, ms-swift) leads, unless the turns already open with one.
        out["messages"] = _lead(turns, sys_turn, [])
        calls = _has_tool_turns(turns)
    elif fmt == "text":
        out["text"] = _text(row.get(m["text"]), m["text"])
        calls = False
    else:
        raw_prompt, raw_completion = row.get(m["prompt"]), row.get(m["completion"])
        if isinstance(raw_prompt, list) and raw_prompt and isinstance(raw_prompt[0], dict):
            # TRL's conversational prompt/completion: both are lists of turns
            prompt_turns = _lead(reader.turns(raw_prompt, m["prompt"]), sys_turn, history)
            completion_turns = reader.answer(raw_completion, m["completion"])
            if not conversational:
                raise _RowError(m["prompt"], "turns need a chat template, and this tokenizer has none; use "
                                             "plain-text prompt/completion or a model with a chat template")
        else:
            prompt = _text(raw_prompt, m["prompt"])
            if "input" in m and _present(row.get(m["input"])):
                prompt = f"{prompt}\n{row[m['input']]}"  # LLaMA-Factory and ms-swift: instruction\ninput
            prompt = IMAGE_PLACEHOLDER.sub(" ", prompt).strip()
            prompt_turns = [*sys_turn, *history, {"role": "user", "content": prompt}]
            completion_turns = [{"role": "assistant", "content": _text(raw_completion, m["completion"])}]
        calls = _has_tool_turns(prompt_turns, completion_turns)
        if conversational:
            out["prompt"], out["completion"] = prompt_turns, completion_turns
        else:
            # Without a chat template, system and history still reach the model, as text before the prompt.
            out["prompt"], out["completion"] = _plain(prompt_turns), completion_turns[-1]["content"]
    return calls


def _dpo_fields(row: dict[str, Any], det: Detected, reader: Any, sys_turn: list[dict[str, Any]],
                history: list[dict[str, Any]], conversational: bool, out: dict[str, Any]) -> bool | None:
    """DPO's TRL fields into `out`; whether the row calls tools (None: plain text, nothing to check)."""
    m, fmt = det.mapping, det.format.name
    if fmt == "messages_rejected":
        # ms-swift: messages end with the chosen answer; rejected_response replaces it
        turns = reader.turns(row.get(m["messages"]), m["messages"])
        if turns[-1]["role"] != "assistant" or len(turns) < 2:
            raise _RowError(m["messages"], "the last turn must be the chosen answer (the assistant's), after "
                                           "at least one user turn")
        prompt_turns, chosen = _lead(turns[:-1], sys_turn, []), turns[-1:]
        rejected = reader.answer(row.get(m["rejected"]), m["rejected"])
    elif fmt == "implicit_preference" and isinstance(row.get(m["chosen"]), str) \
            and isinstance(row.get(m["rejected"]), str):
        prompt, chosen_text, rejected_text = _implicit_text(_text(row[m["chosen"]], m["chosen"]),
                                                            _text(row[m["rejected"]], m["rejected"]),
                                                            m["rejected"])
        # Plain text stays plain: the prompt is the start of a text, not a user's message.
        out.update(prompt=prompt, chosen=chosen_text, rejected=rejected_text)
        return None
    else:
        chosen = reader.answer(row.get(m["chosen"]), m["chosen"])
        rejected = reader.answer(row.get(m["rejected"]), m["rejected"])
        if "prompt" in m:
            raw_prompt = row.get(m["prompt"])
            if isinstance(raw_prompt, list):
                prompt_turns = _lead(reader.turns(raw_prompt, m["prompt"]), sys_turn, history)
            else:
                text = _text(raw_prompt, m["prompt"])
                if "input" in m and _present(row.get(m["input"])):
                    text = f"{text}\n{row[m['input']]}"
                prompt_turns = [*sys_turn, *history,
                                {"role": "user", "content": IMAGE_PLACEHOLDER.sub(" ", text).strip()}]
        else:  # implicit prompt: the shared opening turns
            n = 0
            while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
                n += 1
            if n == 0:
                raise _RowError(m["chosen"], "chosen and rejected share no opening turns, so there is no prompt")
            prompt_turns, chosen, rejected = _lead(chosen[:n], sys_turn, []), chosen[n:], rejected[n:]
    if chosen == rejected:
        raise _RowError(m["rejected"], "chosen and rejected are identical: nothing to prefer")
    calls = _has_tool_turns(prompt_turns, chosen[-1:], rejected[-1:])
    if conversational:
        out["prompt"], out["chosen"], out["rejected"] = prompt_turns, chosen[-1:], rejected[-1:]
    else:
        out["prompt"] = _plain(prompt_turns)
        out["chosen"], out["rejected"] = chosen[-1]["content"], rejected[-1]["content"]
    return calls


def _check_tools(calls: bool, out: dict[str, Any], m: dict[str, str], conversational: bool,
                 tools_supported: bool | None) -> None:
    """Rows that call tools train only where a chat template renders them: refused, never flattened away."""
    if calls or out.get("tools"):
        where = m.get("tools") or m.get("messages") or m.get("prompt")
        if not conversational:
            raise _RowError(where, "the row calls tools, which only a chat template can render, and this "
                                   "tokenizer has none; pick a model whose chat template supports tools")
        if tools_supported is False:
            raise _RowError(where, "the row calls tools, and this model's chat template does not render tools "
                                   "or tool calls (they would vanish from the training text); pick a model whose "
                                   "chat template supports tools, or drop these rows")


def _count_placeholders(value: Any) -> int:
    if isinstance(value, str):
        return value.count("<image>")
    if isinstance(value, dict):
        return sum(_count_placeholders(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_placeholders(v) for v in value)
    return 0


def _placeholders(row: dict[str, Any], det: Detected) -> int:
    """How many <image> placeholders the row's text holds (ShareGPT / LLaVA / LLaMA-Factory style)."""
    return sum(_count_placeholders(row.get(col)) for role, col in det.mapping.items()
               if role not in ("images", "tools", "videos", "audios", "label"))


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
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, tools_supported: bool | None = None) -> Converted:
    """`tools_supported`: whether the model's chat template renders tools (`template_supports_tools`); rows
    that call tools are refused when it is False, kept when True or unknown (None, e.g. no model given)."""
    out, kept, problems = [], [], []
    checker = _ImageChecker(max_image_pixels) if check_images else None
    remote = _remote_images(rows, det)
    for i, row in enumerate(rows):
        try:
            _check_length(row, det)
            converted = _convert_row(row, det, conversational, base_dir, remote, tools_supported)
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


def template_supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders a tool schema, a tool call and a tool result: one tiny conversation
    through it, looking for each. A template that ignores them would train on rows with the calls gone."""
    template_owner = getattr(tokenizer, "tokenizer", tokenizer)
    if not getattr(template_owner, "chat_template", None):
        return False
    tools = [{"type": "function", "function": {"name": "vlmtune_probe_tool", "description": "probe",
                                               "parameters": {"type": "object", "properties": {}}}}]
    turns = [{"role": "user", "content": "hi"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"type": "function", "function": {"name": "vlmtune_probe_call", "arguments": {}}}]},
             {"role": "tool", "content": "vlmtune_probe_result"},
             {"role": "assistant", "content": "done"}]
    try:
        text = template_owner.apply_chat_template(turns, tools=tools, tokenize=False)
    except Exception:  # templates raise their own errors (e.g. "roles must alternate") for what they lack
        return False
    return all(mark in text for mark in ("vlmtune_probe_tool", "vlmtune_probe_call", "vlmtune_probe_result"))
