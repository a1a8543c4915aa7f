"""Score knowledge probes with a model: log-probability of each option, and greedy completion.

    scores = score_probes(model, tokenizer, probes)   # per probe: option log-probs, top-1, contained

Each option (the true span first, then the distractors) is scored as the summed log-probability of its
tokens after the probe's context, the way lm-evaluation-harness scores multiple choice ("acc"): context and
option are tokenised separately and joined, so every option is scored after the same context tokens (all
options of a probe in one forward pass, `option_logprobs`). The
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


# greedy completion is asked of the probes about what must be forgotten; elsewhere top-1 says enough
CONTAINMENT_SETS = ("forget", "paraphrase")


def probe_context(probe: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> str:
    """What the model reads before the masked span, in the record's format."""
    if not probe["prompt"]:
        return probe["context"]
    return format_prompt(probe["prompt"], tokenizer) + (answer_text(probe["context"], tokenizer) if probe["context"] else "")


def options(probe: dict[str, Any]) -> list[str]:
    """The true span then the distractors, each with the separator that stood before the span."""
    return [probe["separator"] + text for text in (probe["answer"], *probe["distractors"])]


def _packed_row(context: list[int], choices: list[list[int]]) -> tuple[list[int], list[int], torch.Tensor]:
    """One probe as one sequence: the context, then every option after it. Returns (ids, position ids, allowed),
    `allowed[q, k]` True where query q may attend to key k: the context causally; each option the whole context
    and itself causally, never another option; each option's positions restart where the context ends."""
    c = len(context)
    ids, positions = list(context), list(range(c))
    n = c + sum(len(o) for o in choices)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:c, :c] = torch.tril(torch.ones(c, c, dtype=torch.bool))
    for option in choices:
        start, length = len(ids), len(option)
        allowed[start:start + length, :c] = True
        allowed[start:start + length, start:start + length] = torch.tril(torch.ones(length, length, dtype=torch.bool))
        ids += option
        positions += list(range(c, c + length))
    return ids, positions, allowed


@torch.no_grad()
def option_logprobs(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, contexts: Sequence[str],
                    option_texts: Sequence[Sequence[str]], batch_size: int = 32) -> list[np.ndarray]:
    """Summed log p(option | context) for every option of every context: one array per context.

    Every option of a context is scored in one forward pass with a 4-D attention mask (`_packed_row`): the
    context is read once instead of once per option, about 3x fewer tokens for four short options. The
    numbers equal scoring `context + option` one at a time (tests/test_own_data.py), as lm-evaluation-harness
    does. A context of no tokens leaves each option's first token unscored."""
    model.eval()
    device = next(model.parameters()).device
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rows = [(encode(c), [encode(o) for o in opts]) for c, opts in zip(contexts, option_texts, strict=True)]
    out: list[np.ndarray] = [np.zeros(len(opts)) for _, opts in rows]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + sum(len(o) for o in rows[i][1]))  # less padding
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lowest = torch.finfo(torch.float32).min
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        packed = [_packed_row(*rows[i]) for i in chunk]
        width = max(len(ids) for ids, _, _ in packed)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        positions = torch.zeros((len(chunk), width), dtype=torch.long)
        # padding attends to itself alone, so no row of the mask is empty (an empty row is NaN in softmax)
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(chunk), 1, 1)
        for row, (row_ids, row_positions, row_allowed) in enumerate(packed):
            n = len(row_ids)
            ids[row, :n], positions[row, :n] = torch.tensor(row_ids), torch.tensor(row_positions)
            allowed[row, :n, :n] = row_allowed
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, lowest)[:, None]
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device)).logits
        for row, i in enumerate(chunk):
            context, choices = rows[i]
            predicted, targets, owners, at = [], [], [], len(context)
            for k, option in enumerate(choices):
                # token j of an option is predicted at the position before it: the context's last token for j = 0
                previous = [len(context) - 1] + list(range(at, at + len(option) - 1))
                scored = [(p, t) for p, t in zip(previous, option) if p >= 0]
                predicted += [p for p, _ in scored]
                targets += [t for _, t in scored]
                owners += [k] * len(scored)
                at += len(option)
            # log-softmax of the scored positions alone, on the device: not a (batch, width, vocab) copy to the CPU
            logp = torch.log_softmax(logits[row, predicted].float(), -1)[torch.arange(len(targets)), targets]
            out[i] = np.bincount(owners, weights=logp.double().cpu().numpy(), minlength=len(choices)).astype(float)
    return out


def score_probes(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, probes: Sequence[dict[str, Any]],
                 batch_size: int = 32, extra_tokens: int = 4) -> list[dict[str, Any]]:
    """Per probe: option log-probs (true first), top1 (the true option scored highest) and, for the forget and
    paraphrase probes, contained (the greedy continuation, as long as the true span plus `extra_tokens`, holds it)."""
    if not probes:
        return []
    contexts = [probe_context(p, tokenizer) for p in probes]
    logprobs = option_logprobs(model, tokenizer, contexts, [options(p) for p in probes], batch_size)
    generated = [i for i, p in enumerate(probes) if p["set"] in CONTAINMENT_SETS]
    longest = max((len(tokenizer(probes[i]["separator"] + probes[i]["answer"], add_special_tokens=False)["input_ids"])
                   for i in generated), default=0)
    continuations = dict(zip(generated, generate_texts(model, tokenizer, [contexts[i] for i in generated],
                                                       longest + extra_tokens, batch_size) if generated else []))
    scores = []
    for i, (probe, values) in enumerate(zip(probes, logprobs, strict=True)):
        score = {"id": probe["id"], "logprobs": values.tolist(), "top1": bool(values[0] > values[1:].max())}
        if i in continuations:
            score["contained"] = normalise(probe["answer"]) in normalise(continuations[i])
        scores.append(score)
    return scores
