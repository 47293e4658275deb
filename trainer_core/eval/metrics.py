"""Answer-level task metrics, each a function (prediction, references) -> score in [0, 1].

Pure Python, nothing downloaded: the same definitions as the benchmarks' own scripts (ChartQA's relaxed
accuracy, DocVQA's ANLS, SQuAD's token F1, ROUGE-L as the `rouge-score` package computes it), so a figure
here can be compared with a published one.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence

# A '.' or ',' between digits is part of a number ("3.5", "1,000"): kept, so "3.5" never matches "35".
_PUNCT = re.compile(r"(?!(?<=\d)[.,](?=\d))[^\w\s]|_")
_NUMBER = re.compile(r"^[-+]?(\d+(,\d{3})*|\d*)(\.\d+)?%?$")


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: 'The  Answer!' -> 'the answer'."""
    return " ".join(_PUNCT.sub("", str(text).lower()).split())


def _refs(references: str | Sequence[str]) -> list[str]:
    return [references] if isinstance(references, str) else [str(r) for r in references]


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    p = normalize(prediction)
    return float(any(p == normalize(r) for r in _refs(references)))


def to_number(text: str) -> float | None:
    """'12', '3.5', '1,000', '45%' (-> 0.45, as ChartQA reads it); None for anything else."""
    t = str(text).strip().rstrip(".").replace(" ", "")
    if not t or not _NUMBER.match(t) or not any(c.isdigit() for c in t):
        return None
    pct = t.endswith("%")
    value = float(t.rstrip("%").replace(",", ""))
    return value / 100 if pct else value


def relaxed_accuracy(prediction: str, references: str | Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA: a number is right within 5% relative of the reference; anything else must match exactly.
    A reference of 0 has no relative tolerance and falls back to exact match, as in ChartQA's script."""
    pred = to_number(prediction)
    for ref in _refs(references):
        target = to_number(ref)
        if pred is not None and target:
            if abs(pred - target) / abs(target) <= tolerance + 1e-12:  # 1e-12: 105 vs 100 is exactly 5%
                return 1.0
        elif normalize(prediction) == normalize(ref):
            return 1.0
    return 0.0


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, references: str | Sequence[str], threshold: float = 0.5) -> float:
    """DocVQA's ANLS: 1 - normalised edit distance, best over references; 0 once the distance reaches 0.5
    (a wrong answer scores nothing rather than partial credit for sharing letters)."""
    p = " ".join(str(prediction).lower().split())
    best = 0.0
    for ref in _refs(references):
        r = " ".join(ref.lower().split())
        longest = max(len(p), len(r))
        nl = levenshtein(p, r) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    """SQuAD's token F1 on normalised words, best over references."""
    p = normalize(prediction).split()
    best = 0.0
    for ref in _refs(references):
        r = normalize(ref).split()
        if not p or not r:
            best = max(best, float(p == r))
            continue
        common = sum((Counter(p) & Counter(r)).values())
        if common:
            precision, recall = common / len(p), common / len(r)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _rouge_tokens(text: str) -> list[str]:
    # rouge-score's default tokenizer: lower case, anything but [a-z0-9] separates tokens
    return re.sub(r"[^a-z0-9]+", " ", str(text).lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, references: str | Sequence[str]) -> float:
    """ROUGE-L F1 (longest common subsequence of tokens), best over references; rouge-score's definition."""
    p = _rouge_tokens(prediction)
    best = 0.0
    for ref in _refs(references):
        r = _rouge_tokens(ref)
        lcs = lcs_length(p, r) if p and r else 0
        if lcs:
            precision, recall = lcs / len(p), lcs / len(r)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


SFT_METRICS: dict[str, Callable[[str, str | Sequence[str]], float]] = {
    "exact_match": exact_match,
    "relaxed_accuracy": relaxed_accuracy,
    "anls": anls,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}
DPO_METRICS = ("preference_accuracy",)
ALL_METRICS = (*SFT_METRICS, *DPO_METRICS)


def choose_metric(references: Sequence[str | Sequence[str]]) -> str:
    """The metric that fits the answers' shape: short answers with numbers -> relaxed accuracy (ChartQA);
    one or two words -> exact match; short phrases (document fields) -> ANLS; longer text -> ROUGE-L."""
    flat = [r for refs in references for r in _refs(refs)] or [""]
    words = statistics.median(len(r.split()) for r in flat)
    if words <= 2 and any(to_number(r) is not None for r in flat):
        return "relaxed_accuracy"
    if words <= 2:
        return "exact_match"
    if words <= 8:
        return "anls"
    return "rouge_l"
