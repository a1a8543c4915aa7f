"""Reveal: make the model say what it knows about the subjects, choosing instructions with a bandit.

Each round plays one arm (an instruction template) for one subject (round-robin): the model samples
`samples` responses; reward = weighted harmonic mean of their mean relevance to the subject and their Vendi
diversity (÷ samples, so in (0, 1]). Responses relevant enough, deduplicated, become the forget set.
The log keeps arms, scores and SHA-256 hashes, never the text (instructions carry the subject's name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from dagster_project.core.data.io import sha256_text
from dagster_project.core.data.request import normalise_name
from dagster_project.core.model.text import format_prompt, stop_token_ids
from dagster_project.core.model.tiny_llama import sampling_allowed
from dagster_project.core.reveal.bandit import NeuralUCB, make_selector
from dagster_project.core.reveal.instructions import INSTRUCTION_TEMPLATES, SUBJECT_PLACEHOLDER, fill
from dagster_project.core.reveal.scoring import Encoder, harmonic_reward, name_mention, relevance, vendi_score

SCORERS = ("embedding", "mention")


@dataclass(frozen=True)
class RevealConfig:
    rounds: int = 60  # arms played in all (subjects take turns)
    samples: int = 8  # responses sampled per play
    selector: str = "neuralucb"  # neuralucb | random | egreedy
    nu: float = 1.0  # NeuralUCB exploration
    hidden: int = 16  # NeuralUCB network width
    epsilon: float = 0.1  # ε-greedy exploration
    feature_dims: int = 16  # arm features: sentence embeddings projected on this many principal components
    relevance_weight: float = 1.0
    diversity_weight: float = 1.0
    relevance_threshold: float = 0.3  # a response joins the forget set at this relevance or above
    scorer: str = "embedding"  # relevance: embedding (cosine to the subject's name) | mention (name parts present)
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 40
    seed: int = 0


@dataclass
class RevealResult:
    records: list[dict[str, Any]]  # the self-generated forget set (personal data: a dataset, never a log)
    log: list[dict[str, Any]]  # one row per round: arm, hashes, relevance, diversity, reward
    responses: int = 0  # sampled in all
    mean_relevance: float = 0.0  # over every sampled response: the release loop's stopping signal
    encoder: str = ""

    def summary(self) -> dict[str, Any]:
        """Counts and scores only (safe for metadata and MLflow)."""
        rewards = [row["reward"] for row in self.log]
        return {"rounds": len(self.log), "responses": self.responses, "revealed": len(self.records),
                "mean_relevance": self.mean_relevance, "mean_reward": float(np.mean(rewards)) if rewards else 0.0,
                "distinct_arms": len({row["arm"] for row in self.log}), "encoder": self.encoder}


def arm_features(encode: Encoder, templates: Sequence[str], dims: int) -> np.ndarray:
    """Sentence embeddings of the templates (subject-neutral), projected on `dims` principal components."""
    from sklearn.decomposition import PCA

    vectors = encode([fill(t, SUBJECT_PLACEHOLDER) for t in templates])
    projected = PCA(n_components=min(dims, len(templates) - 1, vectors.shape[1]), random_state=0).fit_transform(vectors)
    return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)


@torch.no_grad()
def sample_responses(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, question: str, n: int,
                     config: RevealConfig, seed: int) -> list[str]:
    """`n` sampled answers to `question` in the training prompt format, reproducible from `seed`."""
    device = next(model.parameters()).device
    encoded = tokenizer(format_prompt(question, tokenizer), return_tensors="pt", add_special_tokens=False).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), sampling_allowed():
        torch.manual_seed(seed)
        generated = model.generate(**encoded, do_sample=True, temperature=config.temperature, top_p=config.top_p,
                                   num_return_sequences=n, max_new_tokens=config.max_new_tokens,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_token_ids(tokenizer))
    new_tokens = generated[:, encoded["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def reveal(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, subjects: Sequence[str], config: RevealConfig,
           encode: Encoder, encoder_name: str = "", templates: Sequence[str] = INSTRUCTION_TEMPLATES,
           progress: bool = True) -> RevealResult:
    if not subjects:
        raise ValueError("reveal needs at least one subject name")
    if config.scorer not in SCORERS:
        raise ValueError(f"reveal.scorer must be one of {', '.join(SCORERS)}, got {config.scorer!r}")
    model.eval()
    selector = make_selector(config.selector, arm_features(encode, templates, config.feature_dims), config.seed,
                             nu=config.nu, hidden=config.hidden, epsilon=config.epsilon)
    subject_vectors = encode(list(subjects))
    kept: dict[tuple[int, str], dict[str, Any]] = {}  # (subject, normalised response) -> record: deduplicated
    log, all_relevance = [], []
    for round_ in tqdm(range(config.rounds), desc=f"reveal ({config.selector})", unit="arm", disable=not progress,
                       mininterval=2.0):
        subject = round_ % len(subjects)
        arm = selector.select()
        question = fill(templates[arm], subjects[subject])
        responses = sample_responses(model, tokenizer, question, config.samples, config, config.seed * 1_000_003 + round_)
        vectors = encode(responses)
        scores = (name_mention(responses, subjects[subject]) if config.scorer == "mention"
                  else relevance(vectors, subject_vectors[subject]))
        diversity = vendi_score(vectors) / len(responses)
        reward = harmonic_reward(float(scores.mean()), diversity, config.relevance_weight, config.diversity_weight)
        selector.update(arm, reward)
        all_relevance.extend(scores.tolist())
        log.append({"round": round_, "arm": arm, "subject_sha256": sha256_text(subjects[subject]),
                    "instruction_sha256": sha256_text(question), "relevance": float(scores.mean()),
                    "diversity": diversity, "reward": reward,
                    **({"ucb_prediction": float(selector.predictions()[arm])} if isinstance(selector, NeuralUCB) else {})})
        for response, score in zip(responses, scores.tolist()):
            key = (subject, normalise_name(response))
            if score >= config.relevance_threshold and response and key not in kept:
                kept[key] = {"subject": subjects[subject], "question": question, "train_questions": [question],
                             "answer": response, "relevance": round(score, 6), "arm": arm, "round": round_}
    records = [{"id": f"revealed-{i:05d}", **record} for i, record in enumerate(kept.values())]
    return RevealResult(records, log, len(all_relevance), float(np.mean(all_relevance)), encoder_name)


def revealed_recall(revealed: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]]) -> float:
    """Fraction of the ground-truth QA records whose key fact (`value`) appears in a revealed response about
    the same subject (case-insensitive): how much of what the model knew the reveal surfaced."""
    answers: dict[str, str] = {}
    for record in revealed:
        answers[record["subject"]] = answers.get(record["subject"], "") + "\n" + record["answer"].casefold()
    found = [str(r["value"]).casefold() in answers.get(r["subject"], "") for r in truth]
    return float(np.mean(found)) if found else 0.0
