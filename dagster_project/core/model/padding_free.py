"""Padding-free forward passes: a padded batch goes through the network as one row of its real tokens.

Methods build right-padded (batch, seq) batches and read (batch, seq, vocab) logits (core/model/text.py).
`PaddingFree(lm)` hooks a causal LM so that, for such a call, the real tokens of every row are packed into a
single row whose position ids restart at 0 for each sequence, and the logits are scattered back to the padded
shape (zeros at padding, which every loss masks out): methods see the tensors they saw before, and no layer
computes on padding. Transformers reads restarting position ids as packed sequences
(`masking_utils.find_packed_sequence_indices`, with no attention mask and no cache): flash_attention_2 then
runs its variable-length kernel, sdpa and eager get a block-diagonal causal mask.

What it buys depends on the attention kernel. Projections, MLPs and the LM head do no work on padding with
any of them. flash_attention_2 also skips the attention between sequences; sdpa computes attention densely
over the whole (tokens × tokens) block-diagonal mask, so there it pays in attention what it saves on padding:
on 2 CPU cores (tiny config, SDPA) a packed step was slower than a padded one (BENCHMARKS.md); measure a
machine with `bench/train_throughput.py --padding-free`.
"""

from __future__ import annotations

from typing import Any

import torch

from dagster_project.core.model.tiny_llama import training_autocast


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, tokens) ids of the real tokens of a right-padded batch, row after row, and their position ids
    (0, 1, ... within each row): the packed form transformers recognises."""
    real = attention_mask.bool()
    positions = attention_mask.long().cumsum(dim=1) - 1
    return input_ids[real].unsqueeze(0), positions[real].unsqueeze(0)


def unpack(packed: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack` for a (1, tokens, ...) output: (batch, seq, ...), zeros where `attention_mask` is 0.
    Differentiable (a scatter), so gradients reach the packed activations."""
    real = attention_mask.bool()
    padded = packed.new_zeros((*attention_mask.shape, *packed.shape[2:]))
    padded[real] = packed[0]
    return padded


def as_padded(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A hidden state captured inside a forward pass (a layer hook) in the batch's padded shape, whether or
    not that pass ran padding-free."""
    if tuple(hidden.shape[:2]) == tuple(attention_mask.shape):
        return hidden
    return unpack(hidden, attention_mask)


class PaddingFree:
    """Forward hooks on a causal LM (`LlamaForCausalLM` and the like, under a peft wrapper or not) that run
    padded keyword calls `lm(input_ids=..., attention_mask=...)` packed.

    A call with no padding, with a cache (generation) or with positional inputs runs unchanged. An architecture
    whose packed rows would mix (`check_packing`) is refused when the hooks are put on."""

    def __init__(self, lm: torch.nn.Module) -> None:
        self.masks: list[torch.Tensor | None] = []  # one per forward in progress (a θ₀ forward may nest)
        lm.register_forward_pre_hook(self._pack, with_kwargs=True)
        lm.register_forward_hook(self._unpack, with_kwargs=True)
        check_packing(lm)

    def _pack(self, _lm: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        mask = kwargs.get("attention_mask")
        packable = (not args and kwargs.get("input_ids") is not None and mask is not None and mask.dim() == 2
                    and kwargs.get("past_key_values") is None and not bool(mask.all()))
        self.masks.append(mask if packable else None)
        if not packable:
            return args, kwargs
        input_ids, position_ids = pack(kwargs["input_ids"], mask)
        # no attention mask and no cache: the conditions under which transformers reads the packed layout
        return args, {**kwargs, "input_ids": input_ids, "position_ids": position_ids, "attention_mask": None,
                      "use_cache": False}

    def _unpack(self, _lm: torch.nn.Module, _args: tuple, _kwargs: dict[str, Any], output: Any) -> Any:
        mask = self.masks.pop()
        if mask is not None:
            output.logits = unpack(output.logits, mask)
        return output


PACKING_TOLERANCE = 5e-2  # relative; bf16 rounding gives ~5e-3 (Llama, Qwen2, Phi-3, GPT-NeoX, Gemma), OPT ~0.35


def check_packing(lm: torch.nn.Module) -> float | None:
    """Refuse a model that does not keep packed sequences apart, else return the relative gap measured.

    Not every architecture goes through transformers' packed-sequence detection: OPT, for one, derives its
    learned positions from the attention mask, which packing drops, so its packed logits are wrong by a third
    of their scale. So a hooked model runs a padded batch of two random sequences and each sequence alone
    (no padding: the unhooked path), and their logits must agree to `PACKING_TOLERANCE` of their scale."""
    parameter = next(lm.parameters())
    if parameter.device.type == "cpu" and getattr(lm.config, "_attn_implementation", None) == "flex_attention":
        # None: not checked. Flex attention cannot train on the CPU (no backward pass), and the extra shapes
        # make Inductor recompile its CPU flex kernel with dynamic sizes, which fails to compile (torch 2.13)
        return None
    ids = torch.randint(3, lm.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    ids = ids.to(parameter.device)
    mask = torch.ones_like(ids)
    mask[0, 16:] = 0  # the first sequence is 16 tokens, padded to the second's 32
    was_training = lm.training
    lm.eval()  # no dropout: the two layouts would draw different masks
    # the precision training runs in: flash attention takes bf16/fp16 alone, and a full run's float32 weights
    # reach it in bf16 only under the runner's autocast
    with torch.no_grad(), training_autocast(parameter.device):
        packed = lm(input_ids=ids, attention_mask=mask).logits.float()
        alone = [lm(input_ids=ids[i:i + 1, :n]).logits[0].float() for i, n in ((0, 16), (1, 32))]
    lm.train(was_training)
    gap = max(float((packed[0, :16] - alone[0]).abs().max()), float((packed[1] - alone[1]).abs().max()))
    relative = gap / max(max(float(a.abs().max()) for a in alone), 1e-12)
    if relative > PACKING_TOLERANCE:
        raise ValueError(f"runner.padding_free: {type(lm).__name__} does not keep packed sequences apart (the logits of "
                         f"a packed batch differ from each sequence run alone by {relative:.0%} of their scale; its "
                         "positions or attention mask are not derived from restarting position ids); turn "
                         "runner.padding_free off for this model")
    return relative
