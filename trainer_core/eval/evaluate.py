"""Did it help? A run's adapter against its own base model, on rows it never trained on.

`evaluate_run(run_dir)` loads the base model once with the run's LoRA adapter; every batch is answered twice,
with the adapter and inside PEFT's `disable_adapter()` (the base, without a second copy in memory). SFT runs
are scored on their generated answers (greedy, left-padded batches); DPO runs on log-probabilities of the
chosen and rejected answers. It writes `eval.json` and `eval_samples.jsonl` into the run folder, atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_core.base.atomic import atomic_write_json, atomic_write_text
from trainer_core.base.errors import UsageError
from trainer_core.eval.heldout import HELDOUT, read_heldout, rows_from_dataset
from trainer_core.eval.metrics import DPO_METRICS, SFT_METRICS, choose_metric
from trainer_core.eval.stats import mean, paired_bootstrap_ci, summarize

EVAL_JSON = "eval.json"
EVAL_SAMPLES = "eval_samples.jsonl"


class EvalError(UsageError):
    """A run or an option that cannot be evaluated: the message says what, where and the fix."""


@dataclass(frozen=True)
class EvalProgress:
    done: int  # rows answered by both models
    total: int
    seconds: float


@dataclass
class EvalResult:
    report: dict[str, Any]  # what eval.json holds
    samples: list[dict[str, Any]]
    partial: bool
    eval_json: Path | None = None
    samples_path: Path | None = None


@dataclass(frozen=True)
class _Row:
    messages: list[dict[str, str]] | str  # the prompt: conversational turns, or plain text
    images: list[Any]
    reference: str  # SFT: the answer; DPO: the chosen answer
    rejected: str | None = None

    @property
    def prompt_text(self) -> str:
        if isinstance(self.messages, str):
            return self.messages
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user")


# ---------------------------------------------------------------------------------------------------- checks


def check_run(run_dir: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """(run folder, adapter folder, its preset as a dict), or an EvalError saying what is missing."""
    from trainer_core.config.presets import read_preset_yaml

    root = Path(run_dir).expanduser()
    if not root.is_dir() or not (root / "preset.yaml").is_file():
        what = "does not exist" if not root.exists() else "is not a run folder (it has no preset.yaml)"
        raise EvalError(f"{root} {what}: give the folder a training run wrote, e.g. runs/demo-sft-<time>")
    preset = read_preset_yaml(root / "preset.yaml")
    adapter = root / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        if (root / "model" / "config.json").is_file():
            raise EvalError(f"{root} trained the full model (no LoRA adapter): eval compares an adapter with its "
                            "base model in one copy, so it needs a LoRA run (lora.enabled: true)")
        raise EvalError(f"{root} has no adapter yet ({adapter} is missing): wait for the run to finish, or stop it "
                        "(the adapter is saved on stopping), then evaluate")
    return root, adapter, preset


def check_metric(metric: str | None, task: str) -> None:
    valid = DPO_METRICS if task == "dpo" else tuple(SFT_METRICS)
    if metric is not None and metric not in valid:
        raise EvalError(f"unknown metric {metric!r} for a {task.upper()} run: use one of {', '.join(valid)} "
                        "(or leave --metric out to choose from the answers)")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise EvalError(f"--limit {limit}: give a number of rows of at least 1 (or leave it out for all)")


# ---------------------------------------------------------------------------------------------------- rows


def _content(turn: Any) -> str:
    if isinstance(turn, str):
        return turn
    if isinstance(turn, list):  # [{role, content}]: the last turn is the answer
        return _content(turn[-1]["content"]) if turn and isinstance(turn[-1], dict) else ""
    return str(turn)


def _prompt(value: Any) -> list[dict[str, str]] | str:
    if isinstance(value, str):
        return value
    return [{"role": t["role"], "content": _content(t["content"])} for t in value]


def to_rows(raw: list[dict[str, Any]], task: str, where: str) -> list[_Row]:
    rows = []
    for r in raw:
        images = list(r.get("images") or [])
        if task == "dpo":
            rows.append(_Row(_prompt(r["prompt"]), images, _content(r["chosen"]), _content(r["rejected"])))
        elif "messages" in r:
            turns = _prompt(r["messages"])
            if not turns or turns[-1]["role"] != "assistant":
                raise EvalError(f"{where}: a row's conversation does not end with the assistant's answer, so there "
                                "is no reference to score against")
            rows.append(_Row(turns[:-1], images, turns[-1]["content"]))
        elif "prompt" in r and "completion" in r:
            rows.append(_Row(_prompt(r["prompt"]), images, _content(r["completion"])))
        else:
            raise EvalError(f"{where}: rows of plain text have no question and answer to score; evaluate with "
                            "--data on prompt/completion or messages rows")
    return rows


def _rows_from_data(data: str | Path, preset_dict: dict[str, Any], is_vlm: bool, conversational: bool):
    from trainer_core.config.presets import preset_from_dict
    from trainer_core.data.prepare import prepare_dataset

    preset = preset_from_dict(preset_dict)
    # The run's own reading settings (format, columns, image folder), on the given file, every row
    section = dataclasses.replace(preset.data, path=str(data), eval_fraction=0.0, max_samples=None)
    prepared = prepare_dataset(section, preset.task, conversational=conversational, is_vlm=is_vlm)
    return rows_from_dataset(prepared.train)


# ---------------------------------------------------------------------------------------------------- model


def _open(image: Any):
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        import io

        with Image.open(io.BytesIO(image)) as im:
            return im.convert("RGB")
    path = Path(str(image))
    if not path.is_file():
        raise EvalError(f"image not found: {path} (the held-out rows name it; was the data moved?): put it "
                        "back, or evaluate with --data on the data where it is now")
    with Image.open(path) as im:
        return im.convert("RGB")


class ModelUnderTest:
    """The loaded base + adapter, and how to turn rows into its inputs."""

    def __init__(self, loaded: Any) -> None:
        self.model, self.processing_class, self.is_vlm = loaded.model, loaded.processing_class, loaded.is_vlm
        self.tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        self.templated = self.is_vlm or bool(getattr(self.tokenizer, "chat_template", None))
        self.device = next(self.model.parameters()).device

    def prompt_text(self, row: _Row) -> str:
        if isinstance(row.messages, str) and not self.templated:
            return row.messages
        messages = [{"role": "user", "content": row.messages}] if isinstance(row.messages, str) else row.messages
        return self._template(messages, row, add_generation_prompt=True)

    def _template(self, messages: list[dict[str, str]], row: _Row, *, add_generation_prompt: bool) -> str:
        if self.is_vlm:  # the images go first in the first user turn, as TRL places them in training
            parts, placed = [], False
            for m in messages:
                content = [{"type": "text", "text": m["content"]}]
                if m["role"] == "user" and not placed and row.images:
                    content = [{"type": "image"} for _ in row.images] + content
                    placed = True
                parts.append({"role": m["role"], "content": content})
            return self.processing_class.apply_chat_template(parts, add_generation_prompt=add_generation_prompt)
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  tokenize=False)

    def completion_text(self, row: _Row, answer: str) -> str:
        """The answer as the template renders it after the prompt (with its end-of-turn mark), as TRL trains it."""
        prompt = self.prompt_text(row)
        if not self.templated:
            return answer + (self.tokenizer.eos_token or "")
        messages = [{"role": "user", "content": row.messages}] if isinstance(row.messages, str) else row.messages
        full = self._template([*messages, {"role": "assistant", "content": answer}], row, add_generation_prompt=False)
        return full[len(prompt):] if full.startswith(prompt) else answer + (self.tokenizer.eos_token or "")

    def encode(self, rows: list[_Row], texts: list[str]):
        """Left-padded prompts (generation continues every row from the same position)."""
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            if self.is_vlm and any(r.images for r in rows):
                images = [[_open(i) for i in r.images] for r in rows]
                enc = self.processing_class(text=texts, images=images, return_tensors="pt", padding=True)
            else:
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.templated)
        finally:
            self.tokenizer.padding_side = side
        return enc.to(self.device)

    def adapter(self, on: bool):
        return contextlib.nullcontext() if on else self.model.disable_adapter()

    def _answers(self, enc: Any, on: bool, max_new_tokens: int) -> list[str]:
        import torch

        kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "temperature": None, "top_p": None,
                  "top_k": None, "pad_token_id": self.tokenizer.pad_token_id}
        with torch.no_grad(), self.adapter(on):
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def generate(self, rows: list[_Row], max_new_tokens: int) -> tuple[list[str], list[str]]:
        """(base answers, tuned answers), greedy."""
        enc = self.encode(rows, [self.prompt_text(r) for r in rows])
        return self._answers(enc, False, max_new_tokens), self._answers(enc, True, max_new_tokens)

    def generate_tuned(self, rows: list[_Row], max_new_tokens: int) -> list[str]:
        return self._answers(self.encode(rows, [self.prompt_text(r) for r in rows]), True, max_new_tokens)

    def logps(self, rows: list[_Row], answers: list[str], on: bool) -> list[float]:
        """Summed log-probability of each answer after its prompt (and images)."""
        import torch

        enc = self.encode(rows, [self.prompt_text(r) for r in rows])
        comp = [self.tokenizer(self.completion_text(r, a), add_special_tokens=False)["input_ids"]
                for r, a in zip(rows, answers, strict=True)]
        width = max(len(c) for c in comp)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        comp_ids = torch.tensor([c + [pad] * (width - len(c)) for c in comp], device=self.device)
        comp_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in comp], device=self.device)
        ids = torch.cat([enc["input_ids"], comp_ids], dim=1)
        mask = torch.cat([enc["attention_mask"], comp_mask], dim=1)
        # Positions from the mask: left padding must not shift where each prompt starts
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        with torch.no_grad(), self.adapter(on):
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **extra).logits
        start = enc["input_ids"].shape[1]
        pred = logits[:, start - 1:start - 1 + width].float().log_softmax(-1)
        token_logp = pred.gather(-1, comp_ids.unsqueeze(-1)).squeeze(-1) * comp_mask
        return [float(x) for x in token_logp.sum(-1)]


# ---------------------------------------------------------------------------------------------------- scoring


def _batches(rows: list[_Row], size: int) -> list[list[int]]:
    """Row indices in batches of `size`, rows with the same number of images together (a processor batch
    cannot mix them)."""
    by_images: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_images.setdefault(len(r.images), []).append(i)
    out = []
    for idx in by_images.values():
        out += [idx[i:i + size] for i in range(0, len(idx), size)]
    return sorted(out)


def _image_of(row: _Row) -> str | None:
    first = row.images[0] if row.images else None
    return first if isinstance(first, str) else ("<embedded image>" if first is not None else None)


def _sft_report(rows: list[_Row], base: dict[int, str], tuned: dict[int, str], metric: str | None):
    done = sorted(base)
    refs = [rows[i].reference for i in done]
    metric = metric or choose_metric(refs)
    score = SFT_METRICS[metric]
    b = [score(base[i], rows[i].reference) for i in done]
    t = [score(tuned[i], rows[i].reference) for i in done]
    samples = [{"prompt": rows[i].prompt_text, "image": _image_of(rows[i]), "reference": rows[i].reference,
                "base": base[i], "tuned": tuned[i], "base_score": bs, "tuned_score": ts}
               for i, bs, ts in zip(done, b, t, strict=True)]
    # The other answer metrics too, without intervals: a second view at no cost
    also = {name: {"base": mean([f(base[i], rows[i].reference) for i in done]),
                   "tuned": mean([f(tuned[i], rows[i].reference) for i in done])}
            for name, f in SFT_METRICS.items() if name != metric}
    return metric, b, t, samples, {"also": also}


def _dpo_report(rows: list[_Row], logp: dict[int, dict[str, float]]):
    done = sorted(logp)
    b, t, margins, samples = [], [], [], []
    for i in done:
        lp = logp[i]
        base_ok = float(lp["base_chosen"] > lp["base_rejected"])
        tuned_ok = float(lp["tuned_chosen"] > lp["tuned_rejected"])
        # DPO's implicit reward margin (in nats, before beta): how much more the tuning favours chosen
        margin = (lp["tuned_chosen"] - lp["base_chosen"]) - (lp["tuned_rejected"] - lp["base_rejected"])
        b.append(base_ok)
        t.append(tuned_ok)
        margins.append(margin)
        r = rows[i]
        samples.append({"prompt": r.prompt_text, "image": _image_of(r), "reference": r.reference,
                        "rejected": r.rejected, "base": r.reference if base_ok else r.rejected,
                        "tuned": r.reference if tuned_ok else r.rejected, "base_score": base_ok,
                        "tuned_score": tuned_ok, "margin": round(margin, 6),
                        "logp": {k: round(v, 6) for k, v in lp.items()}})
    extra = {"reward_accuracy": summarize([float(m > 0) for m in margins]), "mean_margin": summarize(margins)}
    return "preference_accuracy", b, t, samples, extra


def _auto_max_new_tokens(model: ModelUnderTest, rows: list[_Row]) -> int:
    longest = max((len(model.tokenizer(r.reference, add_special_tokens=False)["input_ids"]) for r in rows), default=8)
    return max(8, min(512, longest + 8))  # room past the longest reference: a rambling answer shows as one


def evaluate_run(run_dir: str | Path, *, data: str | Path | None = None, limit: int | None = None,
                 metric: str | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
                 progress: Callable[[EvalProgress], None] | None = None, stop: threading.Event | None = None,
                 write: bool = True, trust_remote_code: bool = False) -> EvalResult:
    """Score a run's adapter against its base on the run's held-out rows (or `data`).

    `progress` is called after each batch; setting `stop` (or Ctrl-C) ends after the batch in hand, and what
    is done is scored and written with `"partial": true`. Raises EvalError for anything the user can fix,
    before any weights load."""
    root, adapter, preset = check_run(run_dir)
    task = preset.get("task", "sft")
    check_metric(metric, task)
    check_limit(limit)
    if batch_size < 1:
        raise EvalError(f"--batch-size {batch_size}: give at least 1")
    raw = None
    if data is None:
        raw = read_heldout(root)
        if raw is None:
            raise EvalError(f"{root} has no held-out rows ({HELDOUT} is missing: the run had no eval split, "
                            "data.eval_fraction: 0, or it predates eval): give --data PATH with rows to score")
    elif not Path(data).expanduser().exists():
        raise EvalError(f"--data {data}: no such file or folder; give a data file in the run's format")

    from trainer_core.chat import load_for_chat

    loaded = load_for_chat(None, adapter, trust_remote_code=trust_remote_code)
    model = ModelUnderTest(loaded)
    if raw is None:
        raw = _rows_from_data(data, preset, model.is_vlm, model.templated)
    where = str(data) if data is not None else str(root / HELDOUT)
    rows = to_rows(raw, task, where)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise EvalError(f"{where} holds no rows to score")
    if task != "dpo":
        max_new_tokens = max_new_tokens or _auto_max_new_tokens(model, rows)

    answers, partial, seconds = _answer_all(model, rows, task, batch_size, max_new_tokens, progress, stop)
    report, samples = _report(rows, task, metric, answers, partial, seconds, batch_size, max_new_tokens,
                              where=where, adapter=adapter, preset=preset)
    result = EvalResult(report, samples, partial)
    if write:
        result.samples_path = atomic_write_text(root / EVAL_SAMPLES,
                                                "".join(json.dumps(s, default=str) + "\n" for s in samples))
        result.eval_json = atomic_write_json(root / EVAL_JSON, report)  # last: its presence means both are whole
    return result


def _answer_all(model: ModelUnderTest, rows: list[_Row], task: str, batch_size: int, max_new_tokens: int | None,
                progress: Callable[[EvalProgress], None] | None, stop: threading.Event | None):  # noqa: ANN202
    """Both models' answers (SFT) or log-probabilities (DPO), batch by batch, until done or stopped."""
    start = time.perf_counter()
    base: dict[int, str] = {}
    tuned: dict[int, str] = {}
    logp: dict[int, dict[str, float]] = {}
    partial = False
    try:
        for batch in _batches(rows, batch_size):
            if stop is not None and stop.is_set():
                partial = True
                break
            chunk = [rows[i] for i in batch]
            if task == "dpo":
                scores = {f"{who}_{kind}": model.logps(chunk, [getattr(r, attr) for r in chunk], on)
                          for who, on in (("base", False), ("tuned", True))
                          for kind, attr in (("chosen", "reference"), ("rejected", "rejected"))}
                for j, i in enumerate(batch):
                    logp[i] = {k: v[j] for k, v in scores.items()}
            else:
                b, t = model.generate(chunk, max_new_tokens)
                for j, i in enumerate(batch):
                    base[i], tuned[i] = b[j], t[j]
            if progress is not None:
                progress(EvalProgress(len(logp) + len(base), len(rows), time.perf_counter() - start))
    except KeyboardInterrupt:  # keep what is done: a long evaluation cut short still says something
        partial = True
    if not logp and not base:
        raise EvalError("stopped before the first batch was scored: nothing to write")
    return (logp if task == "dpo" else (base, tuned)), partial, time.perf_counter() - start


