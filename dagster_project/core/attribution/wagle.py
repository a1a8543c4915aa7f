"""WAGLE weight attribution: which weights an unlearning run may change (arXiv 2410.17509).

    g_f = Σ ∇θ NLL(D_f),  g_r = Σ ∇θ NLL(D_r)          one pass at the original model θ₀
    S   = −|(θ − g_r/μ) ⊙ g_f|                          per weight
    mask = top `ratio` of |S|, ranked over ALL weights   True = trainable

Not a method: the mask composes with every method through `run_unlearning(..., mask=mask)` (full mode).
Paper: Jia et al. 2024, "WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in
Large Language Models" (arXiv 2410.17509). Example:

    g_f = accumulate_gradients(model, pair_batches(tokenizer, forget_pairs, 16))
    g_r = accumulate_gradients(model, pair_batches(tokenizer, retain_pairs, 16))
    mask = wagle_mask(attribution_scores(model, g_f, g_r), ratio=0.95)
    save_mask(mask, out / "wagle_mask.safetensors")   # + wagle_mask.json, the manifest
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from transformers import PreTrainedTokenizerFast

from dagster_project.core.model.anatomy import adaptable_modules
from dagster_project.core.model.text import batch_nll, collate_pairs

__all__ = [
    "Attribution", "LoraTargets", "Mask", "accumulate_gradients", "attribute", "attribution_scores",
    "global_threshold", "kept_count",
    "load_mask", "lora_targets_from_attribution", "manifest_path", "mask_fingerprint", "pack_mask",
    "pair_batches", "random_lora_targets", "random_mask", "save_mask", "unpack_mask", "wagle_mask",
]

Mask = dict[str, torch.Tensor]  # parameter name -> bool tensor of the parameter's shape, True = trainable
Packed = dict[str, tuple[tuple[int, ...], bytes]]  # parameter name -> (shape, numpy.packbits bytes)

MANIFEST_FORMAT = "wagle-mask/1"
CHUNK = 1 << 24  # elements per chunk in the threshold passes: bounds their scratch memory to ~200 MB


def pair_batches(
    tokenizer: PreTrainedTokenizerFast, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """(question, answer) pairs as padded answer-only-label batches, in order (the runner's tokenisation)."""
    return [collate_pairs(tokenizer, [q for q, _ in chunk], [a for _, a in chunk])
            for chunk in (pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size))]


