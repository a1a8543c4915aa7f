"""Promotion gates: when a candidate may become the `champion` (params.yaml `promotion:`, one place).

    gates = load_gates(params)
    results = check_gates(gates, candidate_metrics, still_forgotten={"req-a": (now, then)})
    promoted = all(r.passed for r in results)

A candidate must forget (forget quality, TOFU's KS-test p-value against the retain model), stay useful
(model utility as a fraction of the target's) and local (the retained people's fact accuracy as a fraction of
the target's: NPO on the real tier keeps 0.96x utility while that accuracy falls from 0.57 to 0.13), answer sensibly (gibberish and refusal rate bounds) and
keep every earlier request still in force forgotten: on each such request's forget set its answers may
not recall more than they did when that request was promoted (`regression_tolerance`, absolute).

A request on the user's own data has no retain model, so its knowledge probes decide instead: forget-probe
top-1 at most `forget_probe_margin_max` above chance, model utility (retain, utility and general-knowledge
probes) and hard-positive top-1 kept as fractions of the target's. Every model whose evaluation scored
general-knowledge probes (every real model) must also keep `general_knowledge_ratio_min` of the target's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster_project.core.methods.base import config_from_hyperparameters

# what "still forgotten" compares, on a request's own forget set: higher = more of it recalled
RECALL_METRICS = ("forget_rouge", "forget_fact_accuracy", "forget_paraphrase_rouge", "relearn_rouge_after",
                  "forget_probe_top1", "forget_probe_containment", "paraphrase_probe_top1", "relearn_probe_top1_after")


@dataclass(frozen=True)
class Gates:
    forget_quality_min: float = 0.05  # TOFU reads p > 0.05 as "indistinguishable from the retain model"
    utility_ratio_min: float = 0.95  # model utility / the target model's
    retain_fact_ratio_min: float = 0.9  # retained people's fact accuracy / the target's: locality, which utility misses
    gibberish_rate_max: float = 0.25  # share of forget answers that are word salad (forgetting by breaking)
    refusal_rate_max: float = 1.0  # share of forget answers that refuse; 1.0 = no bound (SNAP refuses by design)
    regression_tolerance: float = 0.05  # how much more an earlier forget set may be recalled (absolute)
    forget_probe_margin_max: float = 0.10  # own data: forget-probe top-1 at most chance + this
    hard_positive_ratio_min: float = 0.95  # own data: hard-positive probe top-1 / the target's
    general_knowledge_ratio_min: float = 0.95  # general-knowledge probe top-1 / the target's (real models)


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float
    bound: float
    detail: str  # one line a person reads; names and request ids only, never forget-set text

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "value": self.value, "bound": self.bound, "detail": self.detail}


def load_gates(params: dict[str, Any]) -> Gates:
    """params.yaml's `promotion:` section over the defaults, each key checked by name and type."""
    return config_from_hyperparameters(Gates, dict(params.get("promotion") or {}), section="promotion")


def recall_regressions(now: dict[str, float], then: dict[str, float], tolerance: float) -> list[str]:
    """The recall metrics that rose by more than `tolerance` from `then` (at promotion) to `now`."""
    return [f"{key} {then[key]:.3g} -> {now[key]:.3g}" for key in RECALL_METRICS
            if key in then and key in now and now[key] > then[key] + tolerance]


def check_gates(gates: Gates, metrics: dict[str, float],
                still_forgotten: dict[str, tuple[dict[str, float], dict[str, float]]] | None = None) -> list[GateResult]:
    """Every gate on a candidate's `metrics` (its evaluation on its own request, with `utility_ratio`), and one
    `still_forgotten:<request>` gate per earlier request in force: (its metrics now, at its promotion)."""
    if "forget_probe_top1" in metrics and "forget_quality" not in metrics:  # own data: the documents report
        bounds = [("forget_probe_margin", "forget_probe_margin", gates.forget_probe_margin_max, False),
                  ("utility_ratio", "utility_ratio", gates.utility_ratio_min, True),
                  ("hard_positive_ratio", "hard_positive_probe_ratio", gates.hard_positive_ratio_min, True)]
    else:
        bounds = [("forget_quality", "forget_quality", gates.forget_quality_min, True),
                  ("utility_ratio", "utility_ratio", gates.utility_ratio_min, True),
                  ("retain_fact_ratio", "retain_fact_ratio", gates.retain_fact_ratio_min, True)]
    bounds += [("gibberish_rate", "forget_gibberish_rate", gates.gibberish_rate_max, False),
               ("refusal_rate", "forget_refusal_rate", gates.refusal_rate_max, False)]
    if "general_knowledge_ratio" in metrics:
        bounds.append(("general_knowledge_ratio", "general_knowledge_ratio", gates.general_knowledge_ratio_min, True))
    results = []
    for gate, key, bound, at_least in bounds:
        if key not in metrics:
            raise KeyError(f"gate {gate}: the candidate has no metric {key!r} (was it evaluated by this version?)")
        value = float(metrics[key])
        passed = value >= bound if at_least else value <= bound  # NaN (nothing to measure against) fails both
        relation = (">=" if at_least else "<=") if passed else ("<" if at_least else ">")
        results.append(GateResult(gate, passed, value, bound, f"{key} {value:.3g} {relation} {bound:g}"))
    for request_id, (now, then) in sorted((still_forgotten or {}).items()):
        rises = recall_regressions(now, then, gates.regression_tolerance)
        worst = max((now[k] - then[k] for k in RECALL_METRICS if k in now and k in then), default=0.0)
        detail = (f"request {request_id} recalled more than at its promotion: " + ", ".join(rises) if rises
                  else f"request {request_id} still forgotten (largest rise {worst:+.3g})")
        results.append(GateResult(f"still_forgotten:{request_id}", not rises, worst, gates.regression_tolerance, detail))
    return results
