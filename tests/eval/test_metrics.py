"""The answer metrics and the bootstrap, against values worked out by hand."""

from __future__ import annotations

import pytest

from trainer_core.eval.metrics import (
    anls,
    choose_metric,
    exact_match,
    lcs_length,
    levenshtein,
    normalize,
    relaxed_accuracy,
    rouge_l,
    to_number,
    token_f1,
)
from trainer_core.eval.stats import bootstrap_ci, paired_bootstrap_ci, summarize


def test_normalisation_drops_case_punctuation_and_spaces_but_keeps_decimals():
    assert normalize("  The   Answer!! ") == "the answer"
    assert normalize("3.5") == "3.5" and normalize("1,000") == "1,000"
    assert normalize("end.") == "end"
    assert exact_match("  PARIS. ", "paris") == 1.0
    assert exact_match("3.5", "35") == 0.0  # a decimal point is not punctuation to drop
    assert exact_match("b", ["a", "B"]) == 1.0  # best over references


def test_numbers_as_chartqa_reads_them():
    assert to_number("12") == 12 and to_number("1,000") == 1000 and to_number("-3.5") == -3.5
    assert to_number("45%") == pytest.approx(0.45)
    assert to_number("C") is None and to_number("") is None and to_number("-") is None


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("105", "100", 1.0),  # exactly 5% above: in
    ("95", "100", 1.0),  # exactly 5% below: in
    ("105.1", "100", 0.0),  # just over, above
    ("94.9", "100", 0.0),  # just over, below
    ("0.52", "0.5", 1.0),  # 4%
    ("0.53", "0.5", 0.0),  # 6%
    ("C", "c", 1.0),  # not a number: exact match, normalised
    ("7", "C", 0.0),
    ("0", "0", 1.0),  # a zero reference has no relative tolerance: exact match
    ("0.01", "0", 0.0),
])
def test_relaxed_accuracy_five_percent_both_sides(prediction, reference, expected):
    assert relaxed_accuracy(prediction, reference) == expected


def test_levenshtein_and_anls_threshold_both_sides():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("a", "a") == 0
    # 1 edit in 4 characters: normalised distance 0.25 -> 0.75
    assert anls("abcx", "abcd") == pytest.approx(0.75)
    # 2 edits in 5: 0.4 < 0.5 -> 0.6
    assert anls("abcxy", "abcde") == pytest.approx(0.6)
    # 2 edits in 4: exactly 0.5 -> 0 (the threshold is exclusive, as DocVQA scores it)
    assert anls("abxy", "abcd") == 0.0
    # 3 edits in 5: 0.6 -> 0
    assert anls("abxyz", "abcde") == 0.0
    assert anls("Invoice  Total", "invoice total") == 1.0  # case and spacing do not count
    assert anls("abcx", ["zzzz", "abcd"]) == pytest.approx(0.75)  # best reference


def test_token_f1_by_hand():
    # prediction tokens: the cat sat; reference: the cat sat down -> common 3, P = 1, R = 3/4, F1 = 6/7
    assert token_f1("The cat sat.", "the cat sat down") == pytest.approx(6 / 7)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # counts clip: common = 1 a + 1 b
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_rouge_l_by_hand():
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3
    # pred: the cat was found under the bed (7), ref: the cat was under the bed (6); LCS 6 -> P 6/7, R 1
    assert rouge_l("the cat was found under the bed", "the cat was under the bed") == pytest.approx(
        2 * (6 / 7) * 1 / (6 / 7 + 1))
    # order matters (a subsequence, not a bag): LCS of "b a" and "a b" is 1 -> P = R = 1/2
    assert rouge_l("b a", "a b") == pytest.approx(0.5)
    assert rouge_l("", "a") == 0.0
    assert rouge_l("Hello, World!", "hello world") == 1.0  # rouge-score's tokenizer: case and punctuation out


def test_metric_chosen_from_the_answers_shape():
    assert choose_metric(["7", "C", "3"]) == "relaxed_accuracy"  # the demo's chart answers
    assert choose_metric(["yes", "no", "Paris"]) == "exact_match"
    assert choose_metric(["Acme Corp, 12 Main Street", "John Smith Ltd"]) == "anls"
    assert choose_metric(["The chart shows sales rising steadily from 2019 to 2023 in every region."]) == "rouge_l"


def test_bootstrap_is_seeded_and_brackets_the_mean():
    scores = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    a, b = bootstrap_ci(scores), bootstrap_ci(scores)
    assert a == b  # the same answers, the same interval
    assert a[0] <= 0.7 <= a[1] and 0.0 <= a[0] < a[1] <= 1.0
    assert bootstrap_ci(scores, seed=1) != a
    assert bootstrap_ci([0.5] * 5) == [0.5, 0.5]  # no spread, no width
    assert bootstrap_ci([]) is None
    assert summarize(scores) == {"score": 0.7, "ci": [round(x, 6) for x in a], "n": 10}


def test_paired_interval_is_the_interval_of_the_differences():
    base = [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    tuned = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert paired_bootstrap_ci(base, tuned) == bootstrap_ci([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    lo, hi = paired_bootstrap_ci(base, tuned)
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0, 0.0])
