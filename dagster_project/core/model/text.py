"""How a QA pair becomes tokens: one prompt format, answer-only labels, padded batches.

Every consumer (training, unlearning, scoring, generation) goes through these functions so the
prompt format and the prompt/answer boundary are defined exactly once.

Two formats: a tokenizer with a chat template (an instruction-tuned real model) gets the question as a
user turn and the answer as the assistant turn, closed by the template's own end-of-turn token; the
embedded tiny model, which has no template, gets `Question: ...\nAnswer: ...<eos>`. A pair whose question
is empty is free text (a document, a note): the answer is the whole text, with no prompt format around it,
every token labelled, ended by EOS, as a plain language-model fine-tune sees it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value torch's cross-entropy skips: prompt and padding tokens
_SENTINEL = "\x00ANSWER\x00"  # an answer no template alters, to find what the template puts after it


def has_chat_template(tokenizer: PreTrainedTokenizerBase | None) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def format_prompt(question: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The text the model sees before its answer: the chat template's user turn and assistant opening when
    `tokenizer` has a template (instruct models answer best in the format they were tuned on), else the plain
    `Question: ...\nAnswer:` of the embedded model."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def answer_text(answer: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """How the answer follows the prompt: directly in a chat turn (the template ends the prompt with its own
    separator), after a space in the plain format."""
    return answer if has_chat_template(tokenizer) else " " + answer


def end_of_answer_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that ends an answer: the chat template's end-of-turn token where it has one (`<|im_end|>`,
    `<|eot_id|>`: what the model was tuned to emit after an assistant turn, which is not always the
    tokenizer's `eos_token`, a classic cause of models that never stop), else `eos_token`."""
    return _end_of_turn(tokenizer) if has_chat_template(tokenizer) else tokenizer.eos_token_id


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end a generation: the end of an answer and the tokenizer's EOS (once each)."""
    return sorted({end_of_answer_id(tokenizer), tokenizer.eos_token_id} - {None})


_END_OF_TURN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> id: encode_pair asks per pair


def _end_of_turn(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer not in _END_OF_TURN:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False)
        after = rendered.split(_SENTINEL, 1)[1].split()
        marker = after[0] if after else ""
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"] if marker else []
        if len(ids) != 1:
            raise ValueError(f"the chat template closes an assistant turn with {marker!r}, which is not one token "
                             f"(got ids {ids}); expected a special end-of-turn token such as <|im_end|>")
        _END_OF_TURN[tokenizer] = ids[0]
    return _END_OF_TURN[tokenizer]


def encode_pair(tokenizer: PreTrainedTokenizerBase, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids and labels for one QA pair; labels are IGNORE_INDEX on the prompt.

    Prompt and answer are tokenised separately so the boundary is exact (a joint tokenisation
    could merge the last prompt byte with the first answer byte). The answer ends with the end-of-answer
    token, labelled, so the model learns to stop. An empty question is free text: the answer's tokens alone,
    ended by EOS (a document has no turn to close).
    """
    if not question:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return ids, list(ids)
    prompt_ids = tokenizer(format_prompt(question, tokenizer), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text(answer, tokenizer), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [end_of_answer_id(tokenizer)]
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def collate_pairs(
    tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], answers: Sequence[str]
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
    """Mean answer-token NLL per sequence, shape (batch,): the L̄(x, y) of the NPO/SimNPO papers."""
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
