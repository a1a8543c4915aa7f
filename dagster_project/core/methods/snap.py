"""SNAP: negative instructions, obliterated responses, hard positives, a Wasserstein pull to θ₀ (arXiv 2406.12329).

    L = γ·L_forget + η·NLL(hard positives) + α·NLL(retain) + λ·Σ SWD(W, W₀)

L_forget trains negative instructions x about each forget subject (data/snap.py's templates plus the
forget set's own training questions) toward an obliterated response y_o, a graceful non-answer:

    'idk':  NLL(y_o | x)
    'dpo':  −(2/β)·mean log σ(β·m),
            m = [log π_θ(y_o|x) − log π_θ₀(y_o|x)] − [log π_θ(y_r|x) − log π_θ₀(y_r|x)]

y_r is the revealing answer: the true answer of a forget question, or a true fact sentence about the
subject for a template instruction. These are IdkSFT's and IdkDPO's forget terms, which SNAP builds on
(so `retain_loss: kl` can also swap the retain NLL for a KL to θ₀). Hard positives are, per forget
person, the `neighbours` retained people most like them (shared attribute values + fact-sentence
similarity), trained on their true answers: the answers θ₀ was trained to give, so no generation is
needed. The retain batch is the "world" term. SWD is swd.py's sliced Wasserstein-2 distance, summed over
the trainable tensors (on LoRA: the merged weight of each adapted layer). True answers are never trained
toward: `forget_nll` logs their NLL (the runner's forget batch for 'idk', the revealing answers for 'dpo').
Paper: Choi et al. 2024, "SNAP: Unlearning Selective Knowledge in Large Language Models with Negative
Instructions" (arXiv 2406.12329; v3 "Opt-Out", ACL 2025).
Example request: `{"id": "x", "split": "forget10", "method": "snap", "hyperparameters": {"lambda_swd": 0.1}}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dagster_project.core.data.snap import build_snap_datasets
from dagster_project.core.methods.idkdpo import IdkDPO, IdkDPOConfig
from dagster_project.core.methods.idksft import IdkSFT
from dagster_project.core.methods.registry import register_method
from dagster_project.core.methods.swd import reference_state, swd_regulariser
from dagster_project.core.model.text import batch_nll

FORGET_LOSSES = ("idk", "dpo")
WEIGHTS = ("gamma", "hard_positive_weight", "alpha", "lambda_swd")


@dataclass(frozen=True)
class SNAPConfig(IdkDPOConfig):
    gamma: float = field(default=1.0, metadata={"help": "weight of the forget term (obliterated responses)"})
    forget_loss: str = field(
        default="idk",
        metadata={"help": "'idk': NLL of the obliterated responses; 'dpo': prefer them to the revealing answers"},
    )
    hard_positive_weight: float = field(default=1.0, metadata={"help": "weight η of the hard positives' NLL"})
    neighbours: int = field(default=2, metadata={"help": "hard-positive people per forget person", "positive": True,
                                                 "max": 100})
    lambda_swd: float = field(default=0.1, metadata={"help": "weight λ of the summed sliced Wasserstein term"})
    swd_directions: int = field(
        default=100, metadata={"help": "random directions K per tensor and step (the paper's 100)", "positive": True,
                               "max": 10_000}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(
                f"hyperparameters.forget_loss: expected one of {FORGET_LOSSES}"
            )
        for name in WEIGHTS:
            if getattr(self, name) < 0:
                raise ValueError(f"hyperparameters.{name}: must be >= 0, got {getattr(self, name)}")


class SNAP(IdkDPO):
    """SNAP: answer negative instructions gracefully, keep look-alike people, stay distributionally near θ₀."""

    config: SNAPConfig

    def __init__(self, config: SNAPConfig) -> None:
        super().__init__(config)
        # one generator per run: new SWD directions every step, the same sequence in every run with this seed
        self.directions = torch.Generator().manual_seed(config.seed)

    def prepare(self, forget_records: Sequence[dict], retain_records: Sequence[dict],
                method_data: dict[str, Any] | None = None) -> None:
        # the pipeline passes the validated, versioned `snap_data` asset; a bare call builds the same sets
        from dagster_project.core.methods.runner import BatchSampler  # lazily: peft and the model classes

        data = method_data or build_snap_datasets(forget_records, retain_records, self.config.seed, self.config.neighbours)
        negative = [(r["instruction"], r["response"]) for r in data["negative"]]
        self.revealing = {r["instruction"]: r["revealing"] for r in data["negative"]}  # for 'dpo'
        hard = [(r["question"], r["answer"]) for r in data["hard_positives"]]
        if not hard:
            raise ValueError("SNAP: no hard positives (retained people like the forgotten ones, answered correctly by "
                             "θ₀): the target model knows too little of its retain set to protect it")
        size, seed = self.config.batch_size, self.config.seed
        self.negative = BatchSampler(negative, size, seed + 2)  # the runner's forget and retain use seed, seed + 1
        self.hard_positive = BatchSampler(hard, size, seed + 3)

    def state_dict(self) -> dict[str, Any]:
        return {"negative": self.negative.state_dict(), "hard_positive": self.hard_positive.state_dict(),
                "directions": self.directions.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.negative.load_state_dict(state["negative"])
        self.hard_positive.load_state_dict(state["hard_positive"])
        self.directions.set_state(state["directions"])

    def extra_pairs(self, forget_pairs: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
        # SNAP samples its own forget signal; the runner's forget pairs only feed the logged forget_nll ('idk')
        obliterated = self.negative.next()
        batches = {"obliterated": obliterated, "hard_positive": self.hard_positive.next()}
        if self.config.forget_loss == "dpo":
            batches["revealing"] = [(instruction, self.revealing[instruction]) for instruction, _ in obliterated]
        return batches

    def forget_term(
        self, model: torch.nn.Module, forget: dict[str, torch.Tensor], idk: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.config.forget_loss == "dpo":
            return super().forget_term(model, forget, idk)  # IdkDPO's: idk preferred to forget, relative to θ₀
        return IdkSFT.forget_term(self, model, forget, idk)  # NLL of idk; forget's NLL only logged

    def loss(
        self,
        model: torch.nn.Module,
        forget: dict[str, torch.Tensor],
        retain: dict[str, torch.Tensor],
        *,
        obliterated: dict[str, torch.Tensor],
        hard_positive: dict[str, torch.Tensor],
        revealing: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        forget_term, logs = self.forget_term(model, forget if revealing is None else revealing, obliterated)
        hard_term = batch_nll(model, hard_positive)
        retain_term = self.retain_term(model, retain)
        swd = (
            swd_regulariser(model, reference_state(model), c.swd_directions, self.directions)
            if c.lambda_swd > 0
            else torch.zeros((), device=retain_term.device)
        )
        loss = c.gamma * forget_term + c.hard_positive_weight * hard_term + c.alpha * retain_term + c.lambda_swd * swd
        extra_logs = {"hard_positive_nll": hard_term.item(), "retain_loss": retain_term.item(), "swd": swd.item()}
        return loss, {**logs, **extra_logs}


register_method(name="snap", config_cls=SNAPConfig, method_cls=SNAP)
