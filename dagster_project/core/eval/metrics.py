"""Pure evaluation metrics (TOFU / MUSE / open-unlearning conventions).

Nothing here touches a model or torch: every function takes per-item quantities computed
elsewhere (mean answer-token NLLs, generated strings) and returns one uniform
:class:`MetricResult` (``truth_ratios`` alone returns the raw per-item array).

Notation: ``L̄(x, y)`` is the mean negative log-likelihood (natural log) of the answer
tokens of ``y`` given the prompt ``x``; ``P = exp(−L̄)``.

==========================  ====================================================
metric                      definition
==========================  ====================================================
``prob``                    per item ``exp(−L̄(q, a))``; aggregate = mean
``normalised_prob``         per item ``P(a) / (P(a) + Σ_j P(wrong_j))``; mean
``rouge_l_recall``          ROUGE-L recall (stemmed), reference vs generation; mean
``truth_ratios``            ``TR = exp(−mean_j L̄(q, pert_j)) / exp(−L̄(q, para))``
``truth_ratio_forget``      ``mean(min(TR, 1/TR))``
``truth_ratio_retain``      ``mean(max(0, 1 − TR))``
``forget_quality``          KS-test p-value of model TRs vs retain-model TRs
``model_utility``           harmonic mean of the given numbers (any 0 → 0)
``fact_accuracy``           1 if the true value appears in the generation; mean
``confident_wrong_rate``    1 if not the true value but another value appears; mean
==========================  ====================================================
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "MetricResult",
    "prob",
    "normalised_prob",
    "rouge_l_recall",
    "truth_ratios",
    "truth_ratio_forget",
    "truth_ratio_retain",
    "forget_quality",
    "model_utility",
    "fact_accuracy",
    "confident_wrong_rate",
]


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class MetricResult:
    """One metric's outcome.

    ``value`` is the aggregate; ``per_item`` holds the per-item values the aggregate was
    computed from, when such exist (for ``forget_quality`` the evaluated model's raw
    truth ratios, for ``model_utility`` the component values). ``needs_retain_model`` is
    True only for metrics that need a retain-only reference model (``forget_quality``).
    """

    name: str
    value: float
    per_item: tuple[float, ...] = ()
    needs_retain_model: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "per_item", tuple(float(v) for v in self.per_item))

    @property
    def n(self) -> int:
        """Number of per-item values."""
        return len(self.per_item)

    def to_dict(self, include_items: bool = False) -> dict[str, Any]:
        """``{"name", "value", "n", "needs_retain_model"}`` (+ ``"per_item"`` if asked)."""
        out: dict[str, Any] = {
            "name": self.name,
            "value": self.value,
            "n": self.n,
            "needs_retain_model": self.needs_retain_model,
        }
        if include_items:
            out["per_item"] = list(self.per_item)
        return out


# --------------------------------------------------------------------------- validation


def _is_number(x: Any) -> bool:
    return isinstance(x, (Real, np.floating, np.integer)) and not isinstance(x, bool)


def _floats(values: Sequence[float], what: str) -> np.ndarray:
    """1-D float array; rejects a bare string, empty input, non-numbers and NaN."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{what}: expected a sequence of floats, got a string")
    try:
        seq = list(values)
    except TypeError:
        raise ValueError(
            f"{what}: expected a sequence of floats, got {type(values).__name__}"
        ) from None
    if not seq:
        raise ValueError(f"{what}: expected at least one value, got an empty sequence")
    for i, v in enumerate(seq):
        if not _is_number(v):
            raise ValueError(f"{what}: expected floats, got {type(v).__name__} {v!r} at index {i}")
    arr = np.asarray(seq, dtype=float)
    bad = np.flatnonzero(np.isnan(arr))
    if bad.size:
        raise ValueError(f"{what}: expected no NaN, got NaN at index(es) {bad.tolist()[:10]}")
    return arr


def _losses(values: Sequence[float], what: str) -> np.ndarray:
    """Losses: floats without −inf (+inf is allowed: probability 0)."""
    arr = _floats(values, what)
    bad = np.flatnonzero(np.isneginf(arr))
    if bad.size:
        raise ValueError(f"{what}: expected losses > -inf, got -inf at index(es) {bad.tolist()[:10]}")
    return arr


