"""Read a dataset from where the user keeps it: a file, a folder, a `save_to_disk` folder or a hub id.

Rows come back as plain dicts (with their line numbers for JSON Lines), so format detection and
validation can name the exact row; `datasets` is imported only when a file kind needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_core.data.problems import DataError, DataProblem

FILE_KINDS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class RawData:
    rows: list[dict[str, Any]]
    # Where relative image paths are resolved from (the data file's folder).
    base_dir: Path | None
    source: str
    # 1-based line numbers, for JSON Lines.
    line_numbers: list[int] | None = None

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows[:100]:
            for k in row:
                seen.setdefault(k, None)
        return list(seen)


def _read_jsonl(path: Path, limit: int | None) -> RawData:
    rows, lines, problems = [], [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(DataProblem(len(rows), None, f"line {n} is not valid JSON: {exc.msg}", line=n))
                continue
            if not isinstance(row, dict):
                problems.append(DataProblem(len(rows), None, f"line {n} is not a JSON object", line=n))
                continue
            rows.append(row)
            lines.append(n)
            if limit and len(rows) >= limit:
                break
    if problems:
        raise DataError(problems, str(path))
    return RawData(rows, path.parent, str(path), lines)


def _read_json(path: Path, limit: int | None) -> RawData:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError([DataProblem(None, None, f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                                                 f"{exc.msg}", line=exc.lineno)], str(path)) from None
    if isinstance(data, dict):
        # {"data": [...]} / {"train": [...]} wrappers are common in exported datasets.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError([DataProblem(None, None, "a .json dataset must be a list of objects (one per row); "
                                                 "for one object per line use .jsonl")], str(path))
    return RawData(data[:limit] if limit else data, path.parent, str(path))


def _undecoded_rows(ds) -> list[dict[str, Any]]:  # noqa: ANN001 (a datasets.Dataset)
    """Rows with images as {"bytes", "path"} dicts: decoding every image just to list rows is wasted work."""
    import datasets

    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):
            ds = ds.cast_column(name, datasets.List(datasets.Image(decode=False)))
    return ds.to_list()


def _read_with_datasets(kind: str, files: list[str], limit: int | None, base: Path, source: str) -> RawData:
    import datasets

    split = f"train[:{limit}]" if limit else "train"
    ds = datasets.load_dataset(kind, data_files=files, split=split)
    return RawData(_undecoded_rows(ds), base, source)


METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def _read_image_folder(path: Path, meta: Path, limit: int | None) -> RawData:
    """Hugging Face's imagefolder layout: images beside a metadata file whose `file_name` names each image."""
    if meta.suffix == ".jsonl":
        raw = _read_jsonl(meta, limit)
    else:
        raw = _read_with_datasets(FILE_KINDS[meta.suffix], [str(meta)], limit, path, str(meta))
    for row in raw.rows:
        if "file_name" in row and "image" not in row and "images" not in row:
            row["image"] = row.pop("file_name")
    return RawData(raw.rows, path, str(path), raw.line_numbers)


def _read_folder(path: Path, limit: int | None, subset: str | None, split: str) -> RawData:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError([DataProblem(None, None, f"split {split!r} not found; the folder has "
                                                         f"{', '.join(ds)} (set data.split)")], str(path))
            ds = ds[split]
        if limit:
            ds = ds.select(range(min(limit, len(ds))))
        return RawData(_undecoded_rows(ds), path, str(path))
    meta = next((path / m for m in METADATA_FILES if (path / m).exists()), None)
    if meta is not None:
        return _read_image_folder(path, meta, limit)
    by_kind: dict[str, list[Path]] = {}
    for f in sorted(path.iterdir()):
        if f.suffix.lower() in FILE_KINDS:
            by_kind.setdefault(FILE_KINDS[f.suffix.lower()], []).append(f)
    if not by_kind:
        raise DataError([DataProblem(None, None, f"no data files in {path} (expected .jsonl, .json, .csv or "
                                                 ".parquet)")], str(path))
    if len(by_kind) > 1:
        kinds = ", ".join(f"{k} ({len(v)})" for k, v in by_kind.items())
        raise DataError([DataProblem(None, None, f"the folder mixes file kinds ({kinds}); point data.path at "
                                                 "one file or keep one kind per folder")], str(path))
    kind, files = next(iter(by_kind.items()))
    if kind in ("json", "jsonl"):
        parts = [(_read_jsonl if kind == "jsonl" else _read_json)(f, None) for f in files]
        rows = [r for p in parts for r in p.rows]
        return RawData(rows[:limit] if limit else rows, path, str(path))
    return _read_with_datasets(kind, [str(f) for f in files], limit, path, str(path))


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
        ds = datasets.load_dataset(repo_id, subset, split=sl)
        rows = _undecoded_rows(ds)
    except Exception as exc:  # connection errors come in many types across huggingface_hub versions
        raise DataError([DataProblem(None, None, f"could not reach the hub dataset {repo_id!r} "
                                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). "
                                                 "Download it where there is network (datasets "
                                                 "save_to_disk, or its files) and set data.path to the local "
                                                 "copy.")], repo_id) from None
    return RawData(rows, None, repo_id)


def read_rows(path: str, *, limit: int | None = None, subset: str | None = None, split: str = "train") -> RawData:
    p = Path(path).expanduser()
    if p.is_dir():
        return _read_folder(p, limit, subset, split)
    if p.is_file():
        if p.stat().st_size == 0:
            raise DataError([DataProblem(None, None, "the file is empty")], str(p))
        kind = FILE_KINDS.get(p.suffix.lower())
        if kind == "jsonl":
            raw = _read_jsonl(p, limit)
        elif kind == "json":
            raw = _read_json(p, limit)
        elif kind in ("csv", "parquet"):
            raw = _read_with_datasets(kind, [str(p)], limit, p.parent, str(p))
        else:
            raise DataError([DataProblem(None, None, f"unsupported file kind {p.suffix or '(none)'!r}; use "
                                                     ".jsonl, .json, .csv or .parquet")], str(p))
        if not raw.rows:
            raise DataError([DataProblem(None, None, "the file has no rows")], str(p))
        return raw
    if _looks_like_hub_id(path):
        return _read_hub(path, limit, subset, split)
    raise DataError([DataProblem(None, None, f"file not found: {p} (give a .jsonl/.json/.csv/.parquet file, a "
                                             "folder, or a hub dataset id like org/name)")], str(p))
