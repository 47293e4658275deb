"""From a preset's data section to train/eval `datasets.Dataset`s in TRL's format, or a DataError.

The rows are converted by a batched `Dataset.map` into a memory-mapped Arrow file: no step holds every row
(or every image) in Python at once. A row that does not convert is kept as a problem row (its row, line,
column and message in bookkeeping columns), so problems come out of the same pass, then are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainer_core.config.presets import DataSection
from trainer_core.data.formats import detect_format
from trainer_core.data.problems import DataError, DataProblem
from trainer_core.data.sources import BATCH_ROWS, RawData, read_rows
from trainer_core.data.stats import STATS_SAMPLE, DataStats, stats_from_rows
from trainer_core.data.to_trl import convert_rows

# Bookkeeping columns of the converted set: which source row a problem is on, and what it is.
P_ROW, P_LINE, P_COLUMN, P_MESSAGE = "__problem_row__", "__problem_line__", "__problem_column__", "__problem__"
PROBLEM_COLUMNS = [P_ROW, P_LINE, P_COLUMN, P_MESSAGE]
MAX_PROBLEMS = 1000  # listed one by one; the last problem says how many more rows have one


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any | None
    format: str
    mapping: dict[str, str]
    rows: int
    has_images: bool
    skipped: list[DataProblem] = field(default_factory=list)
    # The converted set before the train/eval split; `sample` reads its first rows when asked.
    converted: Any = field(default=None, repr=False)
    # Per dataset (one entry without data.sources): path, format, columns, rows read, kept, skipped (invalid),
    # weight, and in_train (its rows in the training set, repeats of an oversampled source included).
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sample(self) -> list[dict[str, Any]]:
        """The first rows as converted (bounded), images undecoded: what the planner measures."""
        if self.converted is None:
            return []
        n = min(STATS_SAMPLE, len(self.converted))
        # Arrow format: images come as their stored {bytes, path}, not decoded.
        return self.converted.with_format("arrow")[:n].to_pylist()

    def stats(self, tokenizer: Any = None) -> DataStats:
        return stats_from_rows(self.sample, self.rows, self.format, tokenizer)


def resolve_hints(data: DataSection, raw: RawData) -> tuple[str, dict[str, str]]:
    """The format and columns to detect with: the preset's, else what a LLaMA-Factory entry said."""
    fmt = data.format if data.format != "auto" or not raw.format_hint else raw.format_hint
    return fmt, dict(data.columns or raw.columns_hint or {})


def _with_bookkeeping(features: Any, detected: Any) -> Any:
    import datasets

    if "images" in detected.mapping:
        # Declared, so a batch whose images are all paths (bytes null) writes the same type as the others.
        features["images"] = datasets.List(datasets.Image())
    for name in PROBLEM_COLUMNS:
        features[name] = datasets.Value("int64" if name in (P_ROW, P_LINE) else "string")
    return features


def _text_only(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "images"} for r in rows]


def _batch_schema(rows: list[dict[str, Any]]):  # noqa: ANN202
    """The Arrow schema of one converted batch (images left out: their feature is set apart)."""
    import pyarrow as pa

    return pa.Table.from_pylist(_text_only(rows)).schema


def _output_features(raw: RawData, detected: Any, options: dict[str, Any]):  # noqa: ANN202
    """The converted set's features, from the first rows that convert (None when no row does): every batch
    is written with the same Arrow types."""
    import datasets

    for _start, rows, lines in raw.iter_batches():
        out = convert_rows(rows, detected, line_numbers=lines, check_images=False, **options)
        if out.rows:
            return _with_bookkeeping(datasets.Features.from_arrow_schema(_batch_schema(out.rows)), detected)
    return None


def _unified_features(raw: RawData, detected: Any, options: dict[str, Any]):  # noqa: ANN202
    """Features that fit every row, for sets whose rows differ in structure past the first batch (a tool call's
    arguments, a turn with keys the others lack): a text-only pass unifying each batch's Arrow schema."""
    import datasets
    import pyarrow as pa

    schema = None
    for _start, rows, lines in raw.iter_batches():
        out = convert_rows(rows, detected, line_numbers=lines, check_images=False, **options)
        if out.rows:
            batch = _batch_schema(out.rows)
            schema = batch if schema is None else pa.unify_schemas([schema, batch], promote_options="permissive")
    return _with_bookkeeping(datasets.Features.from_arrow_schema(schema), detected)


