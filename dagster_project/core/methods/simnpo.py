"""SimNPO: NPO without a reference model, on length-normalised log-probabilities (as in open-unlearning).

    L = −(2/β)·mean log σ(−(β/|y|)·log π_θ(y|x) − δ)  on D_f   +  α·L_r  on D_r

Paper: Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization" (arXiv 2410.07163).
Example request: `{"id": "x", "split": "forget10", "method": "simnpo", "hyperparameters": {"beta": 2.5}}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from dagster_project.core.methods.graddiff import GradDiff, GradDiffConfig
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.text import sequence_logprob


@dataclass(frozen=True)
class SimNPOConfig(GradDiffConfig):
    beta: float = field(
        default=2.5, metadata={"help": "inverse temperature on the length-normalised log-prob", "positive": True}
    )
    delta: float = field(default=0.0, metadata={"help": "reward margin δ"})


class SimNPO(GradDiff):
    """SimNPO: NPO without a reference model, on length-normalised log-probs with a margin δ."""

    config: SimNPOConfig

    def loss(self, model, forget, retain):
        logp, n_tokens = sequence_logprob(model, forget)
        normalised = logp / n_tokens
        forget_term = -(2 / self.config.beta) * F.logsigmoid(-self.config.beta * normalised - self.config.delta).mean()
        retain_term = self.retain_term(model, retain)
        loss = self.config.gamma * forget_term + self.config.alpha * retain_term
        return loss, {"forget_nll": (-normalised).mean().item(), "simnpo_loss": forget_term.item(),
                      "retain_loss": retain_term.item()}


register_method(name="simnpo", config_cls=SimNPOConfig, method_cls=SimNPO)
