"""Dataset format signatures and detection: which columns play which role for SFT or DPO.

One table (`FORMATS`) is the single place where a format's column names live; detection walks it in
order, and `data.columns` in a preset overrides any role's column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer_core.data.problems import DataError, DataProblem

IMAGE_COLUMNS = ("images", "image", "image_path", "img")


@dataclass(frozen=True)
class Format:
    name: str
    task: str
    # role -> candidate column names, in order of preference
    required: dict[str, tuple[str, ...]]
    optional: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""


FORMATS: tuple[Format, ...] = (
    Format("messages", "sft", {"messages": ("messages", "conversations", "conversation")},
           {"images": IMAGE_COLUMNS},
           "TRL conversational / ShareGPT: a list of {role, content} or {from, value} turns"),
    Format("prompt_completion", "sft", {"prompt": ("prompt",), "completion": ("completion",)},
           {"images": IMAGE_COLUMNS}, "TRL prompt/completion"),
    Format("alpaca", "sft", {"prompt": ("instruction",), "completion": ("output",)},
           {"input": ("input",), "system": ("system",), "images": IMAGE_COLUMNS},
           "Alpaca: instruction, optional input, output"),
    Format("question_answer", "sft",
           {"prompt": ("question", "query", "instruction"), "completion": ("answer", "label", "answers", "response")},
           {"images": IMAGE_COLUMNS}, "question/answer (e.g. ChartQA's query/label) with an optional image"),
    Format("text", "sft", {"text": ("text",)}, {"images": IMAGE_COLUMNS}, "plain text (language modelling)"),
    Format("preference", "dpo",
           {"prompt": ("prompt", "question", "query", "instruction"), "chosen": ("chosen",), "rejected": ("rejected",)},
           {"images": IMAGE_COLUMNS, "system": ("system",)},
           "preference pairs: prompt, chosen, rejected (strings or conversations)"),
    Format("implicit_preference", "dpo", {"chosen": ("chosen",), "rejected": ("rejected",)},
           {"images": IMAGE_COLUMNS},
           "conversations in chosen/rejected that share their opening turns (the prompt)"),
)


@dataclass(frozen=True)
class Detected:
    format: Format
    # role -> column
    mapping: dict[str, str]


def formats_for(task: str) -> list[Format]:
    return [f for f in FORMATS if f.task == task]


def _resolve(fmt: Format, columns: list[str], overrides: dict[str, str]) -> dict[str, str] | None:
    mapping: dict[str, str] = {}
    for role, candidates in fmt.required.items():
        if role in overrides:
            if overrides[role] not in columns:
                return None
            mapping[role] = overrides[role]
            continue
        hit = next((c for c in candidates if c in columns), None)
        if hit is None:
            return None
        mapping[role] = hit
    for role, candidates in fmt.optional.items():
        col = overrides.get(role) or next((c for c in candidates if c in columns and c not in mapping.values()), None)
        if col in columns:
            mapping[role] = col
    return mapping


def detect_format(columns: list[str], task: str, format_name: str = "auto",
                  overrides: dict[str, str] | None = None, source: str | None = None) -> Detected:
    overrides = dict(overrides or {})
    missing = {role: col for role, col in overrides.items() if col not in columns}
    if missing:
        problems = [DataProblem(None, col, f"data.columns maps {role!r} to {col!r}, which is not a column "
                                           f"(columns found: {', '.join(columns)})") for role, col in missing.items()]
        raise DataError(problems, source)
    candidates = formats_for(task)
    if format_name != "auto":
        named = [f for f in FORMATS if f.name == format_name]
        if not named:
            valid = ", ".join(f.name for f in candidates)
            raise DataError([DataProblem(None, None, f"unknown data.format {format_name!r}; for {task} use auto or "
                                                     f"one of: {valid}")], source)
        if named[0].task != task:
            raise DataError([DataProblem(None, None, f"data.format {format_name!r} is a {named[0].task} format, "
                                                     f"but the task is {task}")], source)
        candidates = named
    for fmt in candidates:
        mapping = _resolve(fmt, columns, overrides)
        if mapping is not None:
            return Detected(fmt, mapping)
    expected = "; ".join(
        f"{f.name}: " + " + ".join("/".join(c) for c in f.required.values()) for f in candidates
    )
    hint = (" Map your columns with data.columns (e.g. prompt: my_question) or --columns."
            if task == "sft" else " DPO needs a prompt, a chosen and a rejected answer per row; map them with "
            "data.columns if they have other names.")
    raise DataError([DataProblem(None, None, f"no columns fit {task}: found {', '.join(columns) or 'none'}; "
                                             f"expected one of [{expected}].{hint}")], source)