def _convert_batch(batch: dict[str, list[Any]], indices: list[int], *, raw: RawData, detected: Any,
                   names: list[str], options: dict[str, Any]) -> dict[str, list[Any]]:
    rows, lines = raw.rows_of(batch)
    converted = convert_rows(rows, detected, line_numbers=lines, **options)
    by_row = dict(zip(converted.kept, converted.rows, strict=True))
    problems = {p.row: p for p in converted.problems}
    out: dict[str, list[Any]] = {name: [] for name in [*names, *PROBLEM_COLUMNS]}
    for i in range(len(rows)):
        row, problem = by_row.get(i), problems.get(i)
        for name in names:
            value = row.get(name) if row is not None else None
            out[name].append([] if name == "images" and row is not None and value is None else value)
        out[P_ROW].append(indices[i] if problem is not None else None)
        out[P_LINE].append(problem.line if problem is not None else None)
        out[P_COLUMN].append(problem.column if problem is not None else None)
        out[P_MESSAGE].append(problem.message if problem is not None else None)
    return out


def _cache_file(raw: RawData, key: Any) -> tuple[str, str]:
    """A converted file per input (the same input overwrites it, so runs do not pile up copies), named by the
    source's fingerprint, the conversion options and the converter's own code (a newer converter converts
    again, and TRL's caches keyed on this fingerprint follow)."""
    import datasets
    from datasets.fingerprint import Hasher

    from trainer_core.data import formats, to_trl

    code = [Path(m.__file__).read_bytes() for m in (to_trl, formats)] + [Path(__file__).read_bytes()]
    fingerprint = Hasher.hash([raw.dataset._fingerprint, key, code])
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "vlmtune"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"converted-{fingerprint}.arrow"), fingerprint


def _problems(ds) -> tuple[list[DataProblem], Any]:  # noqa: ANN001
    """The problem rows' reports (at most MAX_PROBLEMS) and the indices of the good rows, from Arrow."""
    import pyarrow.compute as pc

    table = ds.data.table
    bad = pc.is_valid(table.column(P_MESSAGE))
    n_bad = pc.sum(bad).as_py() or 0
    if not n_bad:
        return [], None
    first = table.select(PROBLEM_COLUMNS).take(pc.indices_nonzero(bad)[:MAX_PROBLEMS]).to_pylist()
    problems = [DataProblem(r[P_ROW], r[P_COLUMN], r[P_MESSAGE], line=r[P_LINE]) for r in first]
    if n_bad > MAX_PROBLEMS:
        problems.append(DataProblem(None, None, f"... and {n_bad - MAX_PROBLEMS:,} more rows with problems"))
    return problems, pc.indices_nonzero(pc.invert(bad)).to_numpy().astype("int64")


@dataclass
class _Converted:
    """One dataset converted and checked, before any split or mix."""

    ds: Any  # datasets.Dataset in TRL's format, usable rows only
    format: str
    mapping: dict[str, str]
    has_images: bool
    problems: list[DataProblem]
    rows_read: int


def _prepare_source(data: DataSection, task: str, *, conversational: bool, is_vlm: bool,
                    tools_supported: bool | None) -> _Converted:
    """One dataset (data.path, or one of data.sources as a section of its own) through the converter."""
    import pyarrow as pa
    import pyarrow.compute as pc

    raw = read_rows(data.path, limit=data.max_samples, subset=data.subset, split=data.split)
    fmt, columns = resolve_hints(data, raw)
    detected = detect_format(raw.columns, task, fmt, columns, source=raw.source, tags=raw.tags or None)
    base_dir = Path(data.image_dir) if data.image_dir else raw.base_dir
    # tools_supported: whether the chat template renders tools; rows with tool calls are refused where it does not
    options = {"conversational": conversational or is_vlm, "base_dir": base_dir,
               "max_image_pixels": data.max_image_pixels, "tools_supported": tools_supported}
    features = _output_features(raw, detected, options)
    if features is None:  # not one row converts: report them (the first batch names the pattern)
        _start, rows, lines = next(raw.iter_batches())
        problems = convert_rows(rows, detected, line_numbers=lines, **options).problems
        raise DataError(problems + [DataProblem(None, None, "no usable rows: fix these rows")], raw.source)
    cache_file, fingerprint = _cache_file(raw, [detected.format.name, detected.mapping, str(base_dir),
                                                options["conversational"], data.max_image_pixels, tools_supported])

    def convert(features: Any):  # noqa: ANN202
        return raw.dataset.map(
            _convert_batch, batched=True, batch_size=BATCH_ROWS, writer_batch_size=BATCH_ROWS, with_indices=True,
            remove_columns=raw.dataset.column_names, features=features,
            fn_kwargs={"raw": raw, "detected": detected, "names": [n for n in features if n not in PROBLEM_COLUMNS],
                       "options": options},
            # Validity depends on the files a row names (an image deleted since), so it is checked every time.
            load_from_cache_file=False, cache_file_name=cache_file, new_fingerprint=fingerprint,
            desc="Converting rows")

    try:
        ds = convert(features)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        # A later row holds a structure the first batch did not show: one more pass finds types for all rows.
        ds = convert(_unified_features(raw, detected, options))
    problems, good = _problems(ds)
    if problems and not data.skip_invalid:
        raise DataError(problems + [DataProblem(None, None, "fix these rows, or set data.skip_invalid: true to "
                                                            "train without them")], raw.source)
    # Problem rows hold no images (null), so the whole column's count is the good rows' count; only the list
    # offsets are read, not the image bytes.
    has_images = "images" in ds.column_names and (
        pc.sum(pc.list_value_length(ds.data.table.column("images"))).as_py() or 0) > 0
    if good is not None:
        ds = ds.select(good, keep_in_memory=True)  # an index over the same file, not a copy
    ds = ds.remove_columns(PROBLEM_COLUMNS)
    if len(ds) == 0:
        raise DataError([DataProblem(None, None, "no usable rows are left")], raw.source)
    if "images" in ds.column_names and not has_images:
        ds = ds.remove_columns("images")
    if has_images and not is_vlm:
        raise DataError([DataProblem(None, detected.mapping.get("images"),
                                     "the data has images but the model is text-only; pick a vision-language "
                                     "model or drop the image column")], raw.source)
    return _Converted(ds, detected.format.name, detected.mapping, has_images, problems, len(raw))


