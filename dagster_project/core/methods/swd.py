"""Sliced Wasserstein-2 distance between a weight tensor and its original value (SNAP's regulariser, arXiv 2406.12329).

    SWD(W, W₀) = mean over K unit directions θ and rows i of (sort(W·θ)ᵢ − sort(W₀·θ)ᵢ)²

The n rows of W (n×d) are n samples in R^d. Projecting both sample sets onto a direction gives two
1-D distributions, whose exact squared W2 distance is the mean squared difference of their sorted
values; averaging over random directions estimates the squared W2 distance in R^d. Unlike an L2
pull to θ₀ it only asks the *distribution* of rows to stay put, not each row: rows may move and
swap, which leaves room to unlearn while keeping the layer's statistics. A 1-D tensor (bias, norm
scale) is one sample of dimension d, so its SWD is the mean over directions of the squared
projected difference.
Paper: Choi et al. 2024, "SNAP: Unlearning Selective Knowledge in Large Language Models with Negative
Instructions" (arXiv 2406.12329; v3 "Opt-Out", ACL 2025), its "Wasserstein regularization".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from dagster_project.core.methods.base import reference_weights


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` directions drawn uniformly on the unit sphere of R^dim, as columns: (dim, count).

    Drawn on the CPU from a CPU generator, so a run gives the same directions on every device.
    """
    gaussian = torch.randn(dim, count, generator=generator)
    return gaussian / gaussian.norm(dim=0, keepdim=True)  # a normalised Gaussian is uniform on the sphere


def as_samples(weight: torch.Tensor) -> torch.Tensor:
    """Rows as samples: (n, d). A 1-D tensor is one sample; higher ranks keep their first axis as rows."""
    return weight.reshape(1, -1) if weight.dim() == 1 else weight.reshape(weight.size(0), -1)


def sliced_wasserstein(
    weight: torch.Tensor, reference: torch.Tensor, directions: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sliced Wasserstein-2 squared between the rows of `weight` and of `reference` (same shape); a scalar.

    `generator` supplies the random directions; without one a fresh generator seeded 0 is used, so a call
    is reproducible on its own. Differentiable in both arguments (sorting routes gradients to each row).
    """
    if weight.shape != reference.shape:
        raise ValueError(f"sliced_wasserstein: expected tensors of one shape, got {tuple(weight.shape)} and "
                         f"{tuple(reference.shape)}")
    if directions < 1:
        raise ValueError(f"sliced_wasserstein: expected directions >= 1, got {directions}")
    samples, reference_samples = as_samples(weight), as_samples(reference)
    theta = random_directions(samples.size(1), directions, generator or torch.Generator().manual_seed(0))
    # float32 and no autocast: W and W₀ differ by tiny amounts that bf16 projections would round away
    with torch.autocast(weight.device.type, enabled=False):
        theta = theta.to(weight.device)
        projected = (samples.float() @ theta).sort(dim=0).values  # (n, K), each column sorted over rows
        projected_reference = (reference_samples.float() @ theta).sort(dim=0).values
        return (projected - projected_reference).pow(2).mean()


def reference_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """θ₀ by parameter name for a full-parameter run (the runner's frozen copy); None for a peft model,
    whose adapted layers hold W₀ themselves as their frozen base weight."""
    if hasattr(model, "disable_adapter"):  # the same test base.reference_weights makes
        return None
    with reference_weights(model) as reference:
        return dict(reference.named_parameters())


def changed_weights(
    model: torch.nn.Module, reference: Mapping[str, torch.Tensor] | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(W, W₀) for each tensor training changes, in module order: on a peft LoRA model each adapted layer's
    effective weight W₀ + (B@A)·scaling and W₀; otherwise every trainable tensor and `reference[name]`."""
    from peft.tuners.lora import LoraLayer  # here, not at the top: importing peft costs ~4 s, paid only when training

    lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in lora_layers:
        # float32: a small update added to bf16 weights would round back to W₀
        base = layer.get_base_layer().weight.detach().float()
        # get_delta_weight(name) = (B @ A) * scaling, transposed where the layer stores W as (in, out)
        delta = sum(layer.get_delta_weight(name).float() for name in layer.active_adapters if name in layer.lora_A)
        yield base + delta, base
    if lora_layers:
        return
    if reference is None:
        raise ValueError("swd_regulariser: a model without LoRA layers needs the reference (θ₀) state")
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            yield parameter, reference[name].detach()


def swd_regulariser(
    model: torch.nn.Module,
    reference: Mapping[str, torch.Tensor] | None,
    directions: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Σ SWD(W, W₀) over `changed_weights`; one `generator` draws fresh directions per tensor, so a seeded
    run is reproducible."""
    generator = generator or torch.Generator().manual_seed(0)
    # no autocast: under the runner's bf16 autocast even B @ A would be rounded
    with torch.autocast(next(model.parameters()).device.type, enabled=False):
        terms = [sliced_wasserstein(w, w0, directions, generator) for w, w0 in changed_weights(model, reference)]
    if not terms:
        raise ValueError("swd_regulariser: the model has no trainable tensors to regularise")
    return torch.stack(terms).sum()
