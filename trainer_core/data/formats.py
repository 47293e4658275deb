"""Dataset format signatures and detection: which columns play which role for SFT or DPO.

One table (`FORMATS`) is the single place where a format's column names live; detection walks it in
order, and `data.columns` in a preset overrides any role's column. Shapes read as other tools document
them: TRL's dataset types, LLaMA-Factory's alpaca/sharegpt (system, history, tools), ms-swift's
messages / query-response / rejected_response, axolotl's chat_template datasets and LLaVA.

Nothing is dropped silently: a column no role uses is listed in `Detected.ignored`, and a column whose
name says it carries meaning (a system prompt, earlier turns, tools, a KTO label, videos) must have a role
in the detected format, where conversion handles it or refuses the row with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer_core.data.problems import DataError, DataProblem

IMAGE_COLUMNS = ("images", "image", "image_path", "img")
SYSTEM_COLUMNS = ("system", "system_prompt")
HISTORY_COLUMNS = ("history",)
TOOLS_COLUMNS = ("tools",)
VIDEO_COLUMNS = ("videos", "video")
AUDIO_COLUMNS = ("audios", "audio")
LABEL_COLUMNS = ("label", "kto_tag")

# Roles every conversational format can carry besides its own. videos/audios/label are refused row by row
# (with the reason) when a row has a value: they are taken so the column is never silently ignored.
_CONTEXT = {"system": SYSTEM_COLUMNS, "tools": TOOLS_COLUMNS}
_REFUSED = {"videos": VIDEO_COLUMNS, "audios": AUDIO_COLUMNS}
_PROMPT_EXTRAS = {"system": SYSTEM_COLUMNS, "history": HISTORY_COLUMNS, "tools": TOOLS_COLUMNS}


@dataclass(frozen=True)
class Format:
    name: str
    task: str
    # role -> candidate column names, in order of preference
    required: dict[str, tuple[str, ...]]
    optional: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def roles(self) -> list[str]:
        return [*self.required, *self.optional]


FORMATS: tuple[Format, ...] = (
    Format("messages", "sft", {"messages": ("messages", "conversations", "conversation")},
           {"images": IMAGE_COLUMNS, **_CONTEXT, **_REFUSED, "label": LABEL_COLUMNS},
           "TRL conversational / ShareGPT / OpenAI: a list of {role, content} or {from, value} turns"),
    Format("prompt_completion", "sft", {"prompt": ("prompt",), "completion": ("completion",)},
           {"images": IMAGE_COLUMNS, **_PROMPT_EXTRAS, **_REFUSED, "label": LABEL_COLUMNS},
           "TRL prompt/completion (strings or lists of turns)"),
    Format("alpaca", "sft", {"prompt": ("instruction",), "completion": ("output",)},
           {"input": ("input",), "images": IMAGE_COLUMNS, **_PROMPT_EXTRAS, **_REFUSED, "label": LABEL_COLUMNS},
           "Alpaca: instruction, optional input, output (and system, history as LLaMA-Factory defines them)"),
    Format("question_answer", "sft",
           {"prompt": ("question", "query", "instruction", "problem"),
            "completion": ("answer", "label", "answers", "response")},
           {"images": IMAGE_COLUMNS, **_PROMPT_EXTRAS, **_REFUSED},
           "question/answer (e.g. ChartQA's query/label; ms-swift's query/response/system/history)"),
    Format("text", "sft", {"text": ("text",)}, {"images": IMAGE_COLUMNS, **_REFUSED},
           "plain text (language modelling)"),
    Format("preference", "dpo",
           {"prompt": ("prompt", "question", "query", "instruction"), "chosen": ("chosen",), "rejected": ("rejected",)},
           {"input": ("input",), "images": IMAGE_COLUMNS, **_PROMPT_EXTRAS, **_REFUSED},
           "preference pairs: prompt, chosen, rejected (strings, turns, or one {role, content} each)"),
    Format("conversation_preference", "dpo",
           {"prompt": ("conversations", "messages"), "chosen": ("chosen",), "rejected": ("rejected",)},
           {"images": IMAGE_COLUMNS, **_CONTEXT, **_REFUSED},
           "LLaMA-Factory sharegpt ranking: the conversation so far, then one chosen and one rejected message"),
    Format("messages_rejected", "dpo",
           {"messages": ("messages", "conversations"), "rejected": ("rejected_response",)},
           {"images": IMAGE_COLUMNS, **_CONTEXT, **_REFUSED},
           "ms-swift DPO: messages end with the chosen answer; rejected_response is the worse one"),
    Format("implicit_preference", "dpo", {"chosen": ("chosen",), "rejected": ("rejected",)},
           {"images": IMAGE_COLUMNS, **_CONTEXT, **_REFUSED},
           "chosen/rejected that share their start (the prompt): turns, or plain text"),
)

# Column names that say the column carries meaning: if the detected format has no role for one, the data
# would train without it (a lost system prompt, lost turns, KTO labels read as SFT), so detection refuses.
MEANINGFUL = {c: role for role, cols in {**_PROMPT_EXTRAS, **_REFUSED, "label": LABEL_COLUMNS}.items() for c in cols}


@dataclass(frozen=True)
class Detected:
    format: Format
    # role -> column
    mapping: dict[str, str]
    # input columns no role uses (ids, metadata): listed so a report can show them
    ignored: list[str] = field(default_factory=list)
    # how turns are spelled (LLaMA-Factory's role_tag, content_tag, user_tag, ...); empty for the defaults
    tags: dict[str, str] = field(default_factory=dict)


def formats_for(task: str) -> list[Format]:
    return [f for f in FORMATS if f.task == task]


def _resolve(fmt: Format, columns: list[str], overrides: dict[str, str]) -> dict[str, str] | None:
    if any(role not in fmt.roles for role in overrides):
        return None
    mapping: dict[str, str] = {}
    for role, candidates in fmt.required.items():
        if role in overrides:
            mapping[role] = overrides[role]
            continue
        hit = next((c for c in candidates if c in columns and c not in overrides.values()), None)
        if hit is None:
            return None
        mapping[role] = hit
    for role, candidates in fmt.optional.items():
        col = overrides.get(role) or next(
            (c for c in candidates if c in columns and c not in mapping.values() and c not in overrides.values()),
            None)
        if col in columns:
            mapping[role] = col
    return mapping


def _roles_text(fmts: list[Format]) -> str:
    return "; ".join(f"{f.name}: {', '.join(f.roles)}" for f in fmts)


def _no_slot(role: str, column: str, fmts: list[Format], task: str) -> DataProblem:
    who = f"format {fmts[0].name} has no place for" if len(fmts) == 1 \
        else f"no {task} format has"
    return DataProblem(None, column, f"data.columns (--columns) gives role {role!r}, which {who}; the roles it "
                                     f"can use are: {_roles_text(fmts)}. Fix the role's name, or drop it")


def detect_format(columns: list[str], task: str, format_name: str = "auto",
                  overrides: dict[str, str] | None = None, source: str | None = None,
                  tags: dict[str, str] | None = None) -> Detected:
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
    # A role no candidate format has (a typo, or a slot the format lacks) would otherwise be dropped unseen.
    unknown = [role for role in overrides if not any(role in f.roles for f in candidates)]
    if unknown:
        raise DataError([_no_slot(role, overrides[role], candidates, task) for role in unknown], source)
    for fmt in candidates:
        mapping = _resolve(fmt, columns, overrides)
        if mapping is not None:
            used = set(mapping.values())
            ignored = [c for c in columns if c not in used]
            unplaced = [c for c in ignored if c in MEANINGFUL]
            if unplaced:
                raise DataError([DataProblem(None, c, f"this looks like a {MEANINGFUL[c]} column, but "
                                                      f"format {fmt.name} has no place for it, so training would "
                                                      f"lose it; this format's roles are: {', '.join(fmt.roles)}. "
                                                      "Map it with data.columns, or drop the column")
                                 for c in unplaced], source)
            return Detected(fmt, mapping, ignored, dict(tags or {}))
    # The columns fit a format, but a mapped role is one that format has no place for: say so, by name.
    for fmt in candidates:
        if _resolve(fmt, columns, {r: c for r, c in overrides.items() if r in fmt.roles}) is not None:
            raise DataError([_no_slot(role, col, [fmt], task) for role, col in overrides.items()
                             if role not in fmt.roles], source)
    expected = "; ".join(
        f"{f.name}: " + " + ".join("/".join(c) for c in f.required.values()) for f in candidates
    )
    hint = (" Map your columns with data.columns (e.g. prompt: my_question) or --columns."
            if task == "sft" else " DPO needs a prompt, a chosen and a rejected answer per row; map them with "
            "data.columns if they have other names.")
    roles = f" Roles by format: {_roles_text(candidates)}." if overrides else ""
    raise DataError([DataProblem(None, None, f"no columns fit {task}: found {', '.join(columns) or 'none'}; "
                                             f"expected one of [{expected}].{hint}{roles}")], source)
