"""IdkSFT: fine-tune the forget questions toward an "I don't know" answer (as in open-unlearning).

    L = γ·NLL(x_f, y_idk) + α·L_r,   L_r = NLL(D_r)  or  KL(p_θ₀ ‖ p_θ) on D_r

y_idk is drawn, per forget example, from TOFU's pool of 100 refusals (`resources/idontknow.jsonl`,
MIT; origin in `resources/README.md`). The true forget answer is never trained on, so the model
learns a graceful non-answer instead of the gibberish gradient ascent leaves behind; its NLL is
still logged as `forget_nll` to show how far the original answer has fallen.
Paper: Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs" (arXiv 2401.06121).
Example request: `{"id": "x", "split": "forget10", "method": "idksft", "hyperparameters": {"alpha": 1.0}}`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import torch

from dagster_project.core.methods.graddiff import GradDiff, GradDiffConfig
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.text import batch_nll

IDK_RESOURCE = "resources/idontknow.jsonl"


@lru_cache(maxsize=1)
def idk_answers() -> tuple[str, ...]:
    """TOFU's "I don't know" answers, shipped as package data (plain text, one a line, despite `.jsonl`)."""
    text = resources.files("dagster_project.core.methods").joinpath(IDK_RESOURCE).read_text(encoding="utf-8")
    answers = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not answers:
        raise RuntimeError(f"{IDK_RESOURCE} is empty: the package was built without its data files")
    return answers


def pick_idk(question: str, answer: str, seed: int) -> str:
    """The idk answer of one forget example: the same in every step and every run with this seed."""
    # a str seed is hashed with SHA-512, not Python's per-process salted hash(), so the draw is reproducible
    return random.Random(f"{seed}\x00{question}\x00{answer}").choice(idk_answers())


@dataclass(frozen=True)
class IdkSFTConfig(GradDiffConfig):
    # same knob as GradDiff's gamma, but here it weighs a descent on the idk answers, not an ascent
    gamma: float = field(default=1.0, metadata={"help": "weight of the NLL of the idk answers to forget questions"})


class IdkSFT(GradDiff):
    """IdkSFT: descend on (forget question → idk answer), keep the retain set with NLL or KL to θ₀."""

    config: IdkSFTConfig

    def alternative_pairs(self, forget_pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(question, pick_idk(question, answer, self.config.seed)) for question, answer in forget_pairs]

    def loss(
        self,
        model: torch.nn.Module,
        forget: dict[str, torch.Tensor],
        retain: dict[str, torch.Tensor],
        *,
        alternative: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        forget_term, logs = self.forget_term(model, forget, alternative)
        retain_term = self.retain_term(model, retain)
        loss = self.config.gamma * forget_term + self.config.alpha * retain_term
        return loss, {**logs, "retain_loss": retain_term.item()}

    def forget_term(
        self, model: torch.nn.Module, forget: dict[str, torch.Tensor], idk: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The term weighted by γ and its logs; IdkDPO overrides just this."""
        idk_nll = batch_nll(model, idk)
        with torch.no_grad():  # only logged (and watched by the divergence stop), never trained on
            forget_nll = batch_nll(model, forget)
        return idk_nll, {"forget_nll": forget_nll.item(), "idk_nll": idk_nll.item()}


register_method(name="idksft", config_cls=IdkSFTConfig, method_cls=IdkSFT)
