"""Dataset statistics the planner needs: rows, prompt/answer token lengths, images per row and sizes."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer_core.base.limits import ImageTooLarge, open_image_header
from trainer_core.config.presets import DataSection
from trainer_core.data.formats import detect_format
from trainer_core.data.sources import read_rows
from trainer_core.data.to_trl import convert_rows

# Without the model's tokenizer (e.g. a hub model planned offline): English text averages ~3.6
# characters per token with today's BPE vocabularies.
CHARS_PER_TOKEN = 3.6


@dataclass(frozen=True)
class Lengths:
    p50: int
    p95: int
    max: int

    @classmethod
    def of(cls, values: list[int]) -> Lengths:
        if not values:
            return cls(0, 0, 0)
        ordered = sorted(values)
        return cls(int(statistics.median(ordered)), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
                   ordered[-1])


@dataclass(frozen=True)
class DataStats:
    rows: int
    sampled: int
    format: str
    prompt_tokens: Lengths
    answer_tokens: Lengths
    total_tokens: Lengths
    images_per_row: float
    image_width: Lengths
    image_height: Lengths
    token_source: str  # "tokenizer" or the estimate used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text_of(turns: Any) -> str:
    if isinstance(turns, str):
        return turns
    return "\n".join(t["content"] for t in turns)


STATS_SAMPLE = 2000  # rows measured: token lengths settle long before, and big sets stay cheap
# The tokenizer reads at most this much of one text (a longer one is extrapolated from its start: its exact
# length is beyond any max_length anyway), and this much in all (the rest at the ratio measured so far).
# A 4 MB row took 19 s and 1.4 GB to tokenize whole.
TOKENIZE_CHARS = 65_536
TOKENIZE_BUDGET = 4_000_000


class _TokenCounter:
    """Token counts by the tokenizer within bounded time and memory, or estimated without one."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.chars = 0  # characters tokenized so far
        self.tokens = 0  # and the tokens they made
        self.cut = 0  # texts extrapolated from their first TOKENIZE_CHARS
        self.estimated = 0  # texts past the budget, counted at the measured ratio

    def __call__(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, round(len(text) / CHARS_PER_TOKEN))
        if self.chars >= TOKENIZE_BUDGET:
            self.estimated += 1
            return max(1, round(len(text) * self.tokens / self.chars))
        head = text[:TOKENIZE_CHARS]
        n = len(self.tokenizer(head, add_special_tokens=False)["input_ids"])
        self.chars += len(head)
        self.tokens += n
        if len(head) < len(text):
            self.cut += 1
            return round(n * len(text) / len(head))
        return n

    def source(self) -> str:
        if self.tokenizer is None:
            return f"estimate: 1 token ~ {CHARS_PER_TOKEN} characters"
        notes = []
        if self.cut:
            notes.append(f"{self.cut} text{'s' if self.cut != 1 else ''} over {TOKENIZE_CHARS:,} characters "
                         "extrapolated from their start")
        if self.estimated:
            notes.append(f"{self.estimated} text{'s' if self.estimated != 1 else ''} past the first "
                         f"{TOKENIZE_BUDGET:,} characters counted at the measured ratio")
        return "tokenizer" + (f" ({'; '.join(notes)})" if notes else "")


def _spread(rows: list[Any], n: int) -> list[Any]:
    """At most n rows, spread evenly over the whole list (a data check passes every row)."""
    if len(rows) <= n:
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def dataset_stats(data: DataSection, task: str, tokenizer: Any = None, sample: int = STATS_SAMPLE) -> DataStats:
    raw = read_rows(data.path, limit=data.max_samples, subset=data.subset, split=data.split)
    fmt = data.format if data.format != "auto" or not raw.format_hint else raw.format_hint
    detected = detect_format(raw.columns, task, fmt, data.columns or raw.columns_hint, source=raw.source,
                             tags=raw.tags or None)
    base = Path(data.image_dir) if data.image_dir else raw.base_dir
    rows, _lines = raw.head(sample)  # the first rows only: a plan never reads the whole set
    converted = convert_rows(rows, detected, conversational=True, base_dir=base, check_images=False)
    return stats_from_rows(converted.rows, len(raw), detected.format.name, tokenizer)


def stats_from_rows(rows: list[dict[str, Any]], total_rows: int, fmt: str, tokenizer: Any = None) -> DataStats:
    """Statistics of rows already in TRL's format (see to_trl.py), measured on at most STATS_SAMPLE of them."""
    rows = _spread(rows, STATS_SAMPLE)
    count = _TokenCounter(tokenizer)
    prompts, answers, widths, heights, images = [], [], [], [], 0
    for row in rows:
        if "messages" in row:
            msgs = row["messages"]
            answer = sum(count(m["content"]) for m in msgs if m["role"] == "assistant")
            prompt = sum(count(m["content"]) for m in msgs if m["role"] != "assistant")
        elif "chosen" in row:
            prompt = count(_text_of(row["prompt"]))
            answer = max(count(_text_of(row["chosen"])), count(_text_of(row["rejected"])))
        elif "text" in row:
            prompt, answer = 0, count(row["text"])
        else:
            prompt, answer = count(_text_of(row["prompt"])), count(_text_of(row["completion"]))
        prompts.append(prompt)
        answers.append(answer)
        for img in row.get("images", []):
            images += 1
            size = _image_size(img)
            if size:
                widths.append(size[0])
                heights.append(size[1])
    n = max(1, len(rows))
    return DataStats(
        rows=total_rows, sampled=len(rows), format=fmt,
        prompt_tokens=Lengths.of(prompts), answer_tokens=Lengths.of(answers),
        total_tokens=Lengths.of([p + a for p, a in zip(prompts, answers, strict=True)]),
        images_per_row=images / n, image_width=Lengths.of(widths), image_height=Lengths.of(heights),
        token_source=count.source(),
    )


def _image_size(img: dict[str, Any]) -> tuple[int, int] | None:
    import io

    from PIL import UnidentifiedImageError

    src = Path(img["path"]) if img.get("path") else io.BytesIO(img["bytes"]) if img.get("bytes") else None
    if src is None:
        return None
    try:
        with open_image_header(src) as im:  # reads the header only
            return im.size
    except (OSError, UnidentifiedImageError, ImageTooLarge):
        return None  # the image check reports it, by row