def _split(ds: Any, eval_fraction: float, seed: int) -> tuple[Any, Any | None]:
    if eval_fraction > 0 and len(ds) >= 2:
        n_eval = max(1, round(len(ds) * eval_fraction))
        # Two index files (8 bytes a row) over the converted file, not copies of the rows.
        split = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True, load_from_cache_file=False)
        return split["train"], split["test"]
    return ds, None


def prepare_dataset(data: DataSection, task: str, *, conversational: bool, is_vlm: bool,
                    seed: int = 42, tools_supported: bool | None = None) -> PreparedData:
    # A path beside sources comes only from code that points a run's settings at one file (vlmtune eval --data;
    # a preset cannot give both): the file wins.
    if data.sources and not data.path:
        return _prepare_mix(data, task, conversational=conversational, is_vlm=is_vlm, seed=seed,
                            tools_supported=tools_supported)
    one = _prepare_source(data, task, conversational=conversational, is_vlm=is_vlm, tools_supported=tools_supported)
    ds, eval_ds = _split(one.ds, data.eval_fraction, seed)
    report = {"path": data.path, "format": one.format, "columns": one.mapping, "rows": one.rows_read,
              "kept": len(one.ds), "skipped": one.rows_read - len(one.ds), "weight": None, "in_train": len(ds)}
    return PreparedData(ds, eval_ds, one.format, one.mapping, len(one.ds), one.has_images, one.problems, one.ds,
                        sources=[report])


# ---------------------------------------------------------------- several datasets (data.sources)

# Columns some converted sets have and others lack, with the value that means "none" in a row without them
# (TRL's collators take images: [] as a text-only row, and a batch of such rows as text-only).
OPTIONAL_COLUMNS = {"images": [], "tools": None}


def _joined(batch: dict[str, list[Any]], *, into: str) -> dict[str, list[Any]]:
    """prompt + completion as one sequence (a conversation, or one text), to mix with messages / text sets."""
    return {into: [p + c for p, c in zip(batch["prompt"], batch["completion"], strict=True)]}


