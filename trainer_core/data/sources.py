"""Read a dataset from where the user keeps it: a file, a folder, a `save_to_disk` folder or a hub id.

Rows stay in Arrow (a memory-mapped `datasets.Dataset`) from reading to the trainer, so a set larger than
RAM is read in batches. JSON and JSON Lines are stored one row per JSON text (with its line number): a
column's type may differ between rows there, and the converter, not Arrow, reports that row by row.
Images stay undecoded ({"bytes", "path"}); `datasets.Image` decodes them one batch at a time.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_core.data.problems import DataError, DataProblem

FILE_KINDS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
# Columns of a JSON-backed dataset: the row's JSON text, its 1-based line (JSON Lines) and a reading error.
ROW_JSON, LINE, READ_ERROR = "__row_json__", "__line__", "__read_error__"
BATCH_ROWS = 256  # rows per batch: ~12 MB of embedded images at ChartQA's ~48 KB each
HEAD_ROWS = 100  # rows whose keys make up a JSON dataset's columns
# Bumped when the JSON reading below changes, so a cached copy made by an older reader is not reused.
_READER_VERSION = 1


@dataclass
class RawData:
    """A dataset as read, before conversion: Arrow rows plus where they came from."""

    dataset: Any  # datasets.Dataset (memory-mapped), images undecoded
    # Where relative image paths are resolved from (the data file's folder).
    base_dir: Path | None
    source: str
    columns: list[str]
    # Rows stored as JSON text (see ROW_JSON) rather than as typed columns.
    json_rows: bool = False
    # 1-based line numbers in problem reports (JSON Lines read from one file).
    has_lines: bool = False
    # What a LLaMA-Factory dataset_info.json entry says about the file (used when data.format/columns are unset).
    format_hint: str | None = None
    columns_hint: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_rows(self) -> int:
        return len(self.dataset)

    def rows_of(self, batch: dict[str, list[Any]]) -> tuple[list[dict[str, Any]], list[int] | None]:
        """A batch of columns (as `Dataset.map`/`iter` give it) as row dicts, with their line numbers."""
        if self.json_rows:
            rows = [json.loads(text) for text in batch[ROW_JSON]]
            return rows, (list(batch[LINE]) if self.has_lines else None)
        names = list(batch)
        return [dict(zip(names, values, strict=True)) for values in zip(*batch.values(), strict=True)], None

    def iter_batches(self, size: int = BATCH_ROWS) -> Iterator[tuple[int, list[dict[str, Any]], list[int] | None]]:
        """(index of the first row, rows, line numbers) per batch; one batch is in memory at a time."""
        start = 0
        for batch in self.dataset.iter(batch_size=size):
            rows, lines = self.rows_of(batch)
            yield start, rows, lines
            start += len(rows)

    def head(self, n: int) -> tuple[list[dict[str, Any]], list[int] | None]:
        """The first n rows (bounded: a preview never reads the whole set)."""
        return self.rows_of(self.dataset[:max(0, n)])


def _problem(message: str, source: str) -> DataError:
    return DataError([DataProblem(None, None, message)], source)


def _undecoded(ds):  # noqa: ANN001, ANN202 (a datasets.Dataset)
    """Images as {"bytes", "path"} dicts: decoding every image just to list or check rows is wasted work."""
    import datasets

    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):
            ds = ds.cast_column(name, datasets.List(datasets.Image(decode=False)))
    return ds


def _typed(ds, base: Path | None, source: str) -> RawData:  # noqa: ANN001
    ds = _undecoded(ds)
    return RawData(ds, base, source, list(ds.column_names))


# ---------------------------------------------------------------- JSON and JSON Lines


def _stamp(paths: list[Path]) -> list[tuple[str, int, int]]:
    """What identifies a file's content for the cache: a changed file is read again."""
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def _row(row: dict[str, Any], imagefolder: bool) -> dict[str, Any]:
    if imagefolder and "file_name" in row and "image" not in row and "images" not in row:
        row["image"] = row.pop("file_name")
    return row


def _jsonl_rows(stamps: list[tuple[str, int, int]], limit: int | None, imagefolder: bool,
                version: int) -> Iterator[dict[str, Any]]:
    """One file line at a time; a bad line becomes an error row (reported with its line, never cached away)."""
    del version  # part of the cache key only
    kept = 0
    for path, _size, _mtime in stamps:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield {ROW_JSON: None, LINE: n, READ_ERROR: f"line {n} is not UTF-8 text"}
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {ROW_JSON: None, LINE: n, READ_ERROR: f"line {n} is not valid JSON: {exc.msg}"}
                    continue
                if not isinstance(row, dict):
                    yield {ROW_JSON: None, LINE: n, READ_ERROR: f"line {n} is not a JSON object"}
                    continue
                text = json.dumps(_row(row, imagefolder)) if imagefolder else line.strip()
                yield {ROW_JSON: text, LINE: n, READ_ERROR: None}
                kept += 1
                if limit and kept >= limit:
                    return


