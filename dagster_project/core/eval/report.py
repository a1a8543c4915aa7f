"""Evaluate target, retain and unlearned models: TOFU, MUSE-style, MIA, robustness, answer quality.

    unlearn stage evaluation

`score_model` runs a model (losses, token statistics, generations, the relearning attack) and is
cached by content hash; `build_report` turns scores into metrics (as open-unlearning computes them) with pure functions,
never touching a model. Metrics that need the retain model (a real request has none) are listed in
`NEEDS_RETAIN_MODEL`; every other metric is retain-free evidence and is always reported.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from dagster_project.core.eval import metrics as m
from dagster_project.core.eval import mia
from dagster_project.core.eval.quality import gibberish_rate, refusal_rate
from dagster_project.core.eval.robustness import relearn_attack
from dagster_project.core.eval.scoring import answer_losses, generate_answers, generate_texts, token_stats
from dagster_project.core.model.text import answer_text, format_prompt

SETS = ("forget", "retain", "real_world", "world")
UTILITY_SETS = ("retain", "real_world", "world")  # TOFU's model utility: 3 numbers on each
MULTIPLE_CHOICE_SETS = ("real_world", "world")  # Prob normalised over the true and wrong options
NEEDS_RETAIN_MODEL = ("forget_quality", "priv_leak")


def retain_sample(retain: Sequence[dict], size: int, seed: int) -> list[dict]:
    """A seeded, id-sorted sample of the retain set: utility need not score every retain fact."""
    records = sorted(retain, key=lambda r: r["id"])
    if len(records) <= size:
        return records
    return sorted(random.Random(seed).sample(records, size), key=lambda r: r["id"])


def build_eval_sets(corpus, forget: list[dict], retain: list[dict], eval_params: dict) -> dict[str, list[dict]]:
    """forget (as given), a seeded retain sample, famous authors, world facts, never-trained holdout people (MIA)."""
    holdout = set(corpus.splits["holdout"])
    return {
        "forget": forget,
        "retain": retain_sample(retain, eval_params["retain_sample"], eval_params["seed"]),
        "real_world": corpus.real_world,
        "world": corpus.world_facts,
        "holdout": [r for r in corpus.qa if r["person_id"] in holdout],
    }


def verbatim_prefixes(records: Sequence[dict], tokenizer: PreTrainedTokenizerBase | None = None) -> tuple[list[str], list[str]]:
    """MUSE VerbMem inputs: prompt + first half of each answer's words (in `tokenizer`'s prompt format), and
    the second half to recall."""
    prefixes, rests = [], []
    for r in records:
        words = r["answer"].split()
        cut = max(1, len(words) // 2)
        prefixes.append(format_prompt(r["question"], tokenizer) + answer_text(" ".join(words[:cut]), tokenizer))
        rests.append(" ".join(words[cut:]))
    return prefixes, rests


def score_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    eval_sets: dict[str, list[dict]],
    batch_size: int = 64,
    max_new_tokens: int = 40,
    relearn_steps: int = 30,  # 0 skips the relearning attack (it only informs on unlearned models)
    seed: int = 0,
) -> dict[str, dict]:
    """Everything a report needs from one model (eval_sets: forget, retain, real_world, world, holdout).

    Per item of forget/retain/real_world/world: L̄ of answer, paraphrase and each perturbed answer (held-out
    question) and the greedy answer; token statistics of forget and holdout answers (MIA);
    continuations of forget-answer prefixes (VerbMem); the relearning attack.
    """
    scores: dict[str, dict] = {}
    for set_name in SETS:
        records = eval_sets[set_name]
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
    forget, holdout = eval_sets["forget"], eval_sets["holdout"]
    scores["tokens"] = {
        name: token_stats(model, tokenizer, [r["question"] for r in records], [r["answer"] for r in records], batch_size)
        for name, records in (("forget", forget), ("holdout", holdout))
    }
    prefixes, _rests = verbatim_prefixes(forget, tokenizer)
    scores["verbmem"] = {"generation": generate_texts(model, tokenizer, prefixes, max_new_tokens, batch_size)}
    # phrasing probes beside the held-out wording: the wording of training (and unlearning), and a
    # fourth wording no model ever trained on
    scores["seen_phrasing"] = {"generation": generate_answers(
        model, tokenizer, [r["train_questions"][0] for r in forget], max_new_tokens, batch_size)}
    scores["paraphrased_question"] = {"generation": generate_answers(
        model, tokenizer, [r["paraphrased_question"] for r in forget], max_new_tokens, batch_size)}
    if relearn_steps:
        scores["relearn"] = relearn_attack(model, tokenizer, forget, steps=relearn_steps, seed=seed)
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
    if set_name in MULTIPLE_CHOICE_SETS:
        # TOFU normalises Prob on multiple-choice sets; our options share the paraphrase's sentence
        # style, so the true option is the paraphrase (the canonical answer's style would bias it).
        results["prob"] = m.normalised_prob(scores["para_loss"], scores["pert_loss"], name=f"{set_name}_prob")
    else:
        results["prob"] = m.prob(scores["answer_loss"], name=f"{set_name}_prob")
    aggregate = m.truth_ratio_forget if set_name == "forget" else m.truth_ratio_retain
    results["truth_ratio"] = aggregate(tr, name=f"{set_name}_truth_ratio")
    results["raw_truth_ratio"] = m.MetricResult(f"{set_name}_raw_truth_ratio", float(np.median(tr)), tuple(tr))
    return results


def retain_free_metrics(eval_sets: dict[str, list[dict]], scores: dict) -> tuple[dict[str, float], dict]:
    """Evidence that needs no retain model: MIA, memorisation, VerbMem, answer quality, relearning."""
    texts = {name: [r["answer"] for r in eval_sets[name]] for name in ("forget", "holdout")}
    attacks = {name: mia.attack_scores(scores["tokens"][name], texts[name]) for name in ("forget", "holdout")}
    out = {f"mia_{a}_auc": mia.mia_auc(attacks["forget"][a], attacks["holdout"][a]) for a in mia.ATTACKS}
    forget_tokens = scores["tokens"]["forget"]
    out["forget_extraction_strength"] = float(np.mean([mia.extraction_strength(t["argmax_match"]) for t in forget_tokens]))
    out["forget_exact_memorisation"] = float(np.mean([mia.exact_memorisation(t["argmax_match"]) for t in forget_tokens]))
    _prefixes, rests = verbatim_prefixes(eval_sets["forget"])
    out["verbmem_rouge"] = m.rouge_l_recall(scores["verbmem"]["generation"], rests).value
    forget_answers = [r["answer"] for r in eval_sets["forget"]]
    out["forget_seen_phrasing_rouge"] = m.rouge_l_recall(scores["seen_phrasing"]["generation"], forget_answers).value
    probe = scores["paraphrased_question"]["generation"]
    out["forget_paraphrase_rouge"] = m.rouge_l_recall(probe, forget_answers).value
    out["forget_paraphrase_fact_accuracy"] = m.fact_accuracy(probe, [r["value"] for r in eval_sets["forget"]]).value
    for set_name in ("forget", "retain"):
        out[f"{set_name}_refusal_rate"] = refusal_rate(scores[set_name]["generation"])
        out[f"{set_name}_gibberish_rate"] = gibberish_rate(scores[set_name]["generation"])
    out.update(scores.get("relearn", {}))
    roc_inputs = {name: attacks[name]["loss"].tolist() for name in ("forget", "holdout")}
    return out, roc_inputs


def build_report(eval_sets: dict[str, list[dict]], scores_by_model: dict[str, dict], reference: str | None = "retain") -> dict:
    """Metrics per model; forget quality and PrivLeak compare each model with `reference` (None: skip them)."""
    per_model = {
        model: {s: set_metrics(s, eval_sets[s], scores[s]) for s in SETS} for model, scores in scores_by_model.items()
    }
    report: dict[str, dict] = {}
    for model, by_set in per_model.items():
        utility_parts = [by_set[s][k].value for s in UTILITY_SETS for k in ("prob", "rouge", "truth_ratio")]
        summary = {"model_utility": m.model_utility(utility_parts).value}
        for s, results in by_set.items():
            for key, result in results.items():
                if key != "raw_truth_ratio":
                    summary[f"{s}_{key}"] = result.value
        retain_free, roc_inputs = retain_free_metrics(eval_sets, scores_by_model[model])
        summary.update(retain_free)
        report[model] = {
            "metrics": summary,
            "forget_truth_ratios": list(by_set["forget"]["raw_truth_ratio"].per_item),
            "retain_truth_ratios": list(by_set["retain"]["raw_truth_ratio"].per_item),
            "mia_loss_scores": roc_inputs,
        }
    if reference is not None:
        reference_tr = report[reference]["forget_truth_ratios"]
        reference_auc = report[reference]["metrics"]["mia_min_k_auc"]
        for body in report.values():
            body["metrics"]["forget_quality"] = m.forget_quality(body["forget_truth_ratios"], reference_tr).value
            body["metrics"]["priv_leak"] = mia.priv_leak(body["metrics"]["mia_min_k_auc"], reference_auc)
    return {"models": report, "counts": {s: len(eval_sets[s]) for s in (*SETS, "holdout")}, "reference": reference,
            "needs_retain_model": list(NEEDS_RETAIN_MODEL)}
