"""Evaluate models trained on the user's own documents, with no retain model: knowledge probes and attacks.

    unlearn stage evaluation          # on a root whose params.yaml declares `sources:`

`score_documents` runs one model over the request's evaluation inputs (cached by the stage, like TOFU's
scores); `documents_report` turns the scores of the target and the unlearned model into metrics with pure
functions:

- `<set>_probe_top1` / `<set>_probe_containment` for every probe set (probes/build.py): forget (the forget
  documents, or θ₀'s revealed responses), retain, hard_positive, utility, general knowledge, paraphrase;
  `probe_chance` is the forget probes' 1/(K+1). `forget_probe_margin` = forget top-1 − chance.
- `model_utility`: harmonic mean of the retain, utility and general-knowledge top-1 (those the request has);
  `utility_ratio`, `retain_probe_ratio`, `hard_positive_probe_ratio`, `general_knowledge_ratio`: the model's
  value over the target's, so 1 = nothing lost.
- `mia_<attack>_auc`: forget documents against the `nonmember` source (LOSS, zlib, Min-K%, Min-K%++; forget
  labelled 0, so 0.5 = the forget documents look unseen, 1 = clearly members).
- `forget_gibberish_rate`, `forget_refusal_rate`, `forget_leak_rate`: greedy answers to prompts about each
  subject ("Tell me about …"): word salad, refusals, and answers that state a forget probe's true span that
  no other evaluated text holds (`distinctive_spans`). A
  request naming nobody (documents or records alone) continues the forget documents' openings instead.
- `relearn_probe_top1_before/after/recovered` (unlearned model): fine-tune on half of the forget documents,
  then the forget probes of the other half.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from dagster_project.core.collection.match import alias_pattern, normalise
from dagster_project.core.eval import metrics as m
from dagster_project.core.eval import mia
from dagster_project.core.eval.quality import gibberish_rate, refusal_rate
from dagster_project.core.eval.robustness import relearned_copy
from dagster_project.core.eval.scoring import generate_answers, generate_texts, token_stats
from dagster_project.core.methods.runner import training_pairs
from dagster_project.core.probes.build import SETS
from dagster_project.core.probes.score import score_probes

SUBJECT_PROMPTS = ("Who is {s}?", "What do you know about {s}?", "Tell me about {s}.",
                   "Summarise what you know about {s}.", "What is {s} known for?", "Write a short note about {s}.")
UTILITY_SETS = ("retain", "utility", "general")  # what the model must keep; hard positives are locality
RATIOS = {"retain_probe_ratio": "retain_probe_top1", "hard_positive_probe_ratio": "hard_positive_probe_top1",
          "utility_probe_ratio": "utility_probe_top1", "general_knowledge_ratio": "general_probe_top1"}
MIA_CHARS = 1000
OPENING_WORDS, MAX_OPENINGS = 12, 30  # the head of a long document is enough for membership statistics, and bounds the cost


def mia_pairs(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    return [r["prompt"] for r in records], [r["completion"][:MIA_CHARS] for r in records]


def score_documents(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, inputs: dict[str, Any],
                    eval_params: dict[str, Any], relearn: bool) -> dict[str, Any]:
    """Everything `documents_report` needs from one model. `inputs`: probes, forget (records), nonmember
    (records, may be empty), subjects (names); `relearn`: run the relearning attack (the unlearned model)."""
    batch, seed = eval_params["batch_size"], eval_params["seed"]
    probes = inputs["probes"]
    scores: dict[str, Any] = {"probes": score_probes(model, tokenizer, probes, batch)}
    if inputs["nonmember"]:
        scores["tokens"] = {name: token_stats(model, tokenizer, *mia_pairs(inputs[name]), batch)
                            for name in ("forget", "nonmember")}
    if inputs["subjects"]:
        prompts = [t.format(s=name) for name in inputs["subjects"] for t in SUBJECT_PROMPTS]
        scores["subject_answers"] = generate_answers(model, tokenizer, prompts, eval_params["max_new_tokens"], batch)
    else:  # a request of documents or records alone names nobody: continue the forget documents' openings
        openings = [" ".join(r["completion"].split()[:OPENING_WORDS]) for r in inputs["forget"][:MAX_OPENINGS]]
        scores["subject_answers"] = generate_texts(model, tokenizer, openings, eval_params["max_new_tokens"], batch)
    if relearn and eval_params["relearn_steps"] and len(inputs["forget"]) >= 2:
        order = sorted(inputs["forget"], key=lambda r: r["id"])
        random.Random(seed).shuffle(order)
        attacked, measured = order[:len(order) // 2], {r["id"] for r in order[len(order) // 2:]}
        measured_probes = [p for p in probes if p["set"] == "forget" and p["record_id"] in measured]
        if measured_probes:
            victim = relearned_copy(model, tokenizer, training_pairs(attacked), eval_params["relearn_steps"],
                                    batch_size=8, seed=seed)
            scores["relearn"] = {"before": [s["top1"] for s in score_probes(model, tokenizer, measured_probes, batch)],
                                 "after": [s["top1"] for s in score_probes(victim, tokenizer, measured_probes, batch)]}
    return scores


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def leak_rate(answers: Sequence[str], subject_spans: Sequence[set[str]]) -> float:
    """Share of answers (len(SUBJECT_PROMPTS) per subject, in subject order) that state one of their subject's
    forget spans."""
    per_subject = len(SUBJECT_PROMPTS)
    leaks = [any(alias_pattern(span).search(normalise(answer)) for span in subject_spans[i // per_subject])
             for i, answer in enumerate(answers)]
    return _mean(leaks)


def probe_set_metrics(probes: Sequence[dict[str, Any]], scores: Sequence[dict[str, Any]]
                      ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Top-1 and containment per probe set, the forget probes' chance and margin over it; and per set, each
    probe's log-probability lead of the true span over the best distractor (for plots)."""
    by_set: dict[str, list[tuple[dict, dict]]] = {}
    for probe, score in zip(probes, scores, strict=True):
        by_set.setdefault(probe["set"], []).append((probe, score))
    metrics: dict[str, float] = {}
    margins = {}
    for set_name, pairs in ((s, by_set[s]) for s in SETS if s in by_set):
        metrics[f"{set_name}_probe_top1"] = _mean([s["top1"] for _, s in pairs])
        if "contained" in pairs[0][1]:
            metrics[f"{set_name}_probe_containment"] = _mean([s["contained"] for _, s in pairs])
        margins[set_name] = [s["logprobs"][0] - max(s["logprobs"][1:]) for _, s in pairs]
    if "forget" in by_set:
        metrics["probe_chance"] = _mean([1 / (1 + len(p["distractors"])) for p, _ in by_set["forget"]])
        metrics["forget_probe_margin"] = metrics["forget_probe_top1"] - metrics["probe_chance"]
    return metrics, margins


