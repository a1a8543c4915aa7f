"""What every unlearning method shares: the typed config and the loss interface.

A method file subclasses `MethodConfig` (adding only its own knobs) and `UnlearningMethod`
(overriding only `loss`), then calls `register_method`. The training loop lives in
`runner.py`, so a method file shows just what is new about it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, TypeVar

import torch

T = TypeVar("T")  # a config dataclass


@dataclass(frozen=True)
class MethodConfig:
    steps: int = field(
        default=150, metadata={"help": "optimiser steps (each sees one forget and one retain batch)", "positive": True,
                               "max": 100_000}
    )
    lr: float = field(
        default=1e-3, metadata={"help": "AdamW learning rate; LoRA needs ~10x the full-model rate", "positive": True,
                                "max": 1.0}
    )
    batch_size: int = field(
        default=16, metadata={"help": "forget and retain examples per micro-batch, each", "positive": True,
                              "max": 4096}
    )
    grad_accum: int = field(
        default=1, metadata={"help": "micro-batches accumulated per optimiser step", "positive": True, "max": 1024}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm", "positive": True,
                                                        "max": 1e4})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warm-up share of the steps"})
    seed: int = field(default=0, metadata={"help": "seeds batch sampling and LoRA initialisation"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (mode=lora)", "positive": True, "max": 1024})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (mode=lora)", "positive": True,
                                                  "max": 16384})
    diverge_nll: float = field(
        default=25.0, metadata={"help": "stop early once the forget NLL exceeds this: ascent has diverged"}
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"hyperparameters.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict[str, Any]) -> "MethodConfig":
        """Build the config from a request's `hyperparameters`, naming any unknown or mistyped key."""
        return config_from_hyperparameters(cls, hyperparameters)


def config_from_hyperparameters(config_cls: type[T], hyperparameters: dict[str, Any],
                                section: str = "hyperparameters") -> T:
    """An instance of the dataclass `config_cls` from a request's `hyperparameters`, checked by name and
    type against the fields' defaults (an int is accepted for a float). Errors never echo a value, nor a request's
    unknown key (either may be a subject's name), e.g. `hyperparameters: key #2 is not a setting of GradDiffConfig
    (did you mean 'lr'?)`; a params.yaml section's unknown key is named."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for position, name in enumerate(hyperparameters, 1):
        if name not in fields:
            allowed = f"allowed: {', '.join(sorted(fields))}"
            if section != "hyperparameters":  # a params.yaml section: the operator's own words, safe to name
                raise ValueError(f"{section}.{name}: unknown for {config_cls.__name__}; {allowed}")
            # a request's keys are free text (a name, even): named by position
            close = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else allowed
            raise ValueError(f"{section}: key #{position} is not a setting of {config_cls.__name__} ({hint})")
    values: dict[str, Any] = {}
    for name, value in hyperparameters.items():
        expected = type(fields[name].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"{section}.{name}: expected {expected.__name__}, got {_kind(value)}")
        values[name] = value
    return config_cls(**values)


def check_bounds(config: Any, section: str = "hyperparameters") -> None:
    """The bounds a config's fields declare in their metadata: `"positive": True` (> 0) and `"max"` (<=). The
    upper bounds stop a typo (`steps: 1000000000`, `lr: 1e30`) from holding the training slot for days or from
    training into NaN; they are far above any setting that makes sense (docs/operations.md lists them)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("positive") and value <= 0:
            raise ValueError(f"{section}.{f.name}: must be > 0, got {value}")
        if "max" in f.metadata and value > f.metadata["max"]:
            raise ValueError(f"{section}.{f.name}: must be at most {f.metadata['max']:g}, got {value:g}")


def _kind(value: Any) -> str:
    """A value's type in words; a string is not echoed (it may be a subject's name)."""
    return "text" if isinstance(value, str) else type(value).__name__


class UnlearningMethod:
    """Base class: holds the config; subclasses implement `loss`."""

    def __init__(self, config: MethodConfig) -> None:
        self.config = config

    def prepare(self, forget_records: Sequence[dict], retain_records: Sequence[dict],
                method_data: dict[str, Any] | None = None) -> None:
        """Optional hook, called once before training with the whole record lists.

        For methods that train on data of their own (SNAP: negative instructions about the forget subjects,
        hard positives among the retained people). `method_data` is that data when the pipeline built it as
        a versioned asset; None asks the method to build it. The default does nothing.
        """

    def extra_pairs(self, forget_pairs: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
        """Named extra batches of (prompt, answer) pairs for one micro-batch, given the sampled forget pairs.

        The runner tokenises each like the other batches and passes it to `loss` as a keyword argument of
        that name. The default offers `alternative_pairs`, if any, as `alternative`.
        """
        alternative = self.alternative_pairs(forget_pairs)
        return {} if alternative is None else {"alternative": alternative}

    def alternative_pairs(self, forget_pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]] | None:
        """Optional hook: (question, other answer) pairs to train toward, built from the sampled forget pairs.

        None (the default) for methods that need only the forget and retain batches. A method that returns
        pairs gets them tokenised like the other batches, as `loss(..., alternative=batch)`.
        """
        return None

    def loss(
        self, model: torch.nn.Module, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss to minimise and scalar logs (must include 'forget_nll')."""
        raise NotImplementedError

    def uses_reference(self) -> bool:
        """Whether `loss` reads θ₀ (`reference_weights`). A full-weight run keeps a frozen copy of the model for
        methods that do (4 bytes a parameter) and none for the others; LoRA gets θ₀ by disabling the adapter."""
        return True

    def state_dict(self) -> dict[str, Any]:
        """What the method changes as it trains (its own samplers, random generators, caches), for the runner's
        checkpoints: tensors and plain containers only. A stateless method (the default) has none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, so a resumed run continues exactly where it was saved."""


@contextmanager
def reference_weights(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """θ₀ without a second copy: on a peft model, the same network with its adapter disabled.

    Full-parameter runs keep a frozen copy on the model as `_unlearn_reference` (set by the runner).
    """
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter(), torch.no_grad():
            yield model
    else:
        if not hasattr(model, "_unlearn_reference"):
            raise RuntimeError("θ₀ was not kept for this full-weight run: the method's uses_reference() said it "
                               "needs no reference model, yet its loss asked for one")
        with torch.no_grad():
            yield model._unlearn_reference  # type: ignore[attr-defined]
