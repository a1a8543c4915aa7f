"""Robustness beyond the anchors: does the forgotten knowledge come back after a little fine-tuning?

Relearning attack: fine-tune the unlearned model for a few steps on half of the
forget set (its training phrasings), then re-measure ROUGE-L recall and Prob on the *other* half
(held-out phrasings). Knowledge that was only suppressed returns quickly; erased knowledge does not,
because the attacked half shares no facts with the measured half.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerFast

from dagster_project.core.eval import metrics as m
from dagster_project.core.eval.scoring import answer_losses, generate_answers
from dagster_project.core.methods.runner import BatchSampler, training_pairs
from dagster_project.core.model.text import batch_nll, collate_pairs


def split_halves(records: Sequence[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split of the forget set into (attacked half, measured half), by record."""
    order = sorted(records, key=lambda r: r["id"])
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return order[:half], order[half:]


def _measure(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, records: Sequence[dict]) -> dict[str, float]:
    questions = [r["question"] for r in records]
    answers = [r["answer"] for r in records]
    return {
        "rouge": m.rouge_l_recall(generate_answers(model, tokenizer, questions), answers).value,
        "prob": m.prob(answer_losses(model, tokenizer, questions, answers)).value,
    }


def relearned_copy(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, pairs: Sequence[tuple[str, str]],
                   steps: int, lr: float = 1e-4, batch_size: int = 8, seed: int = 0) -> torch.nn.Module:
    """A copy of `model` fine-tuned for `steps` AdamW steps on `pairs` (answer-only NLL): the attacker's model."""
    torch.manual_seed(seed)
    victim = copy.deepcopy(model).train().requires_grad_(True)  # merged peft models come back frozen
    optimiser = torch.optim.AdamW(victim.parameters(), lr=lr)
    sampler = BatchSampler(list(pairs), batch_size, seed)
    device = next(victim.parameters()).device
    for _ in range(steps):
        batch_pairs = sampler.next()
        batch = collate_pairs(tokenizer, [q for q, _ in batch_pairs], [a for _, a in batch_pairs])
        loss = batch_nll(victim, {k: v.to(device) for k, v in batch.items()})
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return victim.eval()


def relearn_attack(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    forget_records: Sequence[dict],
    steps: int = 30,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """Fine-tune a copy of `model` on half the forget set; ROUGE/Prob on the other half before and after."""
    if len(forget_records) < 2:
        raise ValueError(f"relearn_attack needs at least 2 forget records to split, got {len(forget_records)}")
    attacked, measured = split_halves(forget_records, seed)
    before = _measure(model, tokenizer, measured)
    victim = relearned_copy(model, tokenizer, training_pairs(attacked), steps, lr, batch_size, seed)
    after = _measure(victim, tokenizer, measured)
    return {
        "relearn_rouge_before": before["rouge"], "relearn_rouge_after": after["rouge"],
        "relearn_prob_before": before["prob"], "relearn_prob_after": after["prob"],
        "relearn_rouge_recovered": after["rouge"] - before["rouge"],
        "relearn_steps": float(steps), "relearn_measured_items": float(len(measured)),
    }
