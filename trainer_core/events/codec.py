"""The one mapping between events and the JSON rows of a run folder, both ways.

The recorder writes `encode(event)`; the follower (`vlmtune monitor`, the app following a background run) turns
rows back into the same event types with `decode`, so a live run and a followed one draw the same history.
Steps and evaluations go to metrics.jsonl as flat rows (easy to load in pandas), samples to samples.jsonl,
everything else to events.jsonl as `{"event": kind, ...fields}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trainer_core.events.types import (
    CheckpointSaved,
    EvalLogged,
    Event,
    LogMessage,
    Memory,
    OomBackoff,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
    TaskEvalScored,
)

# Read in this order: a run_started row (events) comes before the steps it starts.
FILES = {"events": "events.jsonl", "metrics": "metrics.jsonl", "samples": "samples.jsonl"}
_BY_KIND: dict[str, type[Event]] = {cls.kind: cls for cls in (RunStarted, CheckpointSaved, OomBackoff, LogMessage,
                                                                RunFinished, TaskEvalScored)}
_STEP_FIELDS = ("step", "max_steps", "epoch", "loss", "learning_rate", "grad_norm", "samples_per_second",
                "tokens_per_second", "elapsed")
_MEMORY = "memory_"


def encode(event: Event) -> tuple[str, dict[str, Any]]:
    """(file kind, row) for one event."""
    if isinstance(event, StepLogged):
        row: dict[str, Any] = {"type": "train", **{k: getattr(event, k) for k in _STEP_FIELDS}, "time": event.time}
        row.update({_MEMORY + k: v for k, v in dataclasses.asdict(event.memory).items() if v is not None})
        row.update(event.extra)
        return "metrics", row
    if isinstance(event, EvalLogged):
        return "metrics", {"type": "eval", "step": event.step, "epoch": event.epoch, "time": event.time,
                           **event.metrics}
    if isinstance(event, SampleGenerated):
        return "samples", dataclasses.asdict(event)
    return "events", event.to_dict()


def decode(kind: str, row: dict[str, Any]) -> Event | None:
    """The event a row records; None for a row that is not one (a foreign or malformed line is skipped,
    never fatal: a run folder is read while another process writes it)."""
    try:
        if kind == "metrics":
            return _decode_metrics(row)
        if kind == "samples":
            return SampleGenerated(**_fields(SampleGenerated, row))
        cls = _BY_KIND.get(str(row.get("event")))
        return cls(**_fields(cls, row)) if cls else None
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def _decode_metrics(row: dict[str, Any]) -> Event | None:
    if row.get("type") == "eval":
        metrics = {k: v for k, v in row.items() if k not in ("type", "step", "epoch", "time")}
        return EvalLogged(step=int(row["step"]), epoch=float(row.get("epoch") or 0), metrics=metrics,
                          time=float(row.get("time") or 0))
    if row.get("type") != "train":
        return None
    measured = {k[len(_MEMORY):]: v for k, v in row.items() if k.startswith(_MEMORY)}
    memory = Memory(**{"device": "", **{k: v for k, v in measured.items() if k in Memory.__dataclass_fields__}})
    known = {*_STEP_FIELDS, "type", "time"}
    extra = {k: v for k, v in row.items() if k not in known and not k.startswith(_MEMORY)}
    return StepLogged(step=int(row["step"]), max_steps=int(row.get("max_steps") or 0),
                      epoch=float(row.get("epoch") or 0), loss=row.get("loss"),
                      learning_rate=row.get("learning_rate"), grad_norm=row.get("grad_norm"),
                      samples_per_second=row.get("samples_per_second"),
                      tokens_per_second=row.get("tokens_per_second"), elapsed=float(row.get("elapsed") or 0),
                      memory=memory, extra=extra, time=float(row.get("time") or 0))


# A field a row lacks (a folder written by an older version) gets its type's empty value.
_EMPTY = {"str": "", "int": 0, "float": 0.0, "bool": False, "dict[str, Any]": {}}


def _fields(cls: type[Event], row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in row:
            out[f.name] = row[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            out[f.name] = None if "None" in str(f.type) else _EMPTY.get(str(f.type))
    return out
