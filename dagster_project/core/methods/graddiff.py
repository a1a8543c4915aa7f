"""GradDiff: gradient ascent on the forget set, descent on the retain set (as in open-unlearning).

    L = −γ·NLL(D_f) + α·L_r,   L_r = NLL(D_r)  or  KL(p_θ₀ ‖ p_θ) on D_r

Example request: `{"id": "x", "split": "forget10", "method": "graddiff", "hyperparameters": {"gamma": 1.0}}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dagster_project.core.methods.base import MethodConfig, UnlearningMethod, reference_weights
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.text import IGNORE_INDEX, batch_nll


@dataclass(frozen=True)
class GradDiffConfig(MethodConfig):
    gamma: float = field(default=1.0, metadata={"help": "weight of the forget (ascent) term"})
    alpha: float = field(default=1.0, metadata={"help": "weight of the retain term"})
    retain_loss: str = field(default="nll", metadata={"help": "'nll' on retain answers or 'kl' to θ₀"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retain_loss not in ("nll", "kl"):
            raise ValueError("hyperparameters.retain_loss: expected 'nll' or 'kl'")


def kl_to_reference(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """KL(p_θ₀ ‖ p_θ) of next-token distributions, averaged over answer tokens."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with reference_weights(model) as reference:
        ref_logp = torch.log_softmax(reference(**inputs).logits[:, :-1].float(), dim=-1)
    logp = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
    mask = (batch["labels"][:, 1:] != IGNORE_INDEX).float()
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # (batch, seq-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


class GradDiff(UnlearningMethod):
    """GradDiff: gradient ascent on the forget set, descent (NLL or KL to θ₀) on the retain set."""

    config: GradDiffConfig

    def uses_reference(self) -> bool:
        return self.config.retain_loss == "kl"

    def retain_term(self, model: torch.nn.Module, retain: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.config.retain_loss == "kl":
            return kl_to_reference(model, retain)
        return batch_nll(model, retain)

    def loss(self, model, forget, retain):
        forget_nll = batch_nll(model, forget)
        retain_term = self.retain_term(model, retain)
        loss = -self.config.gamma * forget_nll + self.config.alpha * retain_term
        return loss, {"forget_nll": forget_nll.item(), "retain_loss": retain_term.item()}


register_method(name="graddiff", config_cls=GradDiffConfig, method_cls=GradDiff)