def _ragged_losses(rows: Sequence[Sequence[float]], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Padded (n_items, max_k) loss matrix and its validity mask; every row non-empty."""
    if isinstance(rows, (str, bytes)):
        raise ValueError(f"{what}: expected a sequence of sequences of floats, got a string")
    rows = list(rows)
    if not rows:
        raise ValueError(f"{what}: expected at least one item, got an empty sequence")
    parsed: list[np.ndarray] = []
    for i, row in enumerate(rows):
        if _is_number(row):
            raise ValueError(
                f"{what}: expected a sequence of floats per item, got a bare number at item {i}"
            )
        parsed.append(_losses(row, f"{what}[{i}]"))
    width = max(len(r) for r in parsed)
    mat = np.zeros((len(parsed), width), dtype=float)
    mask = np.zeros((len(parsed), width), dtype=bool)
    for i, r in enumerate(parsed):
        mat[i, : len(r)] = r
        mask[i, : len(r)] = True
    return mat, mask


def _same_length(a_len: int, b_len: int, a_what: str, b_what: str) -> None:
    if a_len != b_len:
        raise ValueError(
            f"length mismatch: expected {a_what} and {b_what} to have the same length, "
            f"got {a_len} and {b_len}"
        )


def _strings(values: Sequence[str], what: str, allow_empty_strings: bool = True) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{what}: expected a sequence of strings, got a single string")
    seq = list(values)
    if not seq:
        raise ValueError(f"{what}: expected at least one string, got an empty sequence")
    for i, s in enumerate(seq):
        if not isinstance(s, str):
            raise ValueError(f"{what}: expected strings, got {type(s).__name__} {s!r} at index {i}")
        if not allow_empty_strings and not s.strip():
            raise ValueError(f"{what}: expected non-empty strings, got {s!r} at index {i}")
    return seq


def _ratios(tr: Sequence[float], what: str) -> np.ndarray:
    """Truth ratios: non-negative floats (inf allowed)."""
    arr = _floats(tr, what)
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        raise ValueError(
            f"{what}: expected truth ratios >= 0, got negative values at index(es) {bad.tolist()[:10]}"
        )
    return arr


def _result(name: str, per_item: np.ndarray, **kw: Any) -> MetricResult:
    return MetricResult(name=name, value=float(np.mean(per_item)), per_item=tuple(per_item.tolist()), **kw)


# --------------------------------------------------------------------------- probability


def prob(mean_losses: Sequence[float], name: str = "prob") -> MetricResult:
    """Per item ``exp(−L̄(q, a))``; aggregate = mean."""
    losses = _losses(mean_losses, "mean_losses")
    return _result(name, np.exp(-losses))


def normalised_prob(
    true_losses: Sequence[float],
    wrong_losses: Sequence[Sequence[float]],
    name: str = "normalised_prob",
) -> MetricResult:
    """Per item ``P(a) / (P(a) + Σ_j P(wrong_j))`` with ``P = exp(−L̄)``; aggregate = mean.

    Items may have different numbers of wrong options (at least one each). Computed in
    log space: ``1 / (1 + Σ_j exp(L̄(a) − L̄(wrong_j)))``.
    """
    true = _losses(true_losses, "true_losses")
    wrong, mask = _ragged_losses(wrong_losses, "wrong_losses")
    _same_length(len(true), len(wrong), "true_losses", "wrong_losses")
    # log P for [true, wrong...]; padded slots get -inf (probability 0).
    logp = np.concatenate([-true[:, None], np.where(mask, -wrong, -np.inf)], axis=1)
    with np.errstate(invalid="ignore"):
        log_norm = np.logaddexp.reduce(logp, axis=1)
        per_item = np.exp(logp[:, 0] - log_norm)
    bad = np.flatnonzero(np.isnan(per_item))
    if bad.size:
        raise ValueError(
            "normalised_prob: undefined where the true answer and every wrong option have "
            f"infinite loss; got that at item(s) {bad.tolist()[:10]}"
        )
    return _result(name, per_item)


# --------------------------------------------------------------------------- ROUGE


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    """Module-level singleton ROUGE-L scorer (with Porter stemming), built on first use."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(
    generations: Sequence[str],
    references: Sequence[str],
    name: str = "rouge_l_recall",
) -> MetricResult:
    """Per item ROUGE-L recall = LCS(reference, generation) / len(reference tokens),
    via ``rouge_score`` with stemming; aggregate = mean."""
    gens = _strings(generations, "generations")
    refs = _strings(references, "references")
    _same_length(len(gens), len(refs), "generations", "references")
    scorer = _rouge_scorer()
    per_item = np.fromiter(
        (scorer.score(target=r, prediction=g)["rougeL"].recall for g, r in zip(gens, refs)),
        dtype=float,
        count=len(gens),
    )
    return _result(name, per_item)


# --------------------------------------------------------------------------- truth ratio


def truth_ratios(
    para_losses: Sequence[float],
    perturbed_losses: Sequence[Sequence[float]],
) -> np.ndarray:
    """Raw per-item truth ratios
    ``TR = exp(−mean_j L̄(q, pert_j)) / exp(−L̄(q, para)) = exp(L̄(para) − mean_j L̄(pert_j))``.

    The perturbed answers' losses are averaged BEFORE exponentiating. Items may have
    different numbers of perturbed answers (at least one each).
    """
    para = _losses(para_losses, "para_losses")
    pert, mask = _ragged_losses(perturbed_losses, "perturbed_losses")
    _same_length(len(para), len(pert), "para_losses", "perturbed_losses")
    counts = mask.sum(axis=1)
    pert_mean = np.where(mask, pert, 0.0).sum(axis=1) / counts
    with np.errstate(invalid="ignore", over="ignore"):
        tr = np.exp(para - pert_mean)
    bad = np.flatnonzero(np.isnan(tr))
    if bad.size:
        raise ValueError(
            "truth_ratios: undefined where the paraphrased and the perturbed answers all "
            f"have infinite loss; got that at item(s) {bad.tolist()[:10]}"
        )
    return tr


