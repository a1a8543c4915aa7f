"""GradAscent: plain gradient ascent on the forget set, nothing else (as in open-unlearning).

    L = −NLL(D_f)

No retain term, so nothing holds the rest of the model in place: the loss is unbounded below and
training diverges within a few dozen steps. What stops it is the runner's early stop
(`diverge_nll`: the forget NLL passing that value ends the run) and a small `steps`/`lr`.
It is the baseline every other method improves on, not a method to ship.
Paper: Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy Risks in Language Models" (arXiv 2210.01504).
Example request: `{"id": "x", "split": "forget10", "method": "gradascent", "hyperparameters": {"steps": 30}}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dagster_project.core.methods.base import MethodConfig, UnlearningMethod
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.text import batch_nll


@dataclass(frozen=True)
class GradAscentConfig(MethodConfig):
    """No knobs of its own: `steps`, `lr` and `diverge_nll` are what bound the ascent."""


class GradAscent(UnlearningMethod):
    """GradAscent: maximise the forget answers' NLL; the retain batch is ignored."""

    config: GradAscentConfig

    def uses_reference(self) -> bool:
        return False

    def loss(
        self, model: torch.nn.Module, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        forget_nll = batch_nll(model, forget)
        return -forget_nll, {"forget_nll": forget_nll.item()}


register_method(name="gradascent", config_cls=GradAscentConfig, method_cls=GradAscent)
