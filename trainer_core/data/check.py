"""`vlmtune data check`: load, detect, validate, measure and preview a dataset, as one report.

Every problem the data has ends up in `problems` with its row, line and column (the first MAX_PROBLEMS, then
a count); nothing here raises for bad data. Rows are read and checked one batch at a time. Previews show a row as the model will see it (through the chat template) when a model is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainer_core.base.limits import DEFAULT_MAX_IMAGE_PIXELS, check_chat_template
from trainer_core.base.safe_text import visible_controls
from trainer_core.data.formats import detect_format
from trainer_core.data.prepare import MAX_PROBLEMS
from trainer_core.data.problems import DataError, DataProblem
from trainer_core.data.sources import read_rows
from trainer_core.data.stats import STATS_SAMPLE, DataStats, stats_from_rows
from trainer_core.data.to_trl import convert_rows


@dataclass
class CheckReport:
    source: str
    task: str
    ok: bool = False
    format: str | None = None
    format_description: str = ""
    rows: int = 0
    valid_rows: int = 0
    columns: dict[str, str] = field(default_factory=dict)  # role -> column
    columns_found: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # columns no role uses: listed, never dropped silently
    images: dict[str, Any] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)
    stats: DataStats | None = None
    previews: list[str] = field(default_factory=list)
    first_image: str | None = None  # a local image of the first previewed row, to show it

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "source": self.source, "task": self.task, "format": self.format, "rows": self.rows,
            "valid_rows": self.valid_rows, "columns": self.columns, "columns_found": self.columns_found,
            "ignored": self.ignored,
            "images": self.images, "problems": [p.to_dict() for p in self.problems],
            "stats": self.stats.to_dict() if self.stats else None, "previews": self.previews,
        }


def render_plain(row: dict[str, Any]) -> str:
    """A TRL-format row as readable turns, images named where they go."""
    images = [i.get("path") or "<embedded image>" for i in row.get("images", [])]
    lines = [f"[image: {Path(i).name if i != '<embedded image>' else i}]" for i in images]

    def turns(value: Any, label: str | None = None) -> None:
        if isinstance(value, str):
            lines.append(f"{label or 'text'}: {value}")
            return
        for t in value:
            lines.append(f"{label or t['role']}: {t['content']}")

    if "messages" in row:
        turns(row["messages"])
    elif "text" in row:
        turns(row["text"])
    else:
        turns(row["prompt"], None if not isinstance(row["prompt"], str) else "prompt")
        if "completion" in row:
            turns(row["completion"], "completion" if isinstance(row["completion"], str) else None)
        else:
            turns(row["chosen"], "chosen")
            turns(row["rejected"], "rejected")
    return "\n".join(lines)


def render_templated(row: dict[str, Any], processing_class: Any, is_vlm: bool) -> str:
    """The row through the model's chat template: exactly the text the model trains on."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    template_owner = processing_class if is_vlm else tokenizer
    if not getattr(template_owner, "chat_template", None):
        return render_plain(row)
    check_chat_template(template_owner, is_vlm)  # once per template: a runaway one fails here, by name
    n_images = len(row.get("images", []))

    def structured(turns: list[dict[str, str]]) -> list[dict[str, Any]]:
        out, placed = [], False
        for t in turns:
            parts: list[dict[str, Any]] = []
            if is_vlm and t["role"] == "user" and not placed:
                parts += [{"type": "image"}] * n_images
                placed = True
            parts.append({"type": "text", "text": t["content"]})
            out.append({"role": t["role"], "content": parts if is_vlm else t["content"]})
        return out

    def template(turns: list[dict[str, str]]) -> str:
        return template_owner.apply_chat_template(structured(turns), tokenize=False)

    if "messages" in row:
        return template(row["messages"])
    if "text" in row or isinstance(row.get("prompt"), str):
        return render_plain(row)
    if "completion" in row:
        return template(row["prompt"] + row["completion"])
    return "\n".join([f"chosen:\n{template(row['prompt'] + row['chosen'])}",
                      f"rejected:\n{template(row['prompt'] + row['rejected'])}"])


PREVIEW_CHARS = 4000  # of one example: a long row is shown by its start, not poured into the terminal


def _clip(text: str) -> str:
    if len(text) <= PREVIEW_CHARS:
        return text
    return f"{text[:PREVIEW_CHARS]}\n... ({len(text) - PREVIEW_CHARS:,} more characters)"


def _load_renderer(model: str) -> tuple[Any, Any, bool]:
    """The model's config, processing class and kind; its chat template is checked to finish (bounded), so a
    runaway template fails here by name instead of hanging the previews."""
    from trainer_core.model.loading import is_vision_config, load_config, load_processing_class

    config = load_config(model)
    is_vlm = is_vision_config(config)
    processing_class, tokenizer = load_processing_class(model, is_vlm)
    check_chat_template(processing_class if is_vlm else tokenizer, is_vlm)
    return config, processing_class, is_vlm


def _spread_indices(total: int, n: int) -> set[int]:
    """At most n row indices spread evenly over total rows: the stats sample of a set read in batches."""
    if total <= n:
        return set(range(total))
    step = total / n
    return {int(i * step) for i in range(n)}


