"""Arm selection for Reveal: NeuralUCB (arXiv 2509.14624) and the uniform-random and ε-greedy baselines.

Every selector answers `select()` with an arm index and learns from `update(arm, reward)`.

NeuralUCB (Zhou et al. 2020): a small MLP f(x; θ) predicts an arm's reward from its feature vector; the
arm played maximises  f(x; θ) + ν·sqrt(gᵀ Z⁻¹ g / m),  g = ∇θ f(x; θ), m the hidden width, Z = λI + Σ g gᵀ/m
over the arms played. Z is kept exactly (not the diagonal shortcut of the reference code), so features
should be low-dimensional: Reveal projects sentence embeddings onto a few principal components first.
"""

from __future__ import annotations

import random
from typing import Protocol

import numpy as np
import torch

SELECTORS = ("neuralucb", "random", "egreedy")


class ArmSelector(Protocol):
    def select(self) -> int: ...

    def update(self, arm: int, reward: float) -> None: ...


class RandomSelector:
    """Uniform over arms: the baseline that learns nothing."""

    def __init__(self, n_arms: int, seed: int = 0) -> None:
        self.n_arms, self.rng = n_arms, random.Random(seed)

    def select(self) -> int:
        return self.rng.randrange(self.n_arms)

    def update(self, arm: int, reward: float) -> None:
        pass


class EpsilonGreedy:
    """Best mean reward so far with probability 1 − ε (unplayed arms count as 0, ties broken at random),
    a uniformly random arm otherwise."""

    def __init__(self, n_arms: int, epsilon: float = 0.1, seed: int = 0) -> None:
        self.epsilon, self.rng = epsilon, random.Random(seed)
        self.counts, self.totals = np.zeros(n_arms), np.zeros(n_arms)

    def select(self) -> int:
        if self.rng.random() < self.epsilon:
            return self.rng.randrange(len(self.counts))
        means = self.totals / np.maximum(self.counts, 1)
        return self.rng.choice(np.flatnonzero(means == means.max()).tolist())

    def update(self, arm: int, reward: float) -> None:
        self.counts[arm] += 1
        self.totals[arm] += reward


class NeuralUCB:
    """NeuralUCB over fixed arm features (n_arms, d)."""

    # defaults: λ = 0.1, lr = 0.05 found the best arm on 6 of 6 seeds of the synthetic bandit in the tests
    # within 60 plays of 20 arms (λ = 1 on 4 of 6: its regulariser keeps the predictions near zero)
    def __init__(self, features: np.ndarray, hidden: int = 16, nu: float = 1.0, lam: float = 0.1,
                 train_steps: int = 50, lr: float = 0.05, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        self.net = torch.nn.Sequential(torch.nn.Linear(self.x.shape[1], hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, 1)).double()
        first, last = self.net[0], self.net[2]
        torch.nn.init.normal_(first.weight, std=(2.0 / first.in_features) ** 0.5, generator=generator)  # seeded He init
        for p in (first.bias, last.weight, last.bias):
            # a zero output layer predicts 0 for every arm at the start (the paper's symmetric initialisation
            # has the same aim): no arm is favoured by the luck of the draw before any reward is seen
            torch.nn.init.zeros_(p)
        self.theta0 = [p.detach().clone() for p in self.net.parameters()]
        self.hidden, self.nu, self.lam, self.train_steps, self.lr = hidden, nu, lam, train_steps, lr
        n_params = sum(p.numel() for p in self.net.parameters())
        self.z_inv = torch.eye(n_params, dtype=torch.float64) / lam  # Z⁻¹, updated by Sherman-Morrison
        self.played: list[int] = []
        self.rewards: list[float] = []

    def _gradient(self, arm: int) -> tuple[float, torch.Tensor]:
        self.net.zero_grad()
        out = self.net(self.x[arm])[0]
        out.backward()
        return out.item(), torch.cat([p.grad.flatten() for p in self.net.parameters()]) / self.hidden**0.5

    def scores(self) -> np.ndarray:
        """Upper confidence bound of every arm: prediction + ν·width."""
        ucb = []
        for arm in range(len(self.x)):
            prediction, g = self._gradient(arm)
            ucb.append(prediction + self.nu * float(torch.sqrt(g @ self.z_inv @ g)))
        return np.asarray(ucb)

    def select(self) -> int:
        return int(np.argmax(self.scores()))

    def update(self, arm: int, reward: float) -> None:
        _, g = self._gradient(arm)
        z_inv_g = self.z_inv @ g
        self.z_inv -= torch.outer(z_inv_g, z_inv_g) / (1.0 + g @ z_inv_g)
        self.played.append(arm)
        self.rewards.append(reward)
        self._fit()

    def _fit(self) -> None:
        """Squared error on every reward seen, plus m·λ/2·‖θ − θ₀‖² (the paper's regulariser)."""
        x, y = self.x[self.played], torch.tensor(self.rewards, dtype=torch.float64)
        optimiser = torch.optim.SGD(self.net.parameters(), lr=self.lr)
        for _ in range(self.train_steps):
            optimiser.zero_grad()
            loss = ((self.net(x)[:, 0] - y) ** 2).sum() / 2
            loss = loss + self.hidden * self.lam / 2 * sum(((p - p0) ** 2).sum()
                                                           for p, p0 in zip(self.net.parameters(), self.theta0))
            (loss / len(y)).backward()
            optimiser.step()

    def predictions(self) -> np.ndarray:
        with torch.no_grad():
            return self.net(self.x)[:, 0].numpy()


def make_selector(name: str, features: np.ndarray, seed: int, nu: float = 1.0, hidden: int = 16,
                  epsilon: float = 0.1) -> ArmSelector:
    if name == "neuralucb":
        return NeuralUCB(features, hidden=hidden, nu=nu, seed=seed)
    if name == "random":
        return RandomSelector(len(features), seed)
    if name == "egreedy":
        return EpsilonGreedy(len(features), epsilon, seed)
    raise ValueError(f"selector must be one of {', '.join(SELECTORS)}, got {name!r}")