def _same_columns(parts: list[_Converted], is_vlm: bool) -> list[Any]:
    """The parts' sets with one set of columns, or a DataError saying which sources differ and how."""
    sets = [p.ds for p in parts]
    # A prompt/completion set mixes with a messages (or text) set as one conversation (or text) per row; its
    # loss then covers the prompt too, as TRL does for messages rows.
    def joins(ds: Any, into: str) -> bool:  # conversational turns join into messages, plain strings into text
        plain = getattr(ds.features.get("prompt"), "dtype", None) == "string"
        return {"prompt", "completion"} <= set(ds.column_names) and plain == (into == "text")

    for into in ("messages", "text"):
        if any(into in ds.column_names for ds in sets):
            sets = [ds.map(_joined, batched=True, fn_kwargs={"into": into}, remove_columns=["prompt", "completion"],
                           desc=f"Joining prompt and completion into {into}") if joins(ds, into) else ds
                    for ds in sets]
    optional = {name for name in OPTIONAL_COLUMNS if any(name in ds.column_names for ds in sets)}
    if not is_vlm:
        optional.discard("images")  # a text model refuses an image set before here
    core = [set(ds.column_names) - optional for ds in sets]
    if any(c != core[0] for c in core):
        kinds = "; ".join(f"data.sources[{i}] ({parts[i].format}) gives {', '.join(sorted(c))}"
                          for i, c in enumerate(core))
        raise DataError([DataProblem(None, None, f"these sources cannot be mixed: {kinds}. Mix sources of one "
                                                 "kind (conversations with conversations, preference pairs with "
                                                 "preference pairs), or train them in separate runs")],
                        "data.sources")
    out = []
    for ds in sets:
        for name in sorted(optional - set(ds.column_names)):
            ds = ds.map(lambda b, name=name: {name: [OPTIONAL_COLUMNS[name]] * len(next(iter(b.values())))},
                        batched=True, desc=f"Adding an empty {name} column")
        out.append(ds)
    return out


def _common_features(sets: list[Any]) -> Any:
    """Features every set casts to: Arrow's permissive unification (a turn key one set lacks becomes
    nullable), with images kept as datasets.Image."""
    import datasets
    import pyarrow as pa

    schema = pa.unify_schemas([ds.features.arrow_schema.remove_metadata() for ds in sets],
                              promote_options="permissive")
    features = datasets.Features.from_arrow_schema(schema)
    if "images" in features:
        features["images"] = datasets.List(datasets.Image())
    return features


def _prepare_mix(data: DataSection, task: str, *, conversational: bool, is_vlm: bool, seed: int,
                 tools_supported: bool | None) -> PreparedData:
    import datasets
    import numpy as np

    parts: list[_Converted] = []
    for i, section in enumerate(data.per_source()):
        try:
            parts.append(_prepare_source(section, task, conversational=conversational, is_vlm=is_vlm,
                                         tools_supported=tools_supported))
        except DataError as err:
            raise DataError(err.problems, f"data.sources[{i}] ({err.source or section.path})") from None
    sets = _same_columns(parts, is_vlm)
    features = _common_features(sets)
    sets = [ds if ds.features == features else ds.cast(features) for ds in sets]
    # Each source is split on its own, before mixing: an oversampled source repeats rows, and a repeat must
    # not land in both train and eval.
    splits = [_split(ds, data.eval_fraction, seed) for ds in sets]
    trains = [t for t, _e in splits]
    evals = [e for _t, e in splits if e is not None]
    # The mix is drawn over row numbers (datasets' own interleave, seeded) and then selected from the sets
    # concatenated: the same rows interleave_datasets would give, and each row's source is known.
    offsets = np.cumsum([0] + [len(t) for t in trains])
    numbers = [datasets.Dataset.from_dict({"row": np.arange(offsets[i], offsets[i + 1])})
               for i in range(len(trains))]
    weights = [s.weight for s in data.sources]
    if all(w is not None for w in weights):
        total = float(sum(weights))
        # all_exhausted: every row of every source is used at least once; the smaller shares repeat.
        mixed = datasets.interleave_datasets(numbers, probabilities=[w / total for w in weights], seed=seed,
                                             stopping_strategy="all_exhausted")
    else:
        mixed = datasets.concatenate_datasets(numbers)
    order = mixed.with_format("numpy")["row"]
    train = datasets.concatenate_datasets(trains).select(order, keep_in_memory=True)
    eval_ds = datasets.concatenate_datasets(evals) if evals else None
    in_train = np.bincount(np.searchsorted(offsets, order, side="right") - 1, minlength=len(trains))
    reports = [{"path": s.path, "format": p.format, "columns": p.mapping, "rows": p.rows_read, "kept": len(p.ds),
                "skipped": p.rows_read - len(p.ds), "weight": s.weight, "in_train": int(n)}
               for s, p, n in zip(data.sources, parts, in_train, strict=True)]
    formats = {p.format for p in parts}
    skipped = [replace(pr, message=f"data.sources[{i}]: {pr.message}") for i, p in enumerate(parts) for pr in p.problems]
    # mapping: the first source's; each source's own is in its report
    return PreparedData(train, eval_ds, formats.pop() if len(formats) == 1 else "mixed", parts[0].mapping,
                        len(train) + (len(eval_ds) if eval_ds is not None else 0), any(p.has_images for p in parts),
                        skipped, train, sources=reports)