def check_data(path: str, task: str, *, columns: dict[str, str] | None = None, fmt: str = "auto",
               model: str | None = None, preview: int = 3, limit: int | None = None,
               image_dir: str | None = None, subset: str | None = None, split: str = "train",
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Every row is validated, one batch at a time (memory stays bounded however large the set);
    `progress(rows done, rows in all)` is called after each batch."""
    report = CheckReport(source=path, task=task)
    try:
        raw = read_rows(path, limit=limit, subset=subset, split=split)
        report.rows = len(raw)
        report.columns_found = raw.columns
        if fmt == "auto" and raw.format_hint:
            fmt = raw.format_hint
        detected = detect_format(raw.columns, task, fmt, columns or raw.columns_hint, source=raw.source,
                                 tags=raw.tags or None)
    except DataError as err:
        report.problems = err.problems
        return report
    report.format = detected.format.name
    report.format_description = detected.format.description
    report.columns = detected.mapping
    report.ignored = list(detected.ignored)
    config, processing_class, is_vlm = _load_renderer(model) if model else (None, None, False)
    base = Path(image_dir) if image_dir else raw.base_dir
    wanted = _spread_indices(report.rows, STATS_SAMPLE)
    sample: list[dict[str, Any]] = []  # converted rows spread over the set, for the stats
    first: list[dict[str, Any]] = []  # the first converted rows, for previews
    n_bad = n_images = rows_with_images = 0
    for start, rows, lines in raw.iter_batches():
        converted = convert_rows(rows, detected, conversational=True, base_dir=base, line_numbers=lines,
                                 max_image_pixels=max_image_pixels)
        for p in converted.problems:
            n_bad += 1
            if len(report.problems) < MAX_PROBLEMS:
                report.problems.append(replace(p, row=start + p.row if p.row is not None else None))
        for i, row in zip(converted.kept, converted.rows, strict=True):
            report.valid_rows += 1
            n_images += len(row.get("images", []))
            rows_with_images += bool(row.get("images"))
            if start + i in wanted:
                sample.append(row)
            if len(first) < max(1, preview):
                first.append(row)
        if progress is not None:
            progress(start + len(rows), report.rows)
    if n_bad > MAX_PROBLEMS:
        report.problems.append(DataProblem(None, None, f"... and {n_bad - MAX_PROBLEMS:,} more rows with problems"))
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    report.stats = stats_from_rows(sample, report.rows, detected.format.name, tokenizer)
    report.images = {
        "count": n_images,
        "rows_with_images": rows_with_images,
        "width": vars(report.stats.image_width), "height": vars(report.stats.image_height),
    }
    if model and is_vlm and n_images:
        from trainer_core.model.image_tokens import image_cost, processor_image_cost

        w, h = report.stats.image_width.p95 or None, report.stats.image_height.p95 or None
        cost = processor_image_cost(processing_class, w, h) or image_cost(config, w, h)
        report.images["tokens_per_image"] = cost.tokens
        report.images["tokens_how"] = cost.how
    report.first_image = next((i["path"] for r in first for i in r.get("images", []) if i.get("path")), None)
    for row in first[:preview]:
        report.previews.append(_clip(render_templated(row, processing_class, is_vlm) if processing_class is not None
                                     else render_plain(row)))
    report.ok = not report.problems and report.valid_rows > 0
    if report.valid_rows == 0 and not report.problems:
        report.problems = [DataProblem(None, None, "no rows")]
    return report


def format_report(r: CheckReport, max_problems: int = 30) -> str:
    """The report as terminal text; control characters from the data are shown, not sent (an escape sequence
    in a row could otherwise retitle or redraw the user's terminal)."""
    lines = [f"{r.source}: {r.rows} rows"]
    if r.format:
        lines.append(f"format     {r.format} ({r.format_description})")
        lines.append("columns    " + ", ".join(f"{role} <- {col!r}" for role, col in r.columns.items()))
        if r.ignored:
            lines.append(f"ignored    {', '.join(r.ignored)} (no role uses them; map one with --columns ROLE=COLUMN)")
    if r.images.get("count"):
        w, h = r.images["width"], r.images["height"]
        lines.append(f"images     {r.images['count']} in {r.images['rows_with_images']} rows; width p50/p95/max "
                     f"{w['p50']}/{w['p95']}/{w['max']}, height {h['p50']}/{h['p95']}/{h['max']}")
        if "tokens_per_image" in r.images:
            lines.append(f"           {r.images['tokens_per_image']} tokens per image ({r.images['tokens_how']})")
    if r.stats:
        s = r.stats
        lines.append(f"tokens     prompt p50/p95/max {s.prompt_tokens.p50}/{s.prompt_tokens.p95}/{s.prompt_tokens.max}, "
                     f"answer {s.answer_tokens.p50}/{s.answer_tokens.p95}/{s.answer_tokens.max} ({s.token_source})")
    for i, text in enumerate(r.previews):
        lines.append(f"--- example {i + 1}")
        # split("\n"), not splitlines(): a \r or \x0b in a row is shown below, not turned into a line break.
        lines.extend("    " + ln for ln in text.split("\n"))
    if r.problems:
        lines.append(f"problems   {len(r.problems)}")
        lines.extend(f"  - {p}" for p in r.problems[:max_problems])
        if len(r.problems) > max_problems:
            lines.append(f"  ... and {len(r.problems) - max_problems} more (--json lists all)")
        if r.valid_rows:
            lines.append(f"{r.valid_rows} of {r.rows} rows are usable; fix the others or train with "
                         "data.skip_invalid: true")
    else:
        lines.append("ok: no problems")
    return visible_controls("\n".join(lines))
