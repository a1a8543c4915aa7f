"""Score knowledge probes with a model: log-probability of each option, and greedy completion.

    scores = score_probes(model, tokenizer, probes)   # per probe: option log-probs, top-1, contained

Each option (the true span first, then the distractors) is scored as the summed log-probability of its
tokens after the probe's context, the way lm-evaluation-harness scores multiple choice ("acc"): context and
option are tokenised separately and joined, so every option is scored after the same context tokens. The
context is the record's own format: the chat template's user turn and assistant opening for a chat record,
then the completion up to the span; raw text for free text. *Contained*: the model's greedy continuation
of the context holds the true span (case- and accent-insensitive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from dagster_project.core.collection.match import normalise
from dagster_project.core.eval.scoring import generate_texts
from dagster_project.core.model.text import answer_text, format_prompt


def probe_context(probe: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> str:
    """What the model reads before the masked span, in the record's format."""
    if not probe["prompt"]:
        return probe["context"]
    return format_prompt(probe["prompt"], tokenizer) + (answer_text(probe["context"], tokenizer) if probe["context"] else "")


def options(probe: dict[str, Any]) -> list[str]:
    """The true span then the distractors, each with the separator that stood before the span."""
    return [probe["separator"] + text for text in (probe["answer"], *probe["distractors"])]


@torch.no_grad()
def continuation_logprobs(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, contexts: Sequence[str],
                          continuations: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Summed log p(continuation | context) per pair, shape (n,)."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [(tokenizer(c, add_special_tokens=False)["input_ids"], tokenizer(x, add_special_tokens=False)["input_ids"])
               for c, x in zip(contexts, continuations, strict=True)]
    out = np.zeros(len(encoded))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))  # less padding
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i][0]) + len(encoded[i][1]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, i in enumerate(rows):
            joined = encoded[i][0] + encoded[i][1]
            ids[row, :len(joined)] = torch.tensor(joined)
            mask[row, :len(joined)] = 1
        logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for row, i in enumerate(rows):
            context_len, n = len(encoded[i][0]), len(encoded[i][1])
            # the logits at position t predict token t + 1; a context of 0 tokens leaves the first option token unscored
            positions = torch.arange(max(context_len - 1, 0), context_len + n - 1, device=logp.device)
            targets = ids[row, positions + 1].to(logp.device)
            out[i] = float(logp[row, positions, targets].sum())
    return out


def score_probes(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, probes: Sequence[dict[str, Any]],
                 batch_size: int = 32, extra_tokens: int = 4) -> list[dict[str, Any]]:
    """Per probe: option log-probs (true first), top1 (the true option scored highest) and contained (the greedy
    continuation, as long as the true span plus `extra_tokens`, holds it)."""
    if not probes:
        return []
    contexts = [probe_context(p, tokenizer) for p in probes]
    flat = [(c, o) for c, p in zip(contexts, probes) for o in options(p)]
    logprobs = continuation_logprobs(model, tokenizer, [c for c, _ in flat], [o for _, o in flat], batch_size)
    longest = max(len(tokenizer(p["separator"] + p["answer"], add_special_tokens=False)["input_ids"]) for p in probes)
    continuations = generate_texts(model, tokenizer, contexts, longest + extra_tokens, batch_size)
    scores, offset = [], 0
    for probe, continuation in zip(probes, continuations, strict=True):
        k = 1 + len(probe["distractors"])
        values = logprobs[offset:offset + k]
        offset += k
        scores.append({"id": probe["id"], "logprobs": values.tolist(), "top1": bool(values[0] > values[1:].max()),
                       "contained": normalise(probe["answer"]) in normalise(continuation)})
    return scores
