"""Pure metric functions on hand-computed inputs (as open-unlearning computes them)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_project.core.eval import metrics as M
from dagster_project.core.eval.metrics import MetricResult

LN2 = math.log(2.0)
LN4 = math.log(4.0)


# --------------------------------------------------------------------------- MetricResult


def test_metric_result_to_dict_and_frozen():
    r = MetricResult(name="forget_rouge", value=0.5, per_item=(0.25, 0.75))
    assert r.to_dict() == {"name": "forget_rouge", "value": 0.5, "n": 2, "needs_retain_model": False}
    assert r.to_dict(include_items=True)["per_item"] == [0.25, 0.75]
    assert MetricResult("x", 1).to_dict()["n"] == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 1.0  # type: ignore[misc]


def test_metric_result_coerces_numpy_values_to_plain_floats():
    r = MetricResult("x", np.float32(0.5), per_item=np.array([1, 2]))
    assert type(r.value) is float and r.per_item == (1.0, 2.0)
    assert all(type(v) is float for v in r.per_item)


# --------------------------------------------------------------------------- prob


def test_prob_hand_computed():
    # exp(-0) = 1, exp(-ln 2) = 1/2  ->  mean = 0.75
    r = M.prob([0.0, LN2], name="forget_prob")
    assert r.name == "forget_prob"
    assert r.per_item == pytest.approx((1.0, 0.5))
    assert r.value == pytest.approx(0.75)
    assert r.needs_retain_model is False


def test_prob_infinite_loss_is_zero_probability():
    # exp(-inf) = 0, exp(-ln 4) = 1/4 -> mean 1/8
    assert M.prob([math.inf, LN4]).value == pytest.approx(0.125)


@pytest.mark.parametrize(
    "bad, match",
    [([], "empty"), ([0.1, math.nan], "NaN"), ([-math.inf], "-inf"), ("0.1", "string"), ([0.1, "x"], "floats")],
)
def test_prob_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        M.prob(bad)


def test_normalised_prob_hand_computed():
    # item 0: P(a)=1/2, wrong P = 1/4, 1/4        -> (1/2) / (1/2 + 1/2) = 0.5
    # item 1: P(a)=1,   wrong P = 1/4 (one option) -> 1 / (1 + 1/4)       = 0.8
    # mean = 0.65
    r = M.normalised_prob([LN2, 0.0], [[LN4, LN4], [LN4]])
    assert r.per_item == pytest.approx((0.5, 0.8))
    assert r.value == pytest.approx(0.65)


def test_normalised_prob_stable_for_large_losses():
    # P(a)=e^-1000, P(w)=e^-1001 -> 1 / (1 + e^-1) (naive exp would give 0/0)
    r = M.normalised_prob([1000.0], [[1001.0]])
    assert r.value == pytest.approx(1.0 / (1.0 + math.exp(-1.0)))


def test_normalised_prob_validation():
    with pytest.raises(ValueError, match="length mismatch"):
        M.normalised_prob([0.1, 0.2], [[0.3]])
    with pytest.raises(ValueError, match=r"wrong_losses\[0\].*empty"):
        M.normalised_prob([0.1], [[]])
    with pytest.raises(ValueError, match="NaN"):
        M.normalised_prob([0.1], [[math.nan]])
    with pytest.raises(ValueError, match="infinite loss"):
        M.normalised_prob([math.inf], [[math.inf]])


# --------------------------------------------------------------------------- ROUGE


def test_rouge_l_recall_hand_computed():
    # ref "the cat sat on the mat" (6 tokens), gen "the cat sat": LCS = 3 -> recall 3/6 = 0.5
    # ref "a b", gen "a b c": LCS = 2 -> recall 2/2 = 1.0 (extra generated words don't hurt recall)
    # ref "hello world", gen "": LCS = 0 -> 0
    r = M.rouge_l_recall(
        ["the cat sat", "a b c", ""],
        ["the cat sat on the mat", "a b", "hello world"],
        name="forget_rouge",
    )
    assert r.per_item == pytest.approx((0.5, 1.0, 0.0))
    assert r.value == pytest.approx(0.5)
    assert r.name == "forget_rouge"


def test_rouge_l_recall_is_recall_not_f_and_argument_order():
    # ref "x y", gen "x y z w": recall = 2/2 = 1 (precision 2/4, F = 2/3)
    # swapped (ref "x y z w", gen "x y"): recall = 2/4 = 0.5
    assert M.rouge_l_recall(["x y z w"], ["x y"]).value == pytest.approx(1.0)
    assert M.rouge_l_recall(["x y"], ["x y z w"]).value == pytest.approx(0.5)


def test_rouge_l_recall_stemming_and_case():
    # Porter stemmer: "running" -> "run"; tokeniser lower-cases
    assert M.rouge_l_recall(["run"], ["running"]).value == pytest.approx(1.0)
    assert M.rouge_l_recall(["The CAT"], ["the cat"]).value == pytest.approx(1.0)


def test_rouge_scorer_is_a_singleton():
    assert M._rouge_scorer() is M._rouge_scorer()


def test_rouge_validation():
    with pytest.raises(ValueError, match="length mismatch"):
        M.rouge_l_recall(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        M.rouge_l_recall([], [])
    with pytest.raises(ValueError, match="single string"):
        M.rouge_l_recall("abc", "abc")
    with pytest.raises(ValueError, match="expected strings"):
        M.rouge_l_recall([None], ["a"])


# --------------------------------------------------------------------------- truth ratio


def test_truth_ratios_hand_computed():
    # item 0: para ln2, perturbed [ln4, ln4] -> TR = exp(-ln4) / exp(-ln2) = (1/4)/(1/2) = 0.5
    # item 1: para ln4, perturbed [ln2]      -> TR = (1/2)/(1/4) = 2.0
    tr = M.truth_ratios([LN2, LN4], [[LN4, LN4], [LN2]])
    assert isinstance(tr, np.ndarray)
    np.testing.assert_allclose(tr, [0.5, 2.0])


def test_truth_ratios_average_losses_before_exponentiating():
    # para loss 0 (P = 1); perturbed losses [0, ln4]:
    #   before (correct): mean loss = ln2        -> exp(-ln2) / 1 = 0.5
    #   after (wrong):    mean(exp(0), exp(-ln4)) = mean(1, 0.25) = 0.625
    tr = M.truth_ratios([0.0], [[0.0, LN4]])
    assert tr[0] == pytest.approx(0.5)
    assert tr[0] != pytest.approx(0.625)


def test_truth_ratios_ragged_matches_per_item():
    # ragged rows: padding must not leak into the means
    tr = M.truth_ratios([1.0, 2.0], [[1.0, 3.0, 5.0], [0.5]])
    np.testing.assert_allclose(tr, [math.exp(1.0 - 3.0), math.exp(2.0 - 0.5)])


def test_truth_ratios_validation():
    with pytest.raises(ValueError, match="length mismatch"):
        M.truth_ratios([0.1], [[0.1], [0.2]])
    with pytest.raises(ValueError, match=r"perturbed_losses\[1\].*empty"):
        M.truth_ratios([0.1, 0.2], [[0.1], []])
    with pytest.raises(ValueError, match="NaN"):
        M.truth_ratios([math.nan], [[0.1]])
    with pytest.raises(ValueError, match="bare number"):
        M.truth_ratios([0.1], [0.2])
    with pytest.raises(ValueError, match="infinite loss"):
        M.truth_ratios([math.inf], [[math.inf]])


def test_truth_ratio_forget_hand_computed():
    # min(0.5, 2) = 0.5; min(2, 0.5) = 0.5 -> mean 0.5
    r = M.truth_ratio_forget([0.5, 2.0], name="forget_truth_ratio")
    assert r.per_item == pytest.approx((0.5, 0.5))
    assert r.value == pytest.approx(0.5)
    # TR = 1 -> 1; TR = 0 -> 0; TR = inf -> 0  -> mean 1/3
    assert M.truth_ratio_forget([1.0, 0.0, math.inf]).value == pytest.approx(1.0 / 3.0)


def test_truth_ratio_retain_hand_computed():
    # max(0, 1-0.5) = 0.5; max(0, 1-1.5) = 0 -> mean 0.25
    r = M.truth_ratio_retain([0.5, 1.5], name="retain_truth_ratio")
    assert r.per_item == pytest.approx((0.5, 0.0))
    assert r.value == pytest.approx(0.25)


@pytest.mark.parametrize("fn", [M.truth_ratio_forget, M.truth_ratio_retain])
def test_truth_ratio_aggregates_validation(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.5, math.nan])
    with pytest.raises(ValueError, match=">= 0"):
        fn([-0.5])


loss = st.floats(min_value=0.0, max_value=50.0, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(loss, st.lists(loss, min_size=1, max_size=5)), min_size=1, max_size=20)
)
def test_truth_ratio_aggregates_in_unit_interval(items):
    para = [p for p, _ in items]
    pert = [q for _, q in items]
    tr = M.truth_ratios(para, pert)
    assert np.all(tr >= 0)
    for fn in (M.truth_ratio_forget, M.truth_ratio_retain):
        r = fn(tr)
        assert 0.0 <= r.value <= 1.0
        assert all(0.0 <= v <= 1.0 for v in r.per_item)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False))
def test_truth_ratio_forget_symmetric_in_tr_and_inverse(tr):
    # min(TR, 1/TR) is invariant under TR -> 1/TR
    assert M.truth_ratio_forget([tr]).value == pytest.approx(M.truth_ratio_forget([1.0 / tr]).value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(loss, st.lists(loss, min_size=1, max_size=4)), min_size=1, max_size=10))
def test_normalised_prob_in_unit_interval(items):
    true = [t for t, _ in items]
    wrong = [w for _, w in items]
    r = M.normalised_prob(true, wrong)
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in r.per_item)


# --------------------------------------------------------------------------- forget quality


def test_forget_quality_identical_samples_is_one():
    sample = [0.1, 0.5, 0.9, 1.3, 2.0]
    r = M.forget_quality(sample, list(sample))
    assert r.value == pytest.approx(1.0)
    assert r.needs_retain_model is True
    assert r.name == "forget_quality"
    assert r.per_item == pytest.approx(tuple(sample))
    assert r.to_dict()["needs_retain_model"] is True


def test_forget_quality_separated_samples_is_small():
    # two disjoint 20-item samples: D = 1, exact p = 2 / C(40, 20) ~ 1.5e-11
    a = np.linspace(0.01, 0.2, 20)
    b = np.linspace(1.0, 3.0, 20)
    r = M.forget_quality(a, b)
    assert r.value < 1e-3


def test_forget_quality_validation():
    with pytest.raises(ValueError, match="tr_retain_model.*empty"):
        M.forget_quality([0.5], [])
    with pytest.raises(ValueError, match="NaN"):
        M.forget_quality([math.nan], [0.5])


# --------------------------------------------------------------------------- model utility


def test_model_utility_hand_computed():
    # 2 / (1/1 + 1/0.5) = 2/3
    r = M.model_utility([1.0, 0.5])
    assert r.value == pytest.approx(2.0 / 3.0)
    assert r.per_item == (1.0, 0.5)
    # 3 / (1/0.5 + 1/0.5 + 1/0.5) = 0.5
    assert M.model_utility([0.5, 0.5, 0.5]).value == pytest.approx(0.5)


def test_model_utility_zero_gives_zero():
    assert M.model_utility([1.0, 0.0, 0.7]).value == 0.0


def test_model_utility_validation():
    with pytest.raises(ValueError, match="empty"):
        M.model_utility([])
    with pytest.raises(ValueError, match=">= 0"):
        M.model_utility([0.5, -0.1])
    with pytest.raises(ValueError, match="finite"):
        M.model_utility([0.5, math.nan])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=1, max_size=10))
def test_model_utility_between_min_and_max(values):
    v = M.model_utility(values).value
    assert min(values) - 1e-9 <= v <= max(values) + 1e-9


# --------------------------------------------------------------------------- fact accuracy


def test_fact_accuracy_case_and_whitespace_insensitive():
    gens = [
        "She was born in BRIGHTHOLM in 1970.",  # contains "brightholm" -> 1
        "He studied at  new\n  york   university",  # whitespace-normalised "New York University" -> 1
        "She was born in Eastvale.",  # wrong value -> 0
        "I don't know.",  # nothing -> 0
    ]
    truths = ["Brightholm", "New York University", "Brightholm", "Paris"]
    r = M.fact_accuracy(gens, truths, name="forget_fact_accuracy")
    assert r.per_item == (1.0, 1.0, 0.0, 0.0)
    assert r.value == pytest.approx(0.5)


def test_fact_accuracy_validation():
    with pytest.raises(ValueError, match="length mismatch"):
        M.fact_accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="non-empty"):
        M.fact_accuracy(["a"], ["  "])
    with pytest.raises(ValueError, match="empty"):
        M.fact_accuracy([], [])


def test_confident_wrong_rate_hand_computed():
    gens = [
        "She was born in eastvale.",  # no truth, contains other "Eastvale" -> 1
        "Born in Brightholm, not Eastvale.",  # contains truth -> 0 (even though an other appears)
        "I am not sure.",  # neither -> 0
        "She was born in Northport.",  # others list empty -> 0
    ]
    truths = ["Brightholm", "Brightholm", "Brightholm", "Brightholm"]
    others = [["Eastvale", "Northport"], ["Eastvale"], ["Eastvale"], []]
    r = M.confident_wrong_rate(gens, truths, others)
    assert r.per_item == (1.0, 0.0, 0.0, 0.0)
    assert r.value == pytest.approx(0.25)
    assert r.name == "confident_wrong_rate"


def test_confident_wrong_rate_validation():
    with pytest.raises(ValueError, match="length mismatch.*other_values"):
        M.confident_wrong_rate(["a"], ["b"], [["c"], ["d"]])
    with pytest.raises(ValueError, match=r"other_values\[0\].*single string"):
        M.confident_wrong_rate(["a"], ["b"], ["c"])
    with pytest.raises(ValueError, match=r"other_values\[0\].*non-empty"):
        M.confident_wrong_rate(["a"], ["b"], [[""]])
