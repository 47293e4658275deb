"""What the evaluation screen shows, from eval.json and eval_samples.jsonl: plain data, no widgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILTERS = ("all", "fixed by tuning", "broken by tuning")


def read_evaluation(run_dir: Path, *, samples: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The run's last evaluation, or None when it has none (eval.json is written last: its presence means the
    samples beside it are whole)."""
    report_path = run_dir / "eval.json"
    if not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: evaluated again on request, never a crash in a list
    rows: list[dict[str, Any]] = []
    samples_path = run_dir / "eval_samples.jsonl"
    if samples and samples_path.is_file():
        with samples_path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return report, rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def metric_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, delta with its 95% interval) rows, the main metric first."""
    base, tuned = report.get("base") or {}, report.get("tuned") or {}
    ci = report.get("ci")
    delta = report.get("delta")
    sign = "+" if (delta or 0) >= 0 else ""
    delta_text = "-" if delta is None else f"{sign}{delta:.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
    rows = [(f"{report.get('metric')} (n={report.get('n')})", _pct(base.get("score")), _pct(tuned.get("score")),
             delta_text)]
    for name in ("reward_accuracy", "mean_margin"):
        if isinstance(report.get(name), dict):  # DPO: tuned only (relative to the base by definition)
            rows.append((name, "-", _pct(report[name].get("score")), ""))
    for name, pair in (report.get("also") or {}).items():
        b, t = pair.get("base"), pair.get("tuned")
        d = "" if b is None or t is None else f"{t - b:+.3f}"
        rows.append((name, _pct(b), _pct(t), d))
    return rows


def filtered(samples: list[dict[str, Any]], which: str) -> list[dict[str, Any]]:
    """Fixed: the tuned answer scores higher than the base's; broken: lower."""
    if which == "fixed by tuning":
        return [s for s in samples if float(s.get("tuned_score") or 0) > float(s.get("base_score") or 0)]
    if which == "broken by tuning":
        return [s for s in samples if float(s.get("tuned_score") or 0) < float(s.get("base_score") or 0)]
    return samples


def sample_text(s: dict[str, Any]) -> str:
    lines = [f"Q: {s.get('prompt', '')}", f"reference: {s.get('reference', '')}"]
    if s.get("rejected") is not None:
        lines.append(f"rejected:  {s['rejected']}")
    lines += [f"base  ({float(s.get('base_score') or 0):.2f}): {s.get('base', '')}",
              f"tuned ({float(s.get('tuned_score') or 0):.2f}): {s.get('tuned', '')}"]
    if s.get("margin") is not None:
        lines.append(f"margin {s['margin']:+.3f}")
    return "\n".join(lines)


def headline(report: dict[str, Any]) -> str:
    """One line for a run list: 'relaxed_accuracy 0.12 -> 0.58'."""
    b, t = (report.get("base") or {}).get("score"), (report.get("tuned") or {}).get("score")
    if b is None or t is None:
        return ""
    return f"{report.get('metric')} {b:.2f} -> {t:.2f}" + (" (partial)" if report.get("partial") else "")
