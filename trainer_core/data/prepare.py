"""From a preset's data section to train/eval `datasets.Dataset`s in TRL's format, or a DataError."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_core.config.presets import DataSection
from trainer_core.data.formats import detect_format
from trainer_core.data.problems import DataError, DataProblem
from trainer_core.data.sources import read_rows
from trainer_core.data.stats import STATS_SAMPLE, DataStats, stats_from_rows
from trainer_core.data.to_trl import convert_rows


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any | None
    format: str
    mapping: dict[str, str]
    rows: int
    has_images: bool
    skipped: list[DataProblem] = field(default_factory=list)
    # The first rows as converted (bounded): what the planner measures, without reading the data again.
    sample: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def stats(self, tokenizer: Any = None) -> DataStats:
        return stats_from_rows(self.sample, self.rows, self.format, tokenizer)


def _to_dataset(rows: list[dict[str, Any]], has_images: bool):
    import datasets

    ds = datasets.Dataset.from_list(rows)
    if has_images:
        # Lazy decoding: images are read from disk by the collator, one batch at a time.
        ds = ds.cast_column("images", datasets.List(datasets.Image()))
    return ds


def prepare_dataset(data: DataSection, task: str, *, conversational: bool, is_vlm: bool,
                    seed: int = 42) -> PreparedData:
    raw = read_rows(data.path, limit=data.max_samples, subset=data.subset, split=data.split)
    detected = detect_format(raw.columns, task, data.format, data.columns, source=raw.source)
    base_dir = Path(data.image_dir) if data.image_dir else raw.base_dir
    converted = convert_rows(raw.rows, detected, conversational=conversational or is_vlm,
                             base_dir=base_dir, line_numbers=raw.line_numbers,
                             max_image_pixels=data.max_image_pixels)
    if converted.problems and not data.skip_invalid:
        problems = converted.problems + [DataProblem(None, None, "fix these rows, or set data.skip_invalid: true "
                                                                 "to train without them")]
        raise DataError(problems, raw.source)
    if not converted.rows:
        raise DataError([DataProblem(None, None, "no usable rows are left")], raw.source)
    if converted.has_images and not is_vlm:
        raise DataError([DataProblem(None, detected.mapping.get("images"),
                                     "the data has images but the model is text-only; pick a vision-language "
                                     "model or drop the image column")], raw.source)
    ds = _to_dataset(converted.rows, converted.has_images)
    eval_ds = None
    if data.eval_fraction > 0 and len(ds) >= 2:
        n_eval = max(1, round(len(ds) * data.eval_fraction))
        split = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
        ds, eval_ds = split["train"], split["test"]
    return PreparedData(ds, eval_ds, detected.format.name, detected.mapping, len(converted.rows),
                        converted.has_images, converted.problems, converted.rows[:STATS_SAMPLE])