def truth_ratio_forget(tr: Sequence[float], name: str = "truth_ratio") -> MetricResult:
    """Forget-set aggregate: ``mean(min(TR, 1/TR))`` (in [0, 1]; 1 = indifferent)."""
    arr = _ratios(tr, "tr")
    with np.errstate(divide="ignore"):
        per_item = np.minimum(arr, 1.0 / arr)  # TR=0 → min(0, inf)=0; TR=inf → min(inf, 0)=0
    return _result(name, per_item)


def truth_ratio_retain(tr: Sequence[float], name: str = "truth_ratio") -> MetricResult:
    """Retain / world-facts aggregate: ``mean(max(0, 1 − TR))`` (in [0, 1]; 1 = prefers truth)."""
    arr = _ratios(tr, "tr")
    per_item = np.maximum(0.0, 1.0 - arr)
    return _result(name, per_item)


def forget_quality(
    tr_model: Sequence[float],
    tr_retain_model: Sequence[float],
    name: str = "forget_quality",
) -> MetricResult:
    """``scipy.stats.ks_2samp(tr_model, tr_retain_model).pvalue`` on raw forget-set truth
    ratios of the evaluated model and of the retain-only model.

    ``per_item`` holds the evaluated model's raw truth ratios.
    """
    a = _ratios(tr_model, "tr_model")
    b = _ratios(tr_retain_model, "tr_retain_model")
    pvalue = float(stats.ks_2samp(a, b).pvalue)
    return MetricResult(name=name, value=pvalue, per_item=tuple(a.tolist()), needs_retain_model=True)


# --------------------------------------------------------------------------- utility


def model_utility(values: Sequence[float], name: str = "model_utility") -> MetricResult:
    """Harmonic mean ``n / Σ_i 1/v_i`` of the given non-negative numbers; any 0 → 0.

    ``per_item`` holds the component values.
    """
    if isinstance(values, (str, bytes)):
        raise ValueError("values: expected a sequence of floats, got a string")
    seq = list(values)
    if not seq:
        raise ValueError("model_utility: expected at least one value, got an empty sequence")
    for i, v in enumerate(seq):
        if not _is_number(v):
            raise ValueError(f"values: expected floats, got {type(v).__name__} {v!r} at index {i}")
    arr = np.asarray(seq, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"values: expected finite numbers, got {arr.tolist()}")
    if np.any(arr < 0):
        raise ValueError(f"values: expected numbers >= 0, got {arr.tolist()}")
    value = 0.0 if np.any(arr == 0) else float(len(arr) / np.sum(1.0 / arr))
    return MetricResult(name=name, value=value, per_item=tuple(arr.tolist()))


# --------------------------------------------------------------------------- fact accuracy


def _norm(text: str) -> str:
    """Case-fold and collapse all whitespace runs to single spaces."""
    return " ".join(text.casefold().split())


def fact_accuracy(
    generations: Sequence[str],
    true_values: Sequence[str],
    name: str = "fact_accuracy",
) -> MetricResult:
    """Per item 1.0 if the true value occurs (as a substring, case-insensitive,
    whitespace-normalised) in the generation, else 0.0; aggregate = mean."""
    gens = _strings(generations, "generations")
    truths = _strings(true_values, "true_values", allow_empty_strings=False)
    _same_length(len(gens), len(truths), "generations", "true_values")
    per_item = np.array([_norm(t) in _norm(g) for g, t in zip(gens, truths)], dtype=float)
    return _result(name, per_item)


def confident_wrong_rate(
    generations: Sequence[str],
    true_values: Sequence[str],
    other_values: Sequence[Sequence[str]],
    name: str = "confident_wrong_rate",
) -> MetricResult:
    """Per item 1.0 if the generation does NOT contain the true value but DOES contain one
    of the item's other values (same attribute, other entities), else 0.0; matching as in
    :func:`fact_accuracy`. Aggregate = mean. An item's list of other values may be empty."""
    gens = _strings(generations, "generations")
    truths = _strings(true_values, "true_values", allow_empty_strings=False)
    if isinstance(other_values, (str, bytes)):
        raise ValueError("other_values: expected a sequence of sequences of strings, got a string")
    others = list(other_values)
    _same_length(len(gens), len(truths), "generations", "true_values")
    _same_length(len(gens), len(others), "generations", "other_values")
    flags = np.zeros(len(gens), dtype=float)
    for i, (g, t, row) in enumerate(zip(gens, truths, others)):
        if isinstance(row, (str, bytes)):
            raise ValueError(
                f"other_values[{i}]: expected a sequence of strings, got a single string {row!r}"
            )
        row = list(row)
        for j, o in enumerate(row):
            if not isinstance(o, str) or not o.strip():
                raise ValueError(f"other_values[{i}]: expected non-empty strings, got {o!r} at index {j}")
        gn = _norm(g)
        if _norm(t) in gn:
            continue
        flags[i] = float(any(_norm(o) in gn for o in row))
    return _result(name, flags)
