"""Training checkpoints of the unlearning loop: a run killed mid-training resumes and ends with the same bytes.

    Checkpointing(path=Path(".cache/checkpoints/req.pt"), key=fingerprint_of_the_inputs, every=25)

Saved atomically every `every` optimiser steps: the trainable weights, and the `state_dict()` of every stateful
part the loop hands over (AdamW, the LR schedule, the batch samplers, the method's own state), plus the RNG
states. A checkpoint whose key differs (other model bytes, data, method, hyper-parameters) is ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Checkpointing:
    """Save the training state every `every` optimiser steps to `path`; a run that finds a checkpoint there
    with the same `key` (a fingerprint of everything that decides the result) resumes from it."""

    path: Path
    key: str
    every: int = 25

    def __post_init__(self) -> None:
        if self.every <= 0:
            raise ValueError(f"checkpoint every: must be > 0 optimiser steps, got {self.every}")


def save_checkpoint(checkpoint: Checkpointing, model: torch.nn.Module, parts: dict[str, Any], steps_done: int,
                    logs: dict[str, float]) -> None:
    """Write the trainable weights, the parts' states and the RNG states to checkpoint.path, atomically (a kill
    while writing leaves the previous checkpoint in place)."""
    weights = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
    state = {"key": checkpoint.key, "steps_done": steps_done, "logs": logs, "weights": weights,
             "torch_rng": torch.get_rng_state(), **{name: part.state_dict() for name, part in parts.items()}}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.path.with_name(checkpoint.path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, checkpoint.path)


def load_checkpoint(checkpoint: Checkpointing, model: torch.nn.Module, parts: dict[str, Any]) -> dict[str, Any] | None:
    """Restore a saved training state into `model` and `parts` when checkpoint.path holds one with the run's
    key; None (and a fresh start) when there is none or it belongs to other inputs."""
    if not checkpoint.path.is_file():
        return None
    # weights_only: the file holds tensors and plain containers only, so loading it runs no pickled code
    state = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
    if state.get("key") != checkpoint.key:
        return None
    weights = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["weights"].items():
            weights[name].copy_(value)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state
