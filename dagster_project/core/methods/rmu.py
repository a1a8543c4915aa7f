"""RMU: scramble one middle layer's hidden states on the forget set, pin them on the retain set (as in open-unlearning).

    L = MSE(h_θ(x_f), c·u)  +  α·MSE(h_θ(x_r), h_θ₀(x_r))

h is the output of decoder layer `layer` (the residual stream after it), u a fixed random unit vector
with entries drawn from U[0, 1) (seeded), c the steering coefficient. MSE is the mean over hidden
units and non-padding tokens, prompt included: the question is what cues the knowledge. Inflating
the forget activations far beyond their natural norm leaves later layers unable to read them, while
the retain term holds everything else where θ₀ had it.
Paper: Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning"
(arXiv 2403.03218), whose reference code averages the squared error over hidden units as here.
Example request: `{"id": "x", "split": "forget10", "method": "rmu", "hyperparameters": {"steering_coeff": 20.0}}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from dagster_project.core.methods.base import MethodConfig, UnlearningMethod, reference_weights
from dagster_project.core.methods.registry import register_method
from dagster_project.core.model.anatomy import decoder_layers
from dagster_project.core.model.padding_free import as_padded
from dagster_project.core.model.text import token_nll

MIDDLE = -1  # `layer` sentinel: resolved to num_layers // 2 once the model is known


@dataclass(frozen=True)
class RMUConfig(MethodConfig):
    layer: int = field(default=MIDDLE, metadata={"help": "decoder layer (0-based) to steer; -1 = num_layers // 2"})
    # The paper's 6.5 is for a 4096-wide Zephyr-7B. What matters is that c exceeds the layer's natural
    # per-token norm (the forget activations must be *inflated*): layer 2 of the default 256-wide, 4-layer
    # model measures 8.5 on average (90th percentile 12). Measured there (forget10, 60 LoRA steps, lr 1e-3):
    # c=6.5 leaves the forget NLL at 0.1, c=20 lifts it to 2.6 and c=40 to 4.6 (retain NLL 0.11 -> 0.12 / 0.15).
    steering_coeff: float = field(
        default=20.0, metadata={"help": "norm c of the target c·u of the forget activations", "positive": True}
    )
    # same run at c=20: α=100 kept the retain NLL at 0.12; α=10 forgot faster (5.1) but let it drift to 0.16
    alpha: float = field(default=100.0, metadata={"help": "weight of the retain activation MSE to θ₀"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer < MIDDLE:
            raise ValueError(f"hyperparameters.layer: expected a layer index >= 0 or -1 (middle), got {self.layer}")
        if self.alpha < 0:
            raise ValueError(f"hyperparameters.alpha: must be >= 0, got {self.alpha}")


@contextmanager
def capture_output(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect `module`'s forward outputs while inside the block (a hook works the same on peft and plain models)."""
    caught: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor | tuple) -> None:
        caught.append(output[0] if isinstance(output, tuple) else output)  # older transformers return tuples

    handle = module.register_forward_hook(hook)
    try:
        yield caught
    finally:
        handle.remove()


def layer_forward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states after decoder layer `layer` (batch, seq, hidden) and the logits (batch, seq, vocab)."""
    with capture_output(decoder_layers(model)[layer]) as caught:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return as_padded(caught[0], batch["attention_mask"]), logits  # a padding-free pass captures them packed


def masked_mse(hidden: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over hidden units, then over non-padding tokens; `target` broadcasts to `hidden`."""
    per_token = (hidden.float() - target.float()).pow(2).mean(dim=-1)  # (batch, seq)
    mask = attention_mask.float()
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def control_vector(hidden_size: int, coeff: float, seed: int) -> torch.Tensor:
    """c·u: u uniform on [0, 1)^d, normalised; drawn on the CPU so every device gets the same vector."""
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return coeff * u / u.norm()


class RMU(UnlearningMethod):
    """RMU (Representation Misdirection for Unlearning): steer forget activations toward c·u, keep retain ones."""

    config: RMUConfig

    def layer_index(self, model: torch.nn.Module) -> int:
        n_layers = len(decoder_layers(model))
        layer = n_layers // 2 if self.config.layer == MIDDLE else self.config.layer
        if not 0 <= layer < n_layers:
            raise ValueError(
                f"hyperparameters.layer: the model has {n_layers} decoder layers, so expected 0..{n_layers - 1} "
                f"or -1 (middle), got {self.config.layer}"
            )
        return layer

    def loss(
        self, model: torch.nn.Module, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        layer = self.layer_index(model)
        forget_hidden, forget_logits = layer_forward(model, forget, layer)
        control = control_vector(forget_hidden.size(-1), self.config.steering_coeff, self.config.seed)
        forget_term = masked_mse(forget_hidden, control.to(forget_hidden.device), forget["attention_mask"])
        retain_hidden, _ = layer_forward(model, retain, layer)
        with reference_weights(model) as reference:
            reference_hidden, _ = layer_forward(reference, retain, layer)
        retain_term = masked_mse(retain_hidden, reference_hidden, retain["attention_mask"])
        loss = forget_term + self.config.alpha * retain_term
        # the forget logits come with the same forward: the NLL the runner's divergence stop watches is free
        nll, mask = token_nll(forget_logits.detach(), forget["labels"])
        forget_nll = nll.sum() / mask.sum().clamp(min=1)
        logs = {"forget_nll": forget_nll.item(), "rmu_forget": forget_term.item(), "rmu_retain": retain_term.item()}
        return loss, logs


register_method(name="rmu", config_cls=RMUConfig, method_cls=RMU)
