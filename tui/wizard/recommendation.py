"""The plan's recommendation as changes to the preset being drafted: each field, its value now, the value
recommended and why. Pure data (no widgets): the Plan step shows these and applies them one by one or all at
once; nothing the user chose is replaced without being shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The plan's Reason.field names, as draft paths.
REASON_PATHS = {
    "precision": "precision", "quantization": "quantization", "lora.r": "lora.r", "lora": "lora.enabled",
    "gradient_checkpointing": "training.gradient_checkpointing", "micro_batch_size": "training.micro_batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps", "optimizer": "training.optimizer",
}


@dataclass(frozen=True)
class Change:
    path: str
    current: Any
    recommended: Any
    why: str


def recommended_values(report: Any, draft_get: Any) -> dict[str, Any]:
    """Draft path -> the value the plan recommends (a rank change brings alpha = 2 x r with it, as the plan's own
    preset does; a kept rank keeps the user's alpha)."""
    fields = report.plan.preset_fields()
    out: dict[str, Any] = {"precision": fields["precision"], "quantization": fields["quantization"]}
    lora = fields["lora"]
    if not lora.get("enabled"):
        out["lora.enabled"] = False
    elif lora["r"] != draft_get("lora.r"):
        out["lora.r"], out["lora.alpha"] = lora["r"], lora["alpha"]
    for key, value in fields["training"].items():
        out[f"training.{key}"] = value
    return out


def _why(path: str, report: Any) -> str:
    for reason in report.plan.reasons:
        if REASON_PATHS.get(reason.field) == path:
            return reason.why
    if path == "lora.alpha":
        return "follows the rank (alpha = 2 x r)"
    if path == "training.max_length":
        stats = report.stats
        if stats is not None and stats.total_tokens.max:
            return (f"the longest checked row is {stats.total_tokens.max} text tokens ({stats.sampled} rows "
                    "checked), plus image tokens, rounded up to 64: padding to more costs memory")
        return "the planned sequence length, rounded up to 64"
    return "the recommendation"


def changes(report: Any, draft_get: Any) -> list[Change]:
    """Every field where the draft differs from the recommendation, with the plan's reason."""
    out = []
    for path, value in recommended_values(report, draft_get).items():
        current = draft_get(path)
        if current != value:
            out.append(Change(path, current, value, _why(path, report)))
    return out