# Keys that make a lone JSON object one row (a conversation), not a {"data": [...]} wrapper of rows.
ROW_KEYS = {"messages", "conversations", "conversation", "prompt", "completion", "chosen", "rejected", "text",
            "instruction", "question", "query", "image", "images"}


def _json_list(path: Path, split: str) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _problem("the file is not UTF-8 text", str(path)) from None
    except json.JSONDecodeError as exc:
        raise DataError([DataProblem(None, None, f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                                                 f"{exc.msg}", line=exc.lineno)], str(path)) from None
    if isinstance(data, dict):
        if ROW_KEYS & set(data):
            return [data]  # one conversation
        # {"data": [...]} / {"train": [...]} wrappers are common in exported datasets.
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if isinstance(lists.get(split), list):
            data = lists[split]
        elif len(lists) == 1:
            data = next(iter(lists.values()))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise _problem("a .json dataset must be a list of objects (one per row), one object that is a row, or "
                       '{"data": [...]}; for one object per line use .jsonl', str(path))
    return data


def _json_rows(stamps: list[tuple[str, int, int]], limit: int | None, split: str,
               version: int) -> Iterator[dict[str, Any]]:
    """A .json file is one document, so it is parsed whole (one file at a time), then written out row by row."""
    del version
    kept = 0
    for path, _size, _mtime in stamps:
        rows = _json_list(Path(path), split)
        for row in rows:
            yield {ROW_JSON: json.dumps(row), LINE: None, READ_ERROR: None}
            kept += 1
            if limit and kept >= limit:
                return
        del rows


def _json_dataset(kind: str, files: list[Path], limit: int | None, base: Path, source: str, *,
                  split: str = "train", imagefolder: bool = False) -> RawData:
    import datasets

    features = datasets.Features({ROW_JSON: datasets.Value("string"), LINE: datasets.Value("int64"),
                                  READ_ERROR: datasets.Value("string")})
    stamps = _stamp(files)
    if kind == "jsonl":
        gen, kwargs = _jsonl_rows, {"stamps": stamps, "limit": limit, "imagefolder": imagefolder}
    else:
        gen, kwargs = _json_rows, {"stamps": stamps, "limit": limit, "split": split}
    try:
        # Written to the datasets cache on disk (keyed by the files' size and time), read back memory-mapped.
        ds = datasets.Dataset.from_generator(gen, features=features,
                                             gen_kwargs={**kwargs, "version": _READER_VERSION})
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, DataError):
            raise cause from None
        raise
    _raise_read_errors(ds, source)
    if len(ds) == 0:
        raise _problem("the file has no rows", source)
    raw = RawData(ds, base, source, [], json_rows=True, has_lines=kind == "jsonl" and len(files) == 1)
    seen: dict[str, None] = {}
    for row in raw.head(HEAD_ROWS)[0]:
        for k in row:
            seen.setdefault(k, None)
    raw.columns = list(seen)
    return raw


MAX_READ_ERRORS = 1000  # listed one by one; the count says how many more


def _raise_read_errors(ds, source: str) -> None:  # noqa: ANN001
    import pyarrow.compute as pc

    errors = ds.data.column(READ_ERROR)
    if errors.null_count == len(errors):
        return
    bad = pc.indices_nonzero(pc.is_valid(errors))
    table = ds.data.table.select([LINE, READ_ERROR]).take(bad[:MAX_READ_ERRORS]).to_pylist()
    problems = [DataProblem(None, None, r[READ_ERROR], line=r[LINE]) for r in table]
    if len(bad) > MAX_READ_ERRORS:
        problems.append(DataProblem(None, None, f"... and {len(bad) - MAX_READ_ERRORS:,} more lines like these"))
    raise DataError(problems, source)


# ---------------------------------------------------------------- CSV and parquet


def _csv_features(files: list[Path]):  # noqa: ANN202
    """Every CSV column as text: a system prompt "00000" or an answer "1.10" must not become a number."""
    import datasets

    with files[0].open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise _problem("the CSV file has no header row (column names)", str(files[0]))
    return datasets.Features({name: datasets.Value("string") for name in header})


def _load(kind: str, files: list[Path], limit: int | None, base: Path, source: str) -> RawData:
    import datasets

    split = f"train[:{limit}]" if limit else "train"
    kwargs: dict[str, Any] = {}
    if kind == "csv":
        try:
            kwargs = {"features": _csv_features(files), "keep_default_na": False}
        except UnicodeDecodeError:
            raise _problem("the CSV file is not UTF-8 text", source) from None
    try:
        ds = datasets.load_dataset(kind, data_files=[str(f) for f in files], split=split, **kwargs)
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        raise _problem(f"could not read the {kind} data ({type(cause).__name__}: "
                       f"{str(cause).splitlines()[0][:200] if str(cause) else ''}); check that the file is "
                       f"valid {kind}", source) from None
    if len(ds) == 0:
        raise _problem("the file has no rows", source)
    return _typed(ds, base, source)


def _read_files(kind: str, files: list[Path], limit: int | None, base: Path, source: str, split: str) -> RawData:
    if kind in ("json", "jsonl"):
        return _json_dataset(kind, files, limit, base, source, split=split)
    return _load(kind, files, limit, base, source)