def _report(rows: list[_Row], task: str, metric: str | None, answers: Any, partial: bool, seconds: float,
            batch_size: int, max_new_tokens: int | None, *, where: str, adapter: Path,
            preset: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """eval.json's object and the per-row samples."""
    if task == "dpo":
        n = len(answers)
        metric, b_scores, t_scores, samples, extra = _dpo_report(rows, answers)
    else:
        n = len(answers[0])
        metric, b_scores, t_scores, samples, extra = _sft_report(rows, *answers, metric)
    b_sum, t_sum = summarize(b_scores), summarize(t_scores)
    ci = paired_bootstrap_ci(b_scores, t_scores)
    report = {
        "n": n, "metric": metric, "base": b_sum, "tuned": t_sum, "delta": round(t_sum["score"] - b_sum["score"], 6),
        "ci": [round(x, 6) for x in ci] if ci else None,
        **extra,
        "task": task, "partial": partial, "rows_available": len(rows),
        "source": where, "adapter": str(adapter), "base_model": preset.get("model", {}).get("name_or_path"),
        "generation": None if task == "dpo" else {"greedy": True, "max_new_tokens": max_new_tokens},
        "batch_size": batch_size, "seconds": round(seconds, 3),
        "rows_per_second": round(n / seconds, 3) if seconds > 0 else None, "finished": time.time(),
    }
    return report, samples
