"""NPO: negative preference optimisation against the frozen original model (as in open-unlearning).

    L = −(2/β)·mean log σ(−β·[log π_θ(y|x) − log π_θ₀(y|x)])  on D_f   +  α·L_r  on D_r

log π is the *summed* answer log-probability of a sequence. Unlike gradient ascent the forget term
is bounded: it saturates once the model is far below θ₀ on a sequence, so it diverges far less.
Paper: Zhang et al. 2024, "Negative Preference Optimization" (arXiv 2404.05868).
Example request: `{"id": "x", "split": "forget10", "method": "npo", "hyperparameters": {"beta": 0.1}}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from dagster_project.core.methods.base import reference_weights
from dagster_project.core.methods.graddiff import GradDiff, GradDiffConfig
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.text import sequence_logprob


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−β·(log π_θ − log π_θ₀)) over sequences: NPO's bounded forget term."""
    return -(2 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


@dataclass(frozen=True)
class NPOConfig(GradDiffConfig):
    beta: float = field(default=0.1, metadata={"help": "inverse temperature of the preference loss", "positive": True})


class NPO(GradDiff):
    """NPO: push the forget answers below the original model's likelihood, bounded by a log-sigmoid."""

    config: NPOConfig

    def uses_reference(self) -> bool:
        return True  # θ₀'s log-probs are the preference's anchor

    def __init__(self, config: NPOConfig) -> None:
        super().__init__(config)
        # θ₀ is frozen, so its log-prob of a forget sequence never changes: computed the first time the
        # sequence is sampled, then looked up (an NPO step then costs what a GradDiff step costs)
        self.reference_cache: dict[bytes, float] = {}

    def reference_logprob(self, model: torch.nn.Module, forget: dict[str, torch.Tensor]) -> torch.Tensor:
        """θ₀'s summed answer log-prob per row of `forget`, from the cache where the sequence was seen before."""
        keys = [ids[mask.bool()].cpu().numpy().tobytes() for ids, mask in zip(forget["input_ids"], forget["attention_mask"])]
        missing = [i for i, key in enumerate(keys) if key not in self.reference_cache]
        if missing:
            rows = torch.tensor(missing, device=forget["input_ids"].device)
            with reference_weights(model) as reference:
                ref_logp, _ = sequence_logprob(reference, {k: v[rows] for k, v in forget.items()})
            self.reference_cache.update({keys[i]: value for i, value in zip(missing, ref_logp.float().tolist())})
        return torch.tensor([self.reference_cache[key] for key in keys], device=forget["input_ids"].device)

    def state_dict(self) -> dict[str, Any]:
        # the cached values, not a recomputation: θ₀'s log-prob of a row can differ in its last bits with the
        # batch it is computed in, and a resumed run must end with the same bytes as an uninterrupted one
        return {"reference_cache": {key.hex(): value for key, value in self.reference_cache.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference_cache = {bytes.fromhex(key): value for key, value in state["reference_cache"].items()}

    def loss(self, model, forget, retain):
        logp, n_tokens = sequence_logprob(model, forget)
        ref_logp = self.reference_logprob(model, forget)
        forget_term = npo_loss(logp, ref_logp, self.config.beta)
        retain_term = self.retain_term(model, retain)
        loss = self.config.gamma * forget_term + self.config.alpha * retain_term
        forget_nll = (-logp / n_tokens).mean()
        return loss, {"forget_nll": forget_nll.item(), "npo_loss": forget_term.item(), "retain_loss": retain_term.item()}


register_method(name="npo", config_cls=NPOConfig, method_cls=NPO)
