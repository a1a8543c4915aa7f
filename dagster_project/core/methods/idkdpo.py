"""IdkDPO: DPO that prefers an "I don't know" answer to the true forget answer (as in open-unlearning).

    m = [log π_θ(y_idk|x) − log π_θ₀(y_idk|x)] − [log π_θ(y_f|x) − log π_θ₀(y_f|x)]
    L = −(2/β)·mean log σ(β·m)  on D_f   +  α·L_r  on D_r

log π is the *summed* answer log-probability of a sequence and θ₀ the frozen original model. The
2/β scale is open-unlearning's (it makes NPO this loss without the preferred term), so at θ = θ₀
the forget term is (2/β)·log 2. The idk answers are IdkSFT's: the same seeded draw per example.
Papers: Rafailov et al. 2023, "Direct Preference Optimization" (arXiv 2305.18290); used for
unlearning with idk answers by TOFU (Maini et al. 2024, arXiv 2401.06121).
Example request: `{"id": "x", "split": "forget10", "method": "idkdpo", "hyperparameters": {"beta": 0.1}}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dagster_project.core.methods.base import reference_weights
from dagster_project.core.methods.idksft import IdkSFT, IdkSFTConfig
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.text import sequence_logprob


@dataclass(frozen=True)
class IdkDPOConfig(IdkSFTConfig):
    gamma: float = field(default=1.0, metadata={"help": "weight of the DPO (forget) term"})
    beta: float = field(default=0.1, metadata={"help": "inverse temperature of the preference loss", "positive": True})


class IdkDPO(IdkSFT):
    """IdkDPO: raise the idk answer over the true answer, both measured relative to θ₀."""

    config: IdkDPOConfig

    def uses_reference(self) -> bool:
        return True  # θ₀'s log-probs are the preference's anchor

    def forget_term(
        self, model: torch.nn.Module, forget: dict[str, torch.Tensor], idk: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        idk_logp, _ = sequence_logprob(model, idk)
        forget_logp, n_tokens = sequence_logprob(model, forget)
        with reference_weights(model) as reference:
            # θ₀ is frozen; its log-probs need no graph (recomputed per batch, as in NPO)
            idk_ref, _ = sequence_logprob(reference, idk)
            forget_ref, _ = sequence_logprob(reference, forget)
        margin = (idk_logp - idk_ref) - (forget_logp - forget_ref)  # (batch,)
        dpo_term = -(2 / self.config.beta) * F.logsigmoid(self.config.beta * margin).mean()
        forget_nll = (-forget_logp / n_tokens).mean()
        return dpo_term, {"forget_nll": forget_nll.item(), "dpo_loss": dpo_term.item()}


register_method(name="idkdpo", config_cls=IdkDPOConfig, method_cls=IdkDPO)
