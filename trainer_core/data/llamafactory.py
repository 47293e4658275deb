"""LLaMA-Factory data folders: `dataset_info.json` names each dataset and says how to read its file.

An entry (as LLaMA-Factory's data/README.md documents it) gives `file_name`, `formatting` (alpaca, the
default, or sharegpt), `ranking` (preference pairs), `columns` (its names for prompt, query, response,
history, messages, system, tools, images, videos, audios, chosen, rejected, kto_tag) and, for sharegpt,
`tags` (role_tag, content_tag, user_tag, assistant_tag, observation_tag, function_tag, system_tag).
`resolve_entry` turns one entry into vlmtune's terms: the file, a format of `formats.FORMATS`, role ->
column overrides for `detect_format`, and the tags `to_trl` reads turns with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer_core.data.problems import DataError, DataProblem

INFO_FILE = "dataset_info.json"

# LLaMA-Factory's column keys -> vlmtune roles (alpaca; sharegpt's `messages` is added per entry below).
ALPACA_ROLES = {"prompt": "prompt", "query": "input", "response": "completion", "history": "history"}
COMMON_ROLES = {"system": "system", "tools": "tools", "images": "images", "videos": "videos",
                "audios": "audios", "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"}
COLUMN_KEYS = (*ALPACA_ROLES, "messages", *COMMON_ROLES)
# LLaMA-Factory's defaults for sharegpt turns (parser.DatasetAttr): {"from": "human", "value": ...}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
ENTRY_KEYS = ("file_name", "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags",
              *REMOTE_KEYS)


def _error(message: str, source: Path) -> DataError:
    return DataError([DataProblem(None, None, message)], str(source))


def _load_info(folder: Path) -> dict[str, Any]:
    path = folder / INFO_FILE
    if not path.is_file():
        raise _error(f"no {INFO_FILE} in {folder}: a LLaMA-Factory data folder lists its datasets there", folder)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError([DataProblem(None, None, f"{INFO_FILE} is not valid JSON at line {exc.lineno}, column "
                                                 f"{exc.colno}: {exc.msg}", line=exc.lineno)], str(path)) from None
    if not isinstance(info, dict) or not info:
        raise _error(f"{INFO_FILE} must be an object of dataset entries by name (LLaMA-Factory's layout)", path)
    return info


def _file_columns(path: Path) -> list[str] | None:
    """The file's column names from its start, where cheap to read (None when unknown)."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                first = next((line for line in f if line.strip()), "")
            row = json.loads(first) if first else None
            return list(row) if isinstance(row, dict) else None
        if suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            return list(rows[0]) if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if suffix == ".csv":
            import csv

            with path.open(encoding="utf-8", newline="") as f:
                return next(csv.reader(f), None)
    except (OSError, ValueError, StopIteration):
        return None
    return None


def _pick(info: dict[str, Any], name: str | None, source: Path) -> tuple[str, dict[str, Any]]:
    names = ", ".join(info)
    if name is None:
        if len(info) > 1:
            raise _error(f"{INFO_FILE} lists {len(info)} datasets ({names}); name the one to train on with "
                         "data.subset (--subset)", source)
        name = next(iter(info))
    if name not in info:
        raise _error(f"no dataset {name!r} in {INFO_FILE}; it lists: {names}", source)
    entry = info[name]
    if not isinstance(entry, dict):
        raise _error(f"entry {name!r} in {INFO_FILE} must be an object (file_name, formatting, columns, ...)",
                     source)
    return name, entry


def resolve_entry(folder: Path, name: str | None) -> tuple[Path, str, dict[str, str], dict[str, str]]:
    """The data file of entry `name` (the only entry when None), its vlmtune format, role -> column mapping,
    and the tags its turns are spelled with."""
    folder = Path(folder)
    info_path = folder / INFO_FILE
    info = _load_info(folder)
    name, entry = _pick(info, name, info_path)
    where = f"entry {name!r} in {INFO_FILE}"
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise _error(f"{where} has key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}, which "
                     f"LLaMA-Factory does not define; the keys are: {', '.join(ENTRY_KEYS)}", info_path)
    remote = [k for k in REMOTE_KEYS if k in entry]
    if remote:
        hint = (f"set data.path to the hub id {entry[remote[0]]!r} (vlmtune reads hub datasets) with data.columns "
                "for its columns, or download it next to the folder and give the entry a file_name"
                if remote[0] in ("hf_hub_url", "ms_hub_url", "om_hub_url") else
                "download the data into the folder and give the entry a file_name")
        raise _error(f"{where} is not a local file ({remote[0]}: {entry[remote[0]]!r}); {hint}", info_path)
    if entry.get("num_samples") is not None:
        # LLaMA-Factory samples (or repeats) rows to this count; taking every row instead would change the data.
        raise _error(f"{where} sets num_samples ({entry['num_samples']}), which vlmtune does not apply; remove it "
                     "from the entry, and use data.max_samples to train on the first N rows", info_path)
    if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        raise _error(f"{where} has no file_name: the file (or folder) in {folder} that holds the data", info_path)
    path = folder / entry["file_name"]
    if not path.exists():
        raise _error(f"{where} names file_name {entry['file_name']!r}, which is not in {folder}", info_path)

    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt", "openai"):
        raise _error(f"{where} has formatting {formatting!r}; LLaMA-Factory's formats are alpaca and sharegpt",
                     info_path)
    ranking = bool(entry.get("ranking", False))
    columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise _error(f"{where}: columns and tags must be objects of name -> column (or tag)", info_path)
    bad = [k for k in columns if k not in COLUMN_KEYS] + [k for k in tags if k not in SHAREGPT_TAGS]
    if bad:
        raise _error(f"{where} has {', '.join(map(repr, bad))}, which LLaMA-Factory does not define; columns can "
                     f"be: {', '.join(COLUMN_KEYS)}; tags can be: {', '.join(SHAREGPT_TAGS)}", info_path)

    mapping = {COMMON_ROLES[k]: v for k, v in columns.items() if k in COMMON_ROLES}
    if formatting == "alpaca":
        found = _file_columns(path)
        prompt = columns.get("prompt", "instruction")
        response = columns.get("response", "output")
        if (found is not None and response not in found and not ranking and "query" not in columns
                and "history" not in columns):
            # LLaMA-Factory's pre-training entries: {"columns": {"prompt": "text"}}, the prompt column is the text
            return path, "text", {"text": prompt}, {}
        mapping["prompt"] = prompt
        mapping.update({ALPACA_ROLES[k]: v for k, v in columns.items() if k in ("query", "history")})
        if ranking:
            mapping.setdefault("chosen", "chosen")
            mapping.setdefault("rejected", "rejected")
            return path, "preference", mapping, {}
        mapping["completion"] = response
        return path, "alpaca", mapping, {}
    # sharegpt (and LLaMA-Factory's openai variant, read the same way with role/content tags)
    messages = columns.get("messages", "conversations")
    full_tags = {**SHAREGPT_TAGS, **{k: str(v) for k, v in tags.items()}}
    if ranking:
        mapping["prompt"] = messages
        mapping.setdefault("chosen", "chosen")
        mapping.setdefault("rejected", "rejected")
        return path, "conversation_preference", mapping, full_tags
    mapping["messages"] = messages
    return path, "messages", mapping, full_tags
