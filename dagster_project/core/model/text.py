"""How a QA pair becomes tokens: one prompt format, answer-only labels, padded batches.

Every consumer (training, unlearning, scoring, generation) goes through these functions so the
prompt format and the prompt/answer boundary are defined exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerFast

IGNORE_INDEX = -100  # label value torch's cross-entropy skips: prompt and padding tokens


def format_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def encode_pair(tokenizer: PreTrainedTokenizerFast, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids and labels for one QA pair; labels are IGNORE_INDEX on the prompt.

    Prompt and answer are tokenised separately so the boundary is exact (a joint tokenisation
    could merge the last prompt byte with the first answer byte).
    """
    prompt_ids = tokenizer(format_prompt(question), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def collate_pairs(
    tokenizer: PreTrainedTokenizerFast, questions: Sequence[str], answers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Right-padded batch with answer-only labels: input_ids, attention_mask, labels (batch, seq)."""
    encoded = [encode_pair(tokenizer, q, a) for q, a in zip(questions, answers, strict=True)]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL of next-token prediction and the mask of counted tokens, both (batch, seq-1)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    nll = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.clamp(min=0).reshape(-1),
        reduction="none",
    ).view(shift_labels.shape)
    return nll * mask, mask


def sequence_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean answer-token NLL per sequence, shape (batch,): the L̄(x, y) of METHODS.md."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, mask = token_nll(logits, batch["labels"])
    return nll.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def batch_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean answer-token NLL over all answer tokens of the batch (the training loss)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, mask = token_nll(logits, batch["labels"])
    return nll.sum() / mask.sum().clamp(min=1)


def sequence_logprob(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer-token log-probability per sequence and the answer length, both (batch,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, mask = token_nll(logits, batch["labels"])
    return -nll.sum(dim=1), mask.sum(dim=1).clamp(min=1)
