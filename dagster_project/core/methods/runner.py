"""The one training loop every unlearning method runs in (LoRA or full weights, CPU or CUDA).

    unlearn stage unlearned_adapter
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from dagster_project.core.methods.base import MethodConfig
from dagster_project.core.methods.registry import get_method
from dagster_project.core.model.text import collate_pairs
from dagster_project.core.model.tiny_llama import cosine_lr, save_tokenizer

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODES = ("lora", "full")


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def training_pairs(records: Sequence[dict]) -> list[tuple[str, str]]:
    """(question, answer) pairs in the phrasings the model was trained on; evaluation keeps the held-out one."""
    return [(q, r["answer"]) for r in records for q in r["train_questions"]]


class BatchSampler:
    """Endless seeded reshuffling sampler over a list of QA pairs."""

    def __init__(self, pairs: list[tuple[str, str]], batch_size: int, seed: int) -> None:
        if not pairs:
            raise ValueError("cannot sample batches from an empty dataset")
        self.pairs, self.batch_size, self.rng = pairs, batch_size, random.Random(seed)
        self.order: list[int] = []

    def next(self) -> list[tuple[str, str]]:
        batch = []
        while len(batch) < self.batch_size:
            if not self.order:
                self.order = list(range(len(self.pairs)))
                self.rng.shuffle(self.order)
            batch.append(self.pairs[self.order.pop()])
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler is in its shuffled order: restoring it resumes the same batch sequence."""
        return {"rng": self.rng.getstate(), "order": list(self.order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(state["rng"])
        self.order = list(state["order"])


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


def prepare_model(model_dir: Path, mode: str, config: MethodConfig, device: torch.device,
                  lora_targets: Sequence[str] | None = None) -> torch.nn.Module:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    torch.manual_seed(config.seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    if mode == "lora":
        targets = list(lora_targets) if lora_targets else LORA_TARGETS
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=targets)
        return get_peft_model(model, lora)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    model._unlearn_reference = reference  # θ₀ for KL / NPO terms; LoRA gets it by disabling the adapter
    return model


def run_unlearning(
    model_dir: Path,
    tokenizer: PreTrainedTokenizerFast,
    forget_records: Sequence[dict],
    retain_records: Sequence[dict],
    method_name: str,
    mode: str,
    hyperparameters: dict,
    out_dir: Path,
    method_data: dict | None = None,
    mask: dict[str, torch.Tensor] | None = None,
    lora_targets: Sequence[str] | None = None,
    checkpoint: Checkpointing | None = None,
) -> dict:
    """Unlearn `forget_records` from the model at `model_dir`; save an adapter (lora) or model (full).

    `method_data`: a method's own training sets built by the pipeline (SNAP's `snap_data`); None: it builds them.
    `mask`: full mode only, parameter name -> bool tensor of its shape, True = trainable (a WAGLE mask from
    `dagster_project.core.attribution`); False elements stay bit-identical, unnamed parameters train fully.
    `lora_targets`: lora mode only, the modules to adapt (WAGLE's choice by attribution mass); default: every
    projection of every layer (`LORA_TARGETS`).
    `checkpoint`: save the training state periodically and resume from a matching saved state: a run killed
    mid-training and started again ends with the same bytes as one that was never interrupted.
    """
    if mask is not None and mode == "lora":
        raise ValueError("mask: a weight mask applies to full-weight runs only (LoRA trains adapters, not the masked "
                         "base weights); for LoRA pick the adapted modules with "
                         "dagster_project.core.attribution.lora_targets_from_attribution instead")
    spec = get_method(method_name)
    config = spec.config_cls.from_hyperparameters(hyperparameters)
    method = spec.method_cls(config)
    method.prepare(forget_records, retain_records, method_data)
    device = pick_device()
    model = prepare_model(model_dir, mode, config, device, lora_targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = frozen_elements(model, mask) if mask is not None else []
    fully_frozen = {id(p) for p, elements in frozen if bool(elements.all())}
    # weight_decay must stay 0 under a mask: AdamW's decoupled decay shrinks every element of a parameter
    # group whether or not its gradient is zero, and a group holds whole tensors, so an element-wise mask
    # cannot exempt its frozen elements from it; tensors frozen entirely are left out of the optimiser
    optimiser = torch.optim.AdamW([p for p in trainable if id(p) not in fully_frozen], lr=config.lr, weight_decay=0.0)
    warmup = max(1, int(config.warmup_ratio * config.steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: cosine_lr(s, config.steps, warmup))
    forget = BatchSampler(training_pairs(forget_records), config.batch_size, config.seed)
    retain = BatchSampler(training_pairs(retain_records), config.batch_size, config.seed + 1)

    def to_batch(pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        batch = collate_pairs(tokenizer, [q for q, _ in pairs], [a for _, a in pairs])
        return {k: v.to(device) for k, v in batch.items()}

    model.train()
    started = time.perf_counter()
    logs: dict[str, float] = {}
    stopped_early = False
    steps_done = 0
    parts = {"optimiser": optimiser, "scheduler": scheduler, "forget_sampler": forget, "retain_sampler": retain,
             "method": method}
    resumed = load_checkpoint(checkpoint, model, parts) if checkpoint else None
    if resumed:
        steps_done, logs = resumed["steps_done"], resumed["logs"]
    progress = tqdm(range(steps_done, config.steps), desc=f"unlearn {method_name}/{mode}", unit="step",
                    mininterval=2.0, initial=steps_done, total=config.steps)
    for _step in progress:
        optimiser.zero_grad(set_to_none=True)
        for _micro in range(config.grad_accum):
            forget_pairs = forget.next()
            # named extra batches: IdkSFT/IdkDPO's `alternative` answers, SNAP's obliterated and hard-positive pairs
            extra = {name: to_batch(pairs) for name, pairs in method.extra_pairs(forget_pairs).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, logs = method.loss(model, to_batch(forget_pairs), to_batch(retain.next()), **extra)
            (loss / config.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        for param, elements in frozen:  # after clipping, before the step (METHODS.md §4): grad ⊙ mask
            if param.grad is not None:
                param.grad.masked_fill_(elements, 0.0)  # zero, not × 0: a NaN/inf gradient cannot leak through
        optimiser.step()
        scheduler.step()
        steps_done += 1
        progress.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
        if not math.isfinite(logs["forget_nll"]) or logs["forget_nll"] > config.diverge_nll:
            stopped_early = True
            break
        if checkpoint and steps_done % checkpoint.every == 0 and steps_done < config.steps:
            save_checkpoint(checkpoint, model, parts, steps_done, logs)
    progress.close()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    if mode == "full":
        del model._unlearn_reference
    model.save_pretrained(out_dir)
    if mode == "lora":
        make_adapter_portable(out_dir, model_dir)
    else:
        save_tokenizer(tokenizer, out_dir)  # a full model folder is self-contained, like the target's
    if checkpoint:  # the result is saved: nothing left to resume
        checkpoint.path.unlink(missing_ok=True)
    return {
        "method": method_name,
        "mode": mode,
        "config": config.__dict__,
        "steps_done": steps_done,
        "stopped_early": stopped_early,
        "final_logs": logs,
        "trainable_parameters": sum(p.numel() for p in trainable) - sum(int(e.sum()) for _, e in frozen),
        "seconds": time.perf_counter() - started,
        "device": device.type,
        "resumed_from_step": resumed["steps_done"] if resumed else 0,
    }


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(checkpoint: Checkpointing, model: torch.nn.Module, parts: dict[str, Any], steps_done: int,
                    logs: dict[str, float]) -> None:
    """Write the trainable weights, optimiser/scheduler/sampler/method states and RNG states to checkpoint.path,
    atomically (a kill while writing leaves the previous checkpoint in place)."""
    state = {"key": checkpoint.key, "steps_done": steps_done, "logs": logs, "weights": _trainable_state(model),
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


def frozen_elements(
    model: torch.nn.Module, mask: dict[str, torch.Tensor]
) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, bool tensor True where frozen) for each parameter `mask` names, on the parameter's device.

    With zero gradients from the first step AdamW's moments stay 0 and its update is exactly 0, so the
    frozen elements keep their bits (given weight_decay 0, see `run_unlearning`).
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    unknown = sorted(set(mask) - set(params))
    if unknown:
        raise ValueError(f"mask: names no trainable parameter of the model: {unknown[:5]} (expected names like "
                         f"{next(iter(params))!r})")
    pairs = []
    for name, keep in mask.items():
        if tuple(keep.shape) != tuple(params[name].shape):
            raise ValueError(f"mask[{name!r}]: expected shape {tuple(params[name].shape)}, got {tuple(keep.shape)}")
        pairs.append((params[name], ~keep.to(device=params[name].device, dtype=torch.bool)))
    return pairs


def make_adapter_portable(adapter_dir: Path, base_dir: Path) -> None:
    """Make a saved peft adapter folder hash the same wherever it is built: `target_modules` sorted (peft
    writes them from a set, in hash-seed order), the base model named by its path *relative to the adapter
    folder* (peft writes the absolute one, which also leaks the host's paths), and peft's stub README.md,
    which repeats that absolute path, removed (the version's model card is in its audit files)."""
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config["base_model_name_or_path"] = os.path.relpath(base_dir.resolve(), adapter_dir.resolve())
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (adapter_dir / "README.md").unlink(missing_ok=True)