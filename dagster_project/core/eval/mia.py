"""Membership inference and memorisation scores from per-token statistics (as open-unlearning computes them).

Every function here is pure: it takes the per-token arrays `scoring.token_stats` produces, so it
can be tested on hand-written numbers. MIA scores follow one convention: **higher means "looks
like a non-member"**, and AUC labels forget items 0 and holdout items 1 (AUC → 1 when forget data
is far more likely than holdout data, i.e. not forgotten).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

MIN_K_FRACTION = 0.4  # k = 40 % of the tokens with the lowest scores (Min-K% / Min-K%++)
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


def _lowest_k_mean(values: np.ndarray, fraction: float) -> float:
    """Mean of the lowest ceil(fraction·n) values (at least one)."""
    if values.size == 0:
        raise ValueError("need at least one token score, got none")
    k = max(1, int(np.ceil(fraction * values.size)))
    return float(np.sort(values)[:k].mean())


def loss_score(logprobs: np.ndarray) -> float:
    """LOSS attack: L̄ = −mean token log-prob of the answer."""
    return float(-np.mean(logprobs))


def zlib_score(logprobs: np.ndarray, text: str) -> float:
    """zlib attack: L̄ divided by the zlib-compressed length of the text (in bytes)."""
    return loss_score(logprobs) / len(zlib.compress(text.encode("utf-8")))


def min_k_score(logprobs: np.ndarray, fraction: float = MIN_K_FRACTION) -> float:
    """Min-K%: minus the mean of the lowest k % token log-probs."""
    return -_lowest_k_mean(np.asarray(logprobs, dtype=float), fraction)


def min_k_plus_plus_score(logprobs: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                          fraction: float = MIN_K_FRACTION) -> float:
    """Min-K%++: Min-K% on (log p(x_t) − μ_t)/σ_t, μ/σ of log p under the model's own next-token distribution."""
    z = (np.asarray(logprobs) - np.asarray(mu)) / np.maximum(np.asarray(sigma), 1e-6)
    return -_lowest_k_mean(z, fraction)


def attack_scores(items: Sequence[dict], texts: Sequence[str]) -> dict[str, np.ndarray]:
    """All four attack scores per item; `items` hold token arrays 'logprob', 'mu', 'sigma'."""
    if len(items) != len(texts):
        raise ValueError(f"attack_scores: {len(items)} token records but {len(texts)} texts")
    return {
        "loss": np.array([loss_score(np.asarray(i["logprob"])) for i in items]),
        "zlib": np.array([zlib_score(np.asarray(i["logprob"]), t) for i, t in zip(items, texts)]),
        "min_k": np.array([min_k_score(np.asarray(i["logprob"])) for i in items]),
        "min_k_plus_plus": np.array([min_k_plus_plus_score(np.asarray(i["logprob"]), np.asarray(i["mu"]),
                                                           np.asarray(i["sigma"])) for i in items]),
    }


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC with forget = 0 and holdout = 1 (scores: higher = non-member)."""
    if len(forget_scores) == 0 or len(holdout_scores) == 0:
        raise ValueError(f"mia_auc needs both sets non-empty, got {len(forget_scores)} forget and "
                         f"{len(holdout_scores)} holdout scores")
    labels = np.r_[np.zeros(len(forget_scores)), np.ones(len(holdout_scores))]
    return float(roc_auc_score(labels, np.r_[forget_scores, holdout_scores]))


def priv_leak(auc_unlearned: float, auc_retain: float) -> float:
    """MUSE PrivLeak in %: ((1−AUC_unl) − (1−AUC_ret)) / (1−AUC_ret) · 100; ≈ 0 ideal, ≪ 0 under-unlearned."""
    if auc_retain >= 1.0:
        raise ValueError("priv_leak: the retain model's AUC is 1, the ratio is undefined")
    return ((1 - auc_unlearned) - (1 - auc_retain)) / (1 - auc_retain) * 100


def extraction_strength(argmax_match: Sequence[bool]) -> float:
    """1 − k/n with k the shortest prefix after which every teacher-forced argmax equals the label."""
    match = np.asarray(argmax_match, dtype=bool)
    if match.size == 0:
        raise ValueError("extraction_strength needs at least one answer token")
    mismatches = np.flatnonzero(~match)
    k = 0 if mismatches.size == 0 else int(mismatches[-1]) + 1
    return 1.0 - k / match.size


def exact_memorisation(argmax_match: Sequence[bool]) -> float:
    """Share of answer tokens whose teacher-forced argmax equals the label."""
    match = np.asarray(argmax_match, dtype=bool)
    if match.size == 0:
        raise ValueError("exact_memorisation needs at least one answer token")
    return float(match.mean())
