"""NPO: negative preference optimisation against the frozen original model (METHODS.md §1).

    L = −(2/β)·mean log σ(−β·[log π_θ(y|x) − log π_θ₀(y|x)])  on D_f   +  α·L_r  on D_r

log π is the *summed* answer log-probability of a sequence. Unlike gradient ascent the forget term
is bounded: it saturates once the model is far below θ₀ on a sequence, so it diverges far less.
Paper: Zhang et al. 2024, "Negative Preference Optimization" (arXiv 2404.05868).
Example request: `{"id": "x", "split": "forget10", "method": "npo", "hyperparameters": {"beta": 0.1}}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from dagster_project.core.methods.base import reference_weights
from dagster_project.core.methods.graddiff import GradDiff, GradDiffConfig
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.text import sequence_logprob


@dataclass(frozen=True)
class NPOConfig(GradDiffConfig):
    beta: float = field(default=0.1, metadata={"help": "inverse temperature of the preference loss", "positive": True})


class NPO(GradDiff):
    """NPO: push the forget answers below the original model's likelihood, bounded by a log-sigmoid."""

    config: NPOConfig

    def loss(self, model, forget, retain):
        logp, n_tokens = sequence_logprob(model, forget)
        with reference_weights(model) as reference:
            # θ₀ is frozen; its log-probs need no graph (recomputed per batch; caching them is future work)
            ref_logp, _ = sequence_logprob(reference, forget)
        forget_term = -(2 / self.config.beta) * F.logsigmoid(-self.config.beta * (logp - ref_logp)).mean()
        retain_term = self.retain_term(model, retain)
        loss = self.config.gamma * forget_term + self.config.alpha * retain_term
        forget_nll = (-logp / n_tokens).mean()
        return loss, {"forget_nll": forget_nll.item(), "npo_loss": forget_term.item(), "retain_loss": retain_term.item()}


register_method(name="npo", config_cls=NPOConfig, method_cls=NPO)
