"""Means with seeded 95% bootstrap confidence intervals: how sure a score (or a base-vs-tuned gain) is.

Seeded, so the same answers always give the same interval (eval.json does not change between identical runs).
The delta's interval resamples rows in pairs: base and tuned answered the same questions, and a paired
interval is much narrower than two independent ones would suggest.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

RESAMPLES = 1000
SEED = 0


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _percentiles(samples: list[float], level: float) -> list[float]:
    samples = sorted(samples)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2

    def at(q: float) -> float:  # linear interpolation between order statistics (numpy's default)
        pos = q * (len(samples) - 1)
        i = int(pos)
        j = min(i + 1, len(samples) - 1)
        return samples[i] + (samples[j] - samples[i]) * (pos - i)

    return [at(lo_q), at(hi_q)]


def bootstrap_ci(values: Sequence[float], *, resamples: int = RESAMPLES, level: float = 0.95,
                 seed: int = SEED) -> list[float] | None:
    """[low, high] of the mean; None without values."""
    n = len(values)
    if n == 0:
        return None
    rng = random.Random(seed)
    idx = range(n)
    means = [sum(values[i] for i in rng.choices(idx, k=n)) / n for _ in range(resamples)]
    return _percentiles(means, level)


def paired_bootstrap_ci(base: Sequence[float], tuned: Sequence[float], **kw) -> list[float] | None:  # noqa: ANN003
    """[low, high] of mean(tuned - base), resampling rows (both answers of a row together)."""
    if len(base) != len(tuned):
        raise ValueError("paired scores need the same rows")
    return bootstrap_ci([t - b for b, t in zip(base, tuned, strict=True)], **kw)


def summarize(values: Sequence[float]) -> dict:
    """{"score", "ci", "n"} for one model's per-row scores."""
    m = mean(values)
    return {"score": round(m, 6) if m is not None else None, "ci": _round(bootstrap_ci(values)), "n": len(values)}


def _round(ci: list[float] | None) -> list[float] | None:
    return [round(x, 6) for x in ci] if ci else None
