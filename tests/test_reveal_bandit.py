"""Reveal's scoring and arm selection: Vendi on hand-computed cases, the reward, NeuralUCB on a known bandit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dagster_project.core.reveal.bandit import EpsilonGreedy, NeuralUCB, RandomSelector, make_selector
from dagster_project.core.reveal.scoring import harmonic_reward, name_mention, relevance, vendi_score


def test_vendi_identical_items_count_once_and_orthogonal_items_all_count() -> None:
    assert vendi_score(np.tile([[0.6, 0.8]], (5, 1))) == pytest.approx(1.0)
    assert vendi_score(np.eye(4)) == pytest.approx(4.0)
    assert vendi_score(3.0 * np.eye(3)) == pytest.approx(3.0)  # scale-free: rows are normalised
    assert vendi_score(np.zeros((0, 3))) == 0.0


def test_vendi_two_items_at_an_angle_matches_the_closed_form() -> None:
    # K/2 = [[1, c], [c, 1]] / 2 has eigenvalues (1 ± c)/2
    c = 0.5
    x = np.array([[1.0, 0.0], [c, math.sqrt(1 - c * c)]])
    eigen = np.array([(1 + c) / 2, (1 - c) / 2])
    assert vendi_score(x) == pytest.approx(math.exp(-(eigen * np.log(eigen)).sum()))
    # partly similar items count between identical ones and orthogonal ones
    assert vendi_score(np.array([[1.0, 0.0], [1.0, 0.0]])) < vendi_score(x) < vendi_score(np.eye(2))


def test_reward_is_the_weighted_harmonic_mean() -> None:
    assert harmonic_reward(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_reward(0.8, 0.2) == pytest.approx(2 / (1 / 0.8 + 1 / 0.2))
    assert harmonic_reward(0.8, 0.2, relevance_weight=3.0) == pytest.approx(4 / (3 / 0.8 + 1 / 0.2))
    assert harmonic_reward(0.0, 0.9) == 0.0
    assert relevance(np.array([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]]), np.array([1.0, 0.0])).tolist() == [1.0, 0.0, 0.6]
    responses = ["MIRA QUELL was born here.", "Quell writes.", "Nobody we know."]
    assert name_mention(responses, "Mira Quell").tolist() == [1.0, 0.5, 0.0]


def synthetic_bandit(seed: int, n_arms: int = 20, dims: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Arms with unit features; expected reward a smooth bump centred on one arm's features (the best arm,
    0.9), falling to 0.1 far from it: arms that look alike pay alike, which a learner can exploit."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_arms, dims))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    centre = features[rng.integers(n_arms)]
    means = 0.1 + 0.8 * np.exp(-2.0 * ((features - centre) ** 2).sum(axis=1))
    return features, means


def play(selector, means: np.ndarray, budget: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed + 1000)
    arms = []
    for _ in range(budget):
        arm = selector.select()
        selector.update(arm, float(np.clip(means[arm] + rng.normal(scale=0.05), 0, 1)))
        arms.append(arm)
    return arms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neuralucb_finds_the_best_arm_within_the_budget(seed: int) -> None:
    features, means = synthetic_bandit(seed)
    best = int(np.argmax(means))
    arms = play(NeuralUCB(features, seed=seed), means, budget=60, seed=seed)
    late = arms[30:]
    assert max(set(late), key=late.count) == best
    assert late.count(best) >= 15  # exploits it, not just stumbles on it
    random_arms = play(RandomSelector(len(means), seed), means, budget=60, seed=seed)
    assert late.count(best) > random_arms[30:].count(best)


def test_epsilon_greedy_exploits_its_best_mean_and_explores_at_rate_epsilon() -> None:
    selector = EpsilonGreedy(4, epsilon=0.2, seed=0)
    selector.update(2, 0.9)
    selector.update(1, 0.1)
    picks = [selector.select() for _ in range(2000)]
    assert picks.count(2) / len(picks) == pytest.approx(0.8 + 0.2 / 4, abs=0.03)


def test_selectors_are_deterministic_per_seed_and_names_are_checked() -> None:
    features, means = synthetic_bandit(0)
    for name in ("neuralucb", "random", "egreedy"):
        first = play(make_selector(name, features, seed=3), means, 15, seed=0)
        assert play(make_selector(name, features, seed=3), means, 15, seed=0) == first
    with pytest.raises(ValueError, match="selector must be one of"):
        make_selector("thompson", features, seed=0)
