"""Model-facing half of evaluation: batched answer losses and greedy generations.

The metric formulas live in `metrics.py` and only see the numbers and strings produced here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from dagster_project.core.model.text import collate_pairs, format_prompt, sequence_nll


@torch.no_grad()
def answer_losses(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 64,
) -> np.ndarray:
    """L̄(q, a): mean answer-token NLL per pair, shape (n,)."""
    if len(questions) != len(answers):
        raise ValueError(f"answer_losses: {len(questions)} questions but {len(answers)} answers")
    model.eval()
    out: list[np.ndarray] = []
    for start in range(0, len(questions), batch_size):
        batch = collate_pairs(tokenizer, questions[start : start + batch_size], answers[start : start + batch_size])
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(sequence_nll(model, batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    questions: Sequence[str],
    max_new_tokens: int = 40,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers, cut at EOS, batched with left padding and the KV cache."""
    model.eval()
    device = next(model.parameters()).device
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end aligned
    answers: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [format_prompt(q) for q in questions[start : start + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            generated = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            answers.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = previous_side
    return answers
