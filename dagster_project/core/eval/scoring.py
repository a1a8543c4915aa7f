"""Model-facing half of evaluation: batched answer losses and greedy generations.

The metric formulas live in `metrics.py` and only see the numbers and strings produced here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from dagster_project.core.model.text import IGNORE_INDEX, collate_pairs, format_prompt, sequence_nll, stop_token_ids


def _pair_batches(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, questions: Sequence[str], answers: Sequence[str],
    batch_size: int, caller: str,
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded answer-only-labelled batches on the model's device (the model is put in eval mode)."""
    if len(questions) != len(answers):
        raise ValueError(f"{caller}: {len(questions)} questions but {len(answers)} answers")
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(questions), batch_size):
        batch = collate_pairs(tokenizer, questions[start : start + batch_size], answers[start : start + batch_size])
        yield {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def answer_losses(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 64,
) -> np.ndarray:
    """L̄(q, a): mean answer-token NLL per pair, shape (n,)."""
    out = [sequence_nll(model, batch).float().cpu().numpy()
           for batch in _pair_batches(model, tokenizer, questions, answers, batch_size, "answer_losses")]
    return np.concatenate(out) if out else np.zeros(0)


@torch.no_grad()
def generate_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    max_new_tokens: int = 40,
    batch_size: int = 64,
) -> list[str]:
    """Greedy continuations of raw prompts, cut at the end of an answer (`stop_token_ids`: a chat model's
    end-of-turn token as well as EOS), batched with left padding and the KV cache."""
    model.eval()
    device = next(model.parameters()).device
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end aligned
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            generated = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stop_token_ids(tokenizer),
            )
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            texts.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = previous_side
    return texts


def generate_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    questions: Sequence[str],
    max_new_tokens: int = 40,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers to questions in the training prompt format."""
    return generate_texts(model, tokenizer, [format_prompt(q, tokenizer) for q in questions], max_new_tokens, batch_size)


@torch.no_grad()
def token_stats(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 64,
) -> list[dict[str, list]]:
    """Per answer token: log p(label), μ and σ of log p under the model's distribution, argmax == label.

    One batched forward; the inputs of MIA (LOSS, zlib, Min-K%, Min-K%++), extraction strength and
    exact memorisation.
    """
    out: list[dict[str, list]] = []
    for batch in _pair_batches(model, tokenizer, questions, answers, batch_size, "token_stats"):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        logp_all = torch.log_softmax(logits, dim=-1)  # (batch, seq-1, vocab)
        probs = logp_all.exp()
        mu = (probs * logp_all).sum(-1)
        sigma = ((probs * logp_all.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
        label_logp = logp_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        match = logp_all.argmax(-1) == labels
        mask = labels != IGNORE_INDEX
        for row in range(labels.shape[0]):
            keep = mask[row]
            out.append({
                "logprob": label_logp[row][keep].cpu().tolist(),
                "mu": mu[row][keep].cpu().tolist(),
                "sigma": sigma[row][keep].cpu().tolist(),
                "argmax_match": match[row][keep].cpu().tolist(),
            })
    return out
