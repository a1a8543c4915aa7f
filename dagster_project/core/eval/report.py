"""Evaluate target, retain and unlearned models on the forget, retain and world-facts sets.

    unlearn stage evaluation

`score_model` runs the models (losses, generations) and is cached by content hash; `build_report`
turns scores into TOFU metrics (METHODS.md §5) with `metrics.py`, never touching a model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from dagster_project.core.eval import metrics as m
from dagster_project.core.eval.scoring import answer_losses, generate_answers

SETS = ("forget", "retain", "world")


def retain_sample(retain: Sequence[dict], size: int, seed: int) -> list[dict]:
    """A seeded, id-sorted sample of the retain set: utility need not score every retain fact."""
    records = sorted(retain, key=lambda r: r["id"])
    if len(records) <= size:
        return records
    return sorted(random.Random(seed).sample(records, size), key=lambda r: r["id"])


def score_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    eval_sets: dict[str, list[dict]],
    batch_size: int = 64,
    max_new_tokens: int = 40,
) -> dict[str, dict]:
    """Per item: L̄ of answer, paraphrase and each perturbed answer (held-out question), and the greedy answer."""
    scores: dict[str, dict] = {}
    for set_name, records in eval_sets.items():
        questions = [r["question"] for r in records]
        n_pert = [len(r["perturbed_answers"]) for r in records]
        flat_q = [q for q, k in zip(questions, n_pert) for _ in range(k)]
        flat_pert = [a for r in records for a in r["perturbed_answers"]]
        # one batched pass over answer, paraphrase and every perturbed answer
        losses = answer_losses(
            model, tokenizer,
            questions + questions + flat_q,
            [r["answer"] for r in records] + [r["paraphrased_answer"] for r in records] + flat_pert,
            batch_size=batch_size,
        )
        n = len(records)
        pert, offsets = losses[2 * n :], np.cumsum([0] + n_pert)
        scores[set_name] = {
            "answer_loss": losses[:n].tolist(),
            "para_loss": losses[n : 2 * n].tolist(),
            "pert_loss": [pert[offsets[i] : offsets[i + 1]].tolist() for i in range(n)],
            "generation": generate_answers(model, tokenizer, questions, max_new_tokens, batch_size),
        }
    return scores


def set_metrics(set_name: str, records: list[dict], scores: dict) -> dict[str, m.MetricResult]:
    tr = m.truth_ratios(scores["para_loss"], scores["pert_loss"])
    values = [r["value"] for r in records]
    results = {
        "rouge": m.rouge_l_recall(scores["generation"], [r["answer"] for r in records], name=f"{set_name}_rouge"),
        "fact_accuracy": m.fact_accuracy(scores["generation"], values, name=f"{set_name}_fact_accuracy"),
        "confident_wrong": m.confident_wrong_rate(
            scores["generation"], values, [r["perturbed_values"] for r in records], name=f"{set_name}_confident_wrong"
        ),
    }
    if set_name == "world":
        # TOFU normalises Prob on multiple-choice sets; our options share the paraphrase's sentence
        # style, so the true option is the paraphrase (the canonical answer's style would bias it).
        results["prob"] = m.normalised_prob(scores["para_loss"], scores["pert_loss"], name="world_prob")
    else:
        results["prob"] = m.prob(scores["answer_loss"], name=f"{set_name}_prob")
    aggregate = m.truth_ratio_forget if set_name == "forget" else m.truth_ratio_retain
    results["truth_ratio"] = aggregate(tr, name=f"{set_name}_truth_ratio")
    results["raw_truth_ratio"] = m.MetricResult(f"{set_name}_raw_truth_ratio", float(np.median(tr)), tuple(tr))
    return results


def build_report(eval_sets: dict[str, list[dict]], scores_by_model: dict[str, dict], reference: str = "retain") -> dict:
    """Metrics per model; forget quality compares each model's forget truth ratios with `reference`'s."""
    per_model = {
        model: {s: set_metrics(s, eval_sets[s], scores[s]) for s in SETS} for model, scores in scores_by_model.items()
    }
    reference_tr = per_model[reference]["forget"]["raw_truth_ratio"].per_item
    report: dict[str, dict] = {}
    for model, by_set in per_model.items():
        utility_parts = [by_set[s][k].value for s in ("retain", "world") for k in ("prob", "rouge", "truth_ratio")]
        summary = {
            "forget_quality": m.forget_quality(by_set["forget"]["raw_truth_ratio"].per_item, reference_tr).value,
            "model_utility": m.model_utility(utility_parts).value,
        }
        for s, results in by_set.items():
            for key, result in results.items():
                if key != "raw_truth_ratio":
                    summary[f"{s}_{key}"] = result.value
        report[model] = {
            "metrics": summary,
            "forget_truth_ratios": list(by_set["forget"]["raw_truth_ratio"].per_item),
        }
    return {"models": report, "counts": {s: len(eval_sets[s]) for s in SETS}, "reference": reference}
