"""From machine + model + data + goal to a configuration that fits, each choice with its reason and cost.

Preference order, fastest first: no quantization before 4-bit, no checkpointing before checkpointing,
then the largest micro-batch that fits in the free memory minus a margin; accumulation makes up the
effective batch. When nothing fits, the plan says what is closest and what would make it fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from trainer_core.model.info import ModelInfo
from trainer_core.plan.memory import GIB, MemoryEstimate, TrainSettings, estimate_memory


@dataclass(frozen=True)
class Goal:
    task: str = "sft"
    effective_batch: int = 16
    text_tokens: int = 1024  # per sample, p95 of the data when known
    answer_tokens: int | None = None
    images_per_sample: float = 0.0
    image_tokens_per_image: int = 0
    vision_patches_per_image: int = 0
    lora: bool = True  # false: full fine-tuning (every weight trains; no quantization possible)
    lora_r: int = 16
    lora_targets: Any = "auto"
    train_vision_tower: bool = False
    lora_dropout: float = 0.05  # the preset default; dropout keeps a mask per adapted input
    # the preset's adapter and its options (TrainSettings has the meaning of each)
    adapter: str = "lora"
    use_dora: bool = False
    virtual_tokens: int = 0
    prefix_projection: bool = False
    margin: float = 0.10  # share of the available memory kept free


@dataclass(frozen=True)
class Target:
    """Where the run goes: a GPU (bytes free, bf16 or not) or the CPU (RAM)."""

    name: str
    available_bytes: int
    backend: str  # cuda | mps | cpu
    bf16: bool


@dataclass(frozen=True)
class Reason:
    field: str
    value: Any
    why: str

    def __str__(self) -> str:
        return f"{self.field} = {self.value}: {self.why}"


@dataclass(frozen=True)
class Plan:
    fits: bool
    target: Target
    settings: TrainSettings
    estimate: MemoryEstimate
    reasons: list[Reason]
    # when it does not fit: what would
    suggestions: list[str] = field(default_factory=list)

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.settings.gradient_accumulation_steps

    def preset_fields(self) -> dict[str, Any]:
        s = self.settings
        return {
            "task": s.task,
            "precision": s.precision,
            "quantization": s.quantization,
            "lora": {"enabled": s.lora, "r": s.lora_r, "alpha": 2 * s.lora_r} if s.lora else {"enabled": False},
            "training": {
                "micro_batch_size": s.micro_batch_size,
                "gradient_accumulation_steps": s.gradient_accumulation_steps,
                "gradient_checkpointing": s.gradient_checkpointing,
                "max_length": _round_up(s.seq_len, 64),
                "optimizer": s.optimizer,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "fits": self.fits,
            "target": asdict(self.target),
            "available_bytes": self.target.available_bytes,
            "memory": {**self.estimate.components, "total_bytes": self.estimate.required,
                       "peak_allocated_bytes": self.estimate.peak_allocated},
            "recommendation": self.preset_fields(),
            "reasons": [str(r) for r in self.reasons],
            "suggestions": self.suggestions,
        }


def _round_up(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _settings(goal: Goal, precision: str, quantization: str, gc: bool, micro: int, r: int) -> TrainSettings:
    return TrainSettings(
        task=goal.task, precision=precision, quantization=quantization, lora=goal.lora, lora_r=r,
        lora_targets=goal.lora_targets, train_vision_tower=goal.train_vision_tower, lora_dropout=goal.lora_dropout,
        micro_batch_size=micro, gradient_accumulation_steps=max(1, math.ceil(goal.effective_batch / micro)),
        text_tokens=goal.text_tokens, answer_tokens=goal.answer_tokens, images_per_sample=goal.images_per_sample,
        image_tokens_per_image=goal.image_tokens_per_image, vision_patches_per_image=goal.vision_patches_per_image,
        gradient_checkpointing=gc,
        optimizer="paged_adamw_8bit" if quantization != "none" or not goal.lora else "adamw_torch_fused",
        adapter=goal.adapter if goal.lora else "none", use_dora=goal.use_dora, virtual_tokens=goal.virtual_tokens,
        prefix_projection=goal.prefix_projection,
    )


def _micro_batches(goal: Goal) -> list[int]:
    top = max(1, goal.effective_batch)
    out, b = [], 1
    while b <= top:
        out.append(b)
        b *= 2
    return out[::-1]  # largest first


def _largest_fitting(info: ModelInfo, goal: Goal, budget: int, precision: str, q: str, gc: bool, r: int):
    for micro in _micro_batches(goal):
        est = estimate_memory(info, _settings(goal, precision, q, gc, micro, r))
        if est.required <= budget:
            return micro, est
    return None, None


def precision_for(target: Target) -> tuple[str, str]:
    """What `precision: auto` becomes on `target`, with the reason."""
    if target.backend == "cuda":
        if target.bf16:
            return "bf16", "the GPU supports bf16 (compute capability 8.0+): half the memory of fp32, fp32's range"
        return "fp16", "this GPU has no bf16; fp16 mixed precision halves memory (with loss scaling)"
    if target.backend == "mps":
        return "fp32", "Apple MPS: fp32 is the safe choice for training"
    return "fp32", "no GPU: CPU training runs in fp32"


def recommend(info: ModelInfo, target: Target, goal: Goal) -> Plan:
    precision, why_precision = precision_for(target)
    budget = int(target.available_bytes * (1 - goal.margin))
    quantizations = ["none", "4bit"] if target.backend == "cuda" and goal.lora else ["none"]
    reasons: list[Reason] = [Reason("precision", precision, why_precision)]
    choice = None
    for q in quantizations:
        micro_plain, est_plain = _largest_fitting(info, goal, budget, precision, q, False, goal.lora_r)
        # PEFT's prefix tuning fails under checkpointing (the preset check refuses it): never recommend it there.
        micro_gc, est_gc = ((None, None) if goal.adapter == "prefix_tuning"
                            else _largest_fitting(info, goal, budget, precision, q, True, goal.lora_r))
        if micro_plain is None and micro_gc is None:
            continue
        # Checkpointing costs ~30% more compute; take it only when it buys a 4x larger micro-batch.
        if micro_plain is not None and (micro_gc is None or micro_gc < 4 * micro_plain or micro_plain >= 4):
            choice = (q, False, micro_plain, est_plain)
        else:
            choice = (q, True, micro_gc, est_gc)
        break
    r = goal.lora_r
    if choice is None and target.backend == "cuda" and goal.lora and goal.adapter == "lora":  # last: a smaller rank
        for r in (8, 4):
            micro, est = _largest_fitting(info, goal, budget, precision, "4bit", True, r)
            if micro is not None:
                choice = ("4bit", True, micro, est)
                break
    if choice is None:
        return _no_fit(info, target, goal, precision, reasons, budget)

    q, gc, micro, est = choice
    s = _settings(goal, precision, q, gc, micro, r)
    plain = estimate_memory(info, _settings(goal, precision, "none", False, micro, r))
    if q == "none":
        reasons.append(Reason("quantization", "none", f"bf16 weights ({gib(est.components['weights'])}) fit; "
                                                      "no 4-bit needed (quantized training is slower)"
                              if precision != "fp32" else f"weights {gib(est.components['weights'])} fit"))
    else:
        leftover = budget - plain.components["weights"]
        reasons.append(Reason("quantization", "4bit (NF4, double quant = QLoRA)",
                              f"weights {gib(plain.components['weights'])} -> {gib(est.components['weights'])}; "
                              f"needed because {precision} weights leave {gib(max(0, leftover))} of the "
                              f"{gib(budget)} budget for everything else"))
    if gc:
        no_gc = estimate_memory(info, replace(s, gradient_checkpointing=False))
        reasons.append(Reason("gradient_checkpointing", True,
                              f"activations {gib(no_gc.components['activations'] + no_gc.components['vision_activations'])}"
                              f" -> {gib(est.components['activations'] + est.components['vision_activations'])} "
                              "(recomputed in backward, ~30% slower)"))
    else:
        reasons.append(Reason("gradient_checkpointing", False,
                              f"activations ({gib(est.components['activations'])}) fit without recomputation"))
    reasons.append(Reason("micro_batch_size", micro, _why_micro(info, goal, s, est, budget)))
    reasons.append(Reason("gradient_accumulation_steps", s.gradient_accumulation_steps,
                          f"{micro} x {s.gradient_accumulation_steps} = effective batch "
                          f"{micro * s.gradient_accumulation_steps} (goal {goal.effective_batch})"))
    if goal.lora and goal.adapter in ("prompt_tuning", "prefix_tuning"):
        reasons.append(Reason("adapter", goal.adapter, f"{est.trainable_params:,} trainable parameters "
                                                       f"({goal.virtual_tokens} virtual tokens); the model stays frozen"))
    elif goal.lora:
        dora = " (DoRA: + a magnitude per output feature, and more activations)" if goal.use_dora else ""
        reasons.append(Reason("lora.r", r, f"{est.trainable_params:,} trainable parameters "
                                           f"({gib(est.components['lora'] + est.components['optimizer'])} with "
                                           "optimizer states)" + dora + ("" if r == goal.lora_r else "; lowered to fit")))
    else:
        reasons.append(Reason("lora", "disabled", f"full fine-tuning: all {est.trainable_params:,} parameters "
                                                  f"train ({gib(est.components['optimizer'])} of optimizer states)"))
    reasons.append(Reason("optimizer", s.optimizer,
                          "paged 8-bit AdamW: states in 8 bits (2 bytes/parameter), spikes paged to CPU"
                          if s.optimizer.startswith("paged") else "AdamW: LoRA's optimizer states are small"))
    return Plan(True, target, s, est, reasons)


def _why_micro(info: ModelInfo, goal: Goal, s: TrainSettings, est: MemoryEstimate, budget: int) -> str:
    """Why this micro-batch: the effective batch caps it (a larger one was never tried), or the next
    size up does not fit."""
    bigger = s.micro_batch_size * 2
    if bigger > goal.effective_batch:
        return f"capped by the effective batch {goal.effective_batch} (needs {gib(est.required)})"
    nxt = estimate_memory(info, replace(s, micro_batch_size=bigger))
    return (f"the largest that fits ({gib(est.required)} of {gib(budget)} usable); "
            f"{bigger} would need {gib(nxt.required)}")


def _no_fit(info: ModelInfo, target: Target, goal: Goal, precision: str, reasons: list[Reason],
            budget: int) -> Plan:
    q = "4bit" if target.backend == "cuda" and goal.lora else "none"
    s = _settings(goal, precision, q, goal.adapter != "prefix_tuning", 1, 8)
    est = estimate_memory(info, s)
    what = ("LoRA r=8" if goal.adapter == "lora" else goal.adapter.replace("_", " ")) if goal.lora else "full fine-tuning"
    suggestions = [f"the smallest configuration ({q} weights, gradient checkpointing, micro-batch 1, {what}) "
                   f"needs {gib(est.required)}; {gib(budget)} is usable on {target.name}"]
    # How short would the sequences have to be?
    lo, hi = 16, goal.text_tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_memory(info, replace(s, text_tokens=mid)).required <= budget:
            lo = mid
        else:
            hi = mid - 1
    if estimate_memory(info, replace(s, text_tokens=lo)).required <= budget:
        suggestions.append(f"shorten training.max_length to about {_round_up(lo + s.seq_len - s.text_tokens, 64)} "
                           f"tokens (now {s.seq_len})")
    suggestions.append(f"a GPU with at least {gib(est.required / (1 - goal.margin))} free would fit this setup")
    suggestions.append("or a smaller model of the same family")
    reasons.append(Reason("fits", False, "even the smallest configuration exceeds the available memory"))
    return Plan(False, target, s, est, reasons, suggestions)