# ---------------------------------------------------------------- folders


def _read_image_folder(path: Path, meta: Path, limit: int | None) -> RawData:
    """Hugging Face's imagefolder layout: images beside a metadata file whose `file_name` names each image."""
    if meta.suffix == ".jsonl":
        raw = _json_dataset("jsonl", [meta], limit, path, str(meta), imagefolder=True)
    else:
        raw = _load(FILE_KINDS[meta.suffix], [meta], limit, path, str(meta))
        cols = raw.dataset.column_names
        if "file_name" in cols and "image" not in cols and "images" not in cols:
            raw.dataset = raw.dataset.rename_column("file_name", "image")
            raw.columns = list(raw.dataset.column_names)
    raw.base_dir, raw.source = path, str(path)
    return raw


def _is_llamafactory(path: Path) -> bool:
    """LLaMA-Factory's data folder also has a dataset_info.json, but no save_to_disk state."""
    return ((path / "dataset_info.json").exists() and not (path / "state.json").exists()
            and not (path / "dataset_dict.json").exists())


def _read_llamafactory(path: Path, name: str | None, limit: int | None, split: str) -> RawData:
    """Kept apart: trainer_core.data.llamafactory (when present) says which file an entry names, and how."""
    if importlib.util.find_spec("trainer_core.data.llamafactory") is None:
        raise _problem(f"{path} is a LLaMA-Factory data folder (its dataset_info.json lists datasets by name); "
                       "vlmtune cannot read the entries yet: set data.path to the file the entry's "
                       "\"file_name\" names (and data.columns if its columns differ)", str(path))
    from trainer_core.data.llamafactory import resolve_entry

    file, fmt, columns, tags = resolve_entry(path, name)
    raw = read_rows(str(file), limit=limit, split=split)
    raw.format_hint, raw.columns_hint, raw.tags = fmt, dict(columns or {}), dict(tags or {})
    return raw


def _read_folder(path: Path, limit: int | None, subset: str | None, split: str) -> RawData:
    if _is_llamafactory(path):
        return _read_llamafactory(path, subset, limit, split)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets

        ds = datasets.load_from_disk(str(path))  # memory-mapped where it lies
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise _problem(f"split {split!r} not found; the folder has {', '.join(ds)} (set data.split)",
                               str(path))
            ds = ds[split]
        if limit:
            ds = ds.select(range(min(limit, len(ds))))
        return _typed(ds, path, str(path))
    meta = next((path / m for m in METADATA_FILES if (path / m).exists()), None)
    if meta is not None:
        return _read_image_folder(path, meta, limit)
    by_kind: dict[str, list[Path]] = {}
    for f in sorted(path.iterdir()):
        if f.suffix.lower() in FILE_KINDS and f.is_file():
            by_kind.setdefault(FILE_KINDS[f.suffix.lower()], []).append(f)
    if not by_kind:
        raise _problem(f"no data files in {path} (expected .jsonl, .json, .csv or .parquet)", str(path))
    if len(by_kind) > 1:
        kinds = ", ".join(f"{k} ({len(v)})" for k, v in by_kind.items())
        raise _problem(f"the folder mixes file kinds ({kinds}); point data.path at one file or keep one kind per "
                       "folder", str(path))
    kind, files = next(iter(by_kind.items()))
    return _read_files(kind, files, limit, path, str(path), split)


# ---------------------------------------------------------------- hub


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def _read_hub(repo_id: str, limit: int | None, subset: str | None, split: str) -> RawData:
    import datasets

    from trainer_core.model.hub import hub_reachable

    sl = f"{split}[:{limit}]" if limit else split
    try:
        if not hub_reachable():
            raise ConnectionError("the hub is not reachable from this machine")
        ds = datasets.load_dataset(repo_id, subset, split=sl)  # through the datasets cache, memory-mapped
    except Exception as exc:  # connection errors come in many types across huggingface_hub versions
        raise _problem(f"could not reach the hub dataset {repo_id!r} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160] if str(exc) else ''}). Download it where there is "
                       "network (datasets save_to_disk, or its files) and set data.path to the local copy.",
                       repo_id) from None
    return _typed(ds, None, repo_id)


def read_rows(path: str, *, limit: int | None = None, subset: str | None = None, split: str = "train") -> RawData:
    p = Path(path).expanduser()
    if p.is_dir():
        return _read_folder(p, limit, subset, split)
    if p.is_file():
        if p.stat().st_size == 0:
            raise _problem("the file is empty", str(p))
        kind = FILE_KINDS.get(p.suffix.lower())
        if kind is None:
            raise _problem(f"unsupported file kind {p.suffix or '(none)'!r}; use .jsonl, .json, .csv or .parquet",
                           str(p))
        return _read_files(kind, [p], limit, p.parent, str(p), split)
    if _looks_like_hub_id(path):
        return _read_hub(path, limit, subset, split)
    raise _problem(f"file not found: {p} (give a .jsonl/.json/.csv/.parquet file, a folder, or a hub dataset id "
                   "like org/name)", str(p))