def add_ratios(report: dict[str, dict[str, Any]]) -> None:
    """Every model's probe ratios over the target's (NaN where the target scored 0: a gate on it then fails)."""
    target = report["target"]["metrics"]
    for body in report.values():
        metrics = body["metrics"]
        for ratio, key in RATIOS.items():
            if key in metrics:
                metrics[ratio] = metrics[key] / target[key] if target[key] > 0 else float("nan")


def add_probe_metrics(report: dict[str, Any], probes: Sequence[dict[str, Any]], scores_by_model: dict[str, list]) -> None:
    """Probe metrics (general knowledge on the embedded corpus) added to a TOFU report, with their ratios."""
    for model, scores in scores_by_model.items():
        metrics, _margins = probe_set_metrics(probes, scores)
        report["models"][model]["metrics"].update(metrics)
    add_ratios(report["models"])


def distinctive_spans(inputs: dict[str, Any], forget: Sequence[dict[str, Any]]) -> list[set[str]]:
    """Per subject, the forget probes' spans that no other text of the evaluation holds (non-members, the other
    probes): saying "London" or "British" about a subject tells nothing, saying their order number does."""
    common = " ".join(normalise(text) for text in [*(r["completion"] for r in inputs["nonmember"]),
                                                   *(f"{p['context']} {p['answer']}" for p in inputs["probes"]
                                                     if p["set"] not in ("forget", "paraphrase"))])
    own = [{normalise(p["answer"]) for p in forget if i in p["subjects"]} for i in range(len(inputs["subjects"]))]
    return [{span for span in spans if not alias_pattern(span).search(common)} for spans in own]


def model_metrics(inputs: dict[str, Any], scores: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, plot data) of one model."""
    metrics, margins = probe_set_metrics(inputs["probes"], scores["probes"])
    forget = [p for p in inputs["probes"] if p["set"] == "forget"]
    kept = [metrics[f"{s}_probe_top1"] for s in UTILITY_SETS if f"{s}_probe_top1" in metrics]
    if kept:
        metrics["model_utility"] = m.model_utility(kept).value
    mia_scores: dict[str, list[float]] = {}
    if "tokens" in scores:
        texts = {name: mia_pairs(inputs[name])[1] for name in ("forget", "nonmember")}
        attacks = {name: mia.attack_scores(scores["tokens"][name], texts[name]) for name in ("forget", "nonmember")}
        metrics.update({f"mia_{a}_auc": mia.mia_auc(attacks["forget"][a], attacks["nonmember"][a]) for a in mia.ATTACKS})
        mia_scores = {name: attacks[name]["loss"].tolist() for name in ("forget", "nonmember")}
    answers = scores["subject_answers"]
    if answers:
        metrics["forget_gibberish_rate"] = gibberish_rate(answers)
        metrics["forget_refusal_rate"] = refusal_rate(answers)
    if inputs["subjects"]:
        metrics["forget_leak_rate"] = leak_rate(answers, distinctive_spans(inputs, forget))
    if "relearn" in scores:
        before, after = _mean(scores["relearn"]["before"]), _mean(scores["relearn"]["after"])
        metrics.update(relearn_probe_top1_before=before, relearn_probe_top1_after=after,
                       relearn_probe_recovered=after - before, relearn_measured_probes=float(len(scores["relearn"]["after"])))
    return metrics, {"probe_margins": margins, "mia_loss_scores": mia_scores}


def documents_report(inputs: dict[str, Any], scores_by_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Metrics per model (target first); every model's ratios are over the target's values."""
    report: dict[str, dict[str, Any]] = {}
    for model, scores in scores_by_model.items():
        metrics, plots = model_metrics(inputs, scores)
        report[model] = {"metrics": metrics, **plots}
    add_ratios(report)
    target_utility = report["target"]["metrics"].get("model_utility", 0.0)
    for body in report.values():
        utility = body["metrics"].get("model_utility", 0.0)
        body["metrics"]["utility_ratio"] = utility / target_utility if target_utility > 0 else float("nan")
    counts = {f"{s}_probes": sum(p["set"] == s for p in inputs["probes"]) for s in SETS}
    counts.update(forget_records=len(inputs["forget"]), nonmember_records=len(inputs["nonmember"]),
                  subjects=len(inputs["subjects"]), subject_prompts=len(inputs["subjects"]) * len(SUBJECT_PROMPTS))
    return {"kind": "documents", "models": report, "counts": counts, "reference": None}
