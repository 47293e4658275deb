"""The run's held-out rows, recorded in the run folder when the run starts (`heldout.jsonl`).

Recorded rather than re-derived at evaluation time: splitting the data file again would give other rows as
soon as the file, the reader or the seed changed, and an evaluation on rows the model trained on says nothing.
Rows are in TRL's format (trainer_core.data.to_trl) with images as file paths; images that came as bytes
(hub datasets) are written beside it, in `heldout_images/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer_core.base.atomic import atomic_write_dir, atomic_write_text

HELDOUT = "heldout.jsonl"
HELDOUT_IMAGES = "heldout_images"


def _plain(ds: Any) -> list[dict[str, Any]]:
    """A datasets.Dataset's rows, images as {"bytes", "path"} dicts instead of decoded PIL images."""
    if "images" in ds.column_names:
        import datasets

        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    return list(ds)


def record_heldout(run_dir: str | Path, eval_dataset: Any) -> Path | None:
    """Write `heldout.jsonl` (and any embedded images) for a run's eval split; None when it has none."""
    if eval_dataset is None or len(eval_dataset) == 0:
        return None
    run_dir = Path(run_dir)
    rows = _plain(eval_dataset)
    embedded: list[tuple[str, bytes]] = []
    for i, row in enumerate(rows):
        paths = []
        for j, image in enumerate(row.get("images") or []):
            if image.get("bytes"):
                name = f"{HELDOUT_IMAGES}/{i:05d}_{j}.png"
                embedded.append((name, image["bytes"]))
                paths.append(name)  # relative to the run folder: it moves with it
            else:
                paths.append(image.get("path"))
        if "images" in row:
            row["images"] = paths
    if embedded:
        def fill(tmp: Path) -> None:
            for name, data in embedded:
                (tmp / Path(name).name).write_bytes(data)

        atomic_write_dir(run_dir / HELDOUT_IMAGES, fill)
    return atomic_write_text(run_dir / HELDOUT, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_heldout(run_dir: str | Path) -> list[dict[str, Any]] | None:
    path = Path(run_dir) / HELDOUT
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        if row.get("images"):
            row["images"] = [str(Path(run_dir) / p) if p and not Path(p).is_absolute() else p
                             for p in row["images"]]
    return rows


def rows_from_dataset(ds: Any) -> list[dict[str, Any]]:
    """Rows of a prepared dataset (`--data`), images as paths, in the same shape as `read_heldout`."""
    rows = _plain(ds)
    for row in rows:
        if "images" in row:
            row["images"] = [im.get("path") or im.get("bytes") for im in row["images"] or []]
    return rows