def accumulate_gradients(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Σ over batches of ∇θ of the mean answer NLL, for every trainable parameter, at the model as it is.

    No optimiser: the weights are not touched. Dropout is off during the pass (eval mode), so two calls give
    bit-identical sums on the same device. Gradients sum in the parameter dtype; a parameter the loss never
    reaches gets zeros. The model's own `.grad`s are cleared before and after.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters to attribute")
    device = named[0][1].device
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        for batch in batches:
            batch_nll(model, {k: v.to(device) for k, v in batch.items()}).backward()
        # hand the .grad tensors over instead of copying them: the model drops its references below
        grads = {name: p.grad if p.grad is not None else torch.zeros_like(p) for name, p in named}
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return grads


def attribution_scores(
    model: torch.nn.Module, g_forget: Mapping[str, torch.Tensor], g_retain: Mapping[str, torch.Tensor],
    mu: float = 1e-6,
) -> dict[str, torch.Tensor]:
    """S = −|(θ − g_r/μ) ⊙ g_f| per weight, float32, for every parameter named in `g_forget`.

    μ stands for a diagonal Hessian (WAGLE, arXiv 2410.17509; 1e-6 in its reference configs). Scores are ≤ 0; the
    mask ranks their magnitude. Float32 even for a bf16 model: bf16's 8-bit mantissa would tie most ranks.
    Drop `g_forget` and `g_retain` once the scores exist; only the scores feed `wagle_mask`.
    """
    if mu <= 0:
        raise ValueError(f"mu: must be > 0, got {mu}")
    if set(g_forget) != set(g_retain):
        differing = sorted(set(g_forget) ^ set(g_retain))
        raise ValueError(f"g_forget and g_retain name different parameters: {differing[:5]}")
    params = dict(model.named_parameters())
    missing = sorted(set(g_forget) - set(params))
    if missing:
        raise ValueError(f"gradients for parameters the model does not have: {missing[:5]}")
    with torch.no_grad():
        return {name: -((params[name].float() - g_retain[name].float() / mu) * g_forget[name].float()).abs()
                for name in g_forget}


def kept_count(total: int, ratio: float) -> int:
    """How many of `total` weights a mask of `ratio` keeps: round(ratio·total), Python's round (half to even)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio: expected a fraction in [0, 1], got {ratio}")
    return round(ratio * total)


def _chunks(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """|tensor| flattened, as float32 pieces of at most CHUNK elements (views until the abs/float copy)."""
    for piece in tensor.detach().reshape(-1).split(CHUNK):
        yield piece.float().abs()


def _float_of_bits(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _bits_of_float(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def global_threshold(scores: Mapping[str, torch.Tensor], k: int) -> float:
    """The k-th largest |score| over all tensors together (1 ≤ k ≤ total), exactly, without concatenating them.

    Why not `torch.cat` + `topk`: the budget is 3× the model's size, and the float32 scores alone are 2× a
    bf16 model; a concatenated copy adds 2× more and topk's values + int64 indices 6× (28 + 84 GB at 7B).
    Instead: for non-negative float32 the IEEE-754 bit pattern read as an integer is ordered like the value,
    so a bisection over those 31-bit integers finds the largest v with count(|S| ≥ v) ≥ k, which is the
    k-th largest value itself, in ≤ 31 counting passes. Each pass streams the tensors in CHUNK-sized pieces:
    scratch is O(CHUNK) (~200 MB), independent of the model, and the result is exact (no binning, no
    sampling). Peak of `wagle_mask`: scores + bool masks + scratch = 2.5× a bf16 model (1.25× a float32 one).
    """
    total = sum(s.numel() for s in scores.values())
    if not 1 <= k <= total:
        raise ValueError(f"k: expected 1..{total}, got {k}")
    largest = 0.0
    for tensor in scores.values():
        for piece in _chunks(tensor):
            if torch.isnan(piece).any():
                raise ValueError("scores contain NaN: the gradients or weights they came from are not finite")
            largest = max(largest, piece.max().item())
    lo, hi = 0, _bits_of_float(largest)  # count(|S| ≥ 0.0) = total ≥ k, so lo always qualifies
    while lo < hi:
        mid = (lo + hi + 1) // 2
        value = _float_of_bits(mid)
        count = sum(int(torch.count_nonzero(piece >= value)) for s in scores.values() for piece in _chunks(s))
        lo, hi = (mid, hi) if count >= k else (lo, mid - 1)
    return _float_of_bits(lo)


def wagle_mask(scores: Mapping[str, torch.Tensor], ratio: float) -> Mask:
    """The WAGLE mask: True (trainable) for the round(ratio·N) weights of largest |S| over all N together.

    `ratio` is the trainable share (0.95 for TOFU, 0.6 for WMDP in the paper); the ranking is global, not
    per tensor, and the kept count is exact (Python's round). Ties at the threshold are broken
    deterministically: tensors in sorted-name order, then lowest flat index first, so the count has no
    ±1-per-tensor slack and the mask does not depend on the dict's order. Memory beyond `scores`: the bool
    masks (1 byte a weight) plus O(CHUNK) scratch (see `global_threshold`).
    """
    total = sum(s.numel() for s in scores.values())
    k = kept_count(total, ratio)
    if k == 0:
        return {name: torch.zeros(s.shape, dtype=torch.bool, device=s.device) for name, s in scores.items()}
    threshold = global_threshold(scores, k)
    masks = {name: torch.empty(s.shape, dtype=torch.bool, device=s.device) for name, s in scores.items()}
    for name, s in scores.items():  # pass 1: strictly above the threshold
        flat = masks[name].view(-1)
        for start, piece in zip(range(0, s.numel(), CHUNK), _chunks(s)):
            flat[start:start + piece.numel()] = piece > threshold
    need = k - sum(int(m.sum()) for m in masks.values())  # pass 2: this many of the weights tied at it
    for name in sorted(scores):
        flat = masks[name].view(-1)
        for start, piece in zip(range(0, flat.numel(), CHUNK), _chunks(scores[name])):
            if need == 0:
                return masks
            ties = piece == threshold
            taken = ties & (ties.cumsum(0) <= need)  # the first `need` ties of this chunk, in flat order
            flat[start:start + piece.numel()] |= taken
            need -= int(taken.sum())
    return masks


def _shapes(model_or_shapes: torch.nn.Module | Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    if isinstance(model_or_shapes, torch.nn.Module):
        return {name: tuple(p.shape) for name, p in model_or_shapes.named_parameters() if p.requires_grad}
    return {name: tuple(shape) for name, shape in model_or_shapes.items()}


def random_mask(model_or_shapes: torch.nn.Module | Mapping[str, Sequence[int]], ratio: float, seed: int) -> Mask:
    """Baseline: round(ratio·N) weights trainable, chosen uniformly at random over all N (CPU tensors).

    Every weight gets a seeded uniform key (tensors in sorted-name order) and the top keys are kept with
    the same exact global selection as `wagle_mask` (it ranks the keys), so both keep the same count.
    """
    generator = torch.Generator().manual_seed(seed)
    shapes = _shapes(model_or_shapes)
    keys = {name: torch.rand(shapes[name], generator=generator) for name in sorted(shapes)}
    return wagle_mask(keys, ratio)


def pack_mask(mask: Mapping[str, torch.Tensor]) -> Packed:
    """Each mask as (shape, numpy.packbits bytes): one bit a weight, flat (C) order, big-endian bits."""
    return {name: (tuple(m.shape), np.packbits(m.detach().cpu().numpy().astype(bool).reshape(-1)).tobytes())
            for name, m in mask.items()}


def unpack_mask(packed: Mapping[str, tuple[Sequence[int], bytes]]) -> Mask:
    """The inverse of `pack_mask`: bool CPU tensors of the recorded shapes."""
    masks = {}
    for name, (shape, data) in packed.items():
        numel = math.prod(shape)
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel)
        masks[name] = torch.from_numpy(bits.astype(bool).reshape(tuple(shape)))
    return masks


def mask_fingerprint(mask: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex of the packed mask (names, shapes and bits, names sorted): a cache key and integrity check."""
    packed = pack_mask(mask)
    digest = hashlib.sha256()
    for name in sorted(packed):
        shape, data = packed[name]
        digest.update(json.dumps([name, list(shape)]).encode() + b"\0" + data)
    return digest.hexdigest()


def manifest_path(path: Path) -> Path:
    """Where `save_mask` writes the JSON manifest of the mask file at `path`: beside it, suffix .json."""
    return Path(path).with_suffix(".json")


def save_mask(mask: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, object] | None = None) -> dict:
    """Write the packed mask to `path` (safetensors, one uint8 array a tensor) and its manifest; return it.

    The manifest (`manifest_path(path)`) holds the kept ratio, per-tensor shape and counts, the sha256
    `mask_fingerprint` that `load_mask` checks, and `metadata` (say the requested ratio, μ, forget split).
    Both files' bytes depend only on the mask and `metadata`, so their md5s are stable for DVC.
    """
    path = Path(path)
    packed = pack_mask(mask)
    counts = {name: int(m.sum()) for name, m in mask.items()}
    total = sum(m.numel() for m in mask.values())
    manifest = {
        "format": MANIFEST_FORMAT,
        "ratio": sum(counts.values()) / total if total else 0.0,
        "kept": sum(counts.values()),
        "total": total,
        "sha256": mask_fingerprint(mask),
        "tensors": {name: {"shape": list(packed[name][0]), "kept": counts[name]} for name in sorted(packed)},
        "metadata": dict(metadata or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: np.frombuffer(data, dtype=np.uint8) for name, (_shape, data) in packed.items()}, str(path))
    manifest_path(path).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load_mask(path: Path) -> Mask:
    """Read a mask written by `save_mask`; raises ValueError if its bits do not hash to the manifest's sha256."""
    path = Path(path)
    manifest = json.loads(manifest_path(path).read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{manifest_path(path)}: expected format {MANIFEST_FORMAT!r}, got {manifest.get('format')!r}")
    arrays = load_file(str(path))
    if set(arrays) != set(manifest["tensors"]):
        differing = sorted(set(arrays) ^ set(manifest["tensors"]))
        raise ValueError(f"{path}: tensors differ from its manifest's: {differing[:5]}")
    mask = unpack_mask({name: (info["shape"], arrays[name].tobytes()) for name, info in manifest["tensors"].items()})
    found = mask_fingerprint(mask)
    if found != manifest["sha256"]:
        raise ValueError(f"{path}: mask sha256 is {found}, its manifest says {manifest['sha256']}")
    return mask


@dataclass(frozen=True)
class LoraTargets:
    """Linear modules for a LoRA run, picked by attribution mass; two equivalent ways to hand them to peft."""

    target_modules: list[str]  # full module names, sorted: `LoraConfig(target_modules=...)` matches them exactly
    module_suffixes: list[str]  # their last name parts (q_proj, ...): with `layers`, peft's coarser form
    layers: list[int]  # decoder-layer indices holding them: `LoraConfig(layers_to_transform=...)`
    mass_share: float  # share of all Linear attribution mass the picked modules hold


def lora_targets_from_attribution(
    scores: Mapping[str, torch.Tensor], model: torch.nn.Module, top_fraction: float
) -> LoraTargets:
    """The fewest Linear modules that together hold ≥ `top_fraction` of the attribution mass Σ|S|.

    WAGLE is defined on single weights, which LoRA cannot mask; the closest thing it can do is put its
    adapters where the attribution is. Rule: a module's mass is Σ|S| over its `.weight`; modules are taken
    in decreasing mass (ties by name) until their share of the total mass over all candidate modules
    reaches `top_fraction` (at least one module). Candidates are the linear modules LoRA can adapt with a
    scored weight (`adaptable_modules`: the output head excluded, it is tied to the embedding in our models). Raw
    mass, not mass per weight, so a wide MLP projection counts for the many weights it holds. `scores` and
    `model` are the plain base model's (attribute before wrapping it with peft, whose base weights are frozen).
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction: expected a fraction in (0, 1], got {top_fraction}")
    mass = _lora_candidate_mass(scores, model)
    total = sum(mass.values())
    picked: list[str] = []
    held = 0.0
    for name in sorted(mass, key=lambda n: (-mass[n], n)):
        picked.append(name)
        held += mass[name]
        if held >= top_fraction * total:
            break
    return _lora_targets(picked, held / total if total else 1.0)


def random_lora_targets(scores: Mapping[str, torch.Tensor], model: torch.nn.Module, count: int, seed: int) -> LoraTargets:
    """The random baseline of `lora_targets_from_attribution`: `count` of the same candidate modules, drawn
    uniformly with a seeded generator; `mass_share` is the attribution mass they happen to hold."""
    mass = _lora_candidate_mass(scores, model)
    picked = random.Random(seed).sample(sorted(mass), min(count, len(mass)))
    total = sum(mass.values())
    return _lora_targets(picked, sum(mass[name] for name in picked) / total if total else 1.0)


def _lora_candidate_mass(scores: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, float]:
    """Σ|S| of each candidate module: a module LoRA can adapt (`adaptable_modules`) with a scored weight."""
    mass = {name: float(scores[f"{name}.weight"].detach().float().abs().sum())
            for name in adaptable_modules(model) if f"{name}.weight" in scores}
    if not mass:
        raise ValueError("no scored linear module in the model: scores must name '<module>.weight' tensors")
    return mass


def _lora_targets(picked: Sequence[str], mass_share: float) -> LoraTargets:
    layers = sorted({int(m.group(1)) for name in picked if (m := re.search(r"\.(\d+)\.", name))})
    return LoraTargets(
        target_modules=sorted(picked),
        module_suffixes=sorted({name.rsplit(".", 1)[-1] for name in picked}),
        layers=layers,
        mass_share=mass_share,
    )


@dataclass(frozen=True)
class Attribution:
    """What one attribution pass decides: the weight mask (full-weight runs) and the LoRA modules (LoRA runs)."""

    mask: Mask
    lora_targets: LoraTargets


def attribute(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, forget_pairs: Sequence[tuple[str, str]],
    retain_pairs: Sequence[tuple[str, str]], ratio: float, mu: float = 1e-6, random_baseline: bool = False,
    batch_size: int = 64,
) -> Attribution:
    """All of WAGLE at the model as it is (θ₀): gradients, scores, the top-`ratio` mask and the LoRA targets.

    g_r is a sum over D_r, estimated from as many retain pairs as there are forget pairs (a draw seeded 0,
    rescaled by |D_r| / sample), so attribution sees as many pairs as one epoch of unlearning does instead of
    |D_r| / |D_f| times more. `random_baseline`: a seeded random mask of the same size, and as many LoRA
    modules drawn at random.
    """
    g_forget = accumulate_gradients(model, pair_batches(tokenizer, forget_pairs, batch_size))
    sample = random.Random(0).sample(list(retain_pairs), min(len(retain_pairs), len(forget_pairs)))
    g_retain = accumulate_gradients(model, pair_batches(tokenizer, sample, batch_size))
    g_retain = {name: g * (len(retain_pairs) / len(sample)) for name, g in g_retain.items()}
    scores = attribution_scores(model, g_forget, g_retain, mu=mu)
    del g_forget, g_retain  # the peak is model + both gradient sets + scores; free them before ranking
    targets = lora_targets_from_attribution(scores, model, ratio)
    if random_baseline:
        return Attribution(random_mask(model, ratio, seed=0),
                           random_lora_targets(scores, model, len(targets.target_modules), seed=0))
    return Attribution(wagle_mask(scores, ratio), targets)
