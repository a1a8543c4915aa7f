"""Where the adaptable weights and the decoder blocks of a causal LM are, whatever its architecture.

`model: {base: <folder>}` accepts any local transformers causal LM, and architectures name their parts
differently: Llama, Mistral, Qwen2 and Gemma have q/k/v/o and gate/up/down projections, Phi-3 fuses them
(qkv_proj, gate_up_proj), OPT has out_proj/fc1/fc2, GPT-NeoX query_key_value/dense, and GPT-2 keeps its
projections in transformers' `Conv1D` (a Linear with the weight transposed) under `.h` instead of `.layers`.
A fixed list of Llama names would adapt only some of OPT's or Phi-3's projections and none of GPT-2's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import LoraConfig
from transformers.pytorch_utils import Conv1D


def _plain(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def adaptable_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The linear maps LoRA can adapt (`torch.nn.Linear`, transformers' `Conv1D`) by full module name, except
    the output head: it maps to the vocabulary and is tied to the input embedding in many models."""
    plain = _plain(model)
    head = plain.get_output_embeddings() if hasattr(plain, "get_output_embeddings") else None
    return {name: module for name, module in plain.named_modules()
            if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head}


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """Every adaptable module, by the last part of its name (peft's `target_modules` form), sorted: for a
    Llama the seven projections of every decoder layer."""
    names = sorted({name.rsplit(".", 1)[-1] for name in adaptable_modules(model)})
    if not names:
        raise ValueError(f"{type(_plain(model)).__name__}: no torch.nn.Linear or Conv1D module besides the output "
                         "head, so there is nothing for LoRA to adapt; use mode: full")
    return names


def lora_config(model: torch.nn.Module, r: int, alpha: float, targets: Sequence[str] | None = None) -> LoraConfig:
    """LoRA of rank `r` on `targets` (default: `default_lora_targets`), no dropout. `fan_in_fan_out` is set for
    models whose maps are `Conv1D` (weight stored input-first), which peft would otherwise fix with a warning."""
    conv1d = any(isinstance(m, Conv1D) for m in adaptable_modules(model).values())
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, fan_in_fan_out=conv1d,
                      target_modules=list(targets) if targets else default_lora_targets(model))


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks, in order: the `torch.nn.ModuleList` holding `config.num_hidden_layers` modules
    (`model.layers` in Llama-style models, `transformer.h` in GPT-2, `model.decoder.layers` in OPT)."""
    plain = _plain(model)
    count = getattr(plain.config, "num_hidden_layers", None)
    for module in plain.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"{type(plain).__name__}: no list of {count} decoder blocks (config.num_hidden_layers) found")
