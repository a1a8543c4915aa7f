"""Compare unlearning methods on one request: each method × seed starts from the same target model
and is judged against the same retain model; figures are mean ± std over seeds.

    .venv/bin/python bench/methods_table.py --seeds 0 1 2      # after `make demo`

With ~100 forget items the forget-quality p-value swings by an order of magnitude from one run to
the next, so a single seed proves nothing; and forget quality and utility alone can be gamed (a known
failure of unlearning metrics), so every row also carries refusal and gibberish rates, the relearning attack
and a sample forget answer.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dagster_project.core.data.io import fingerprint, md5_file, read_json, read_jsonl, weights_md5, write_json
from dagster_project.core.layout import Layout, uses_sources

# (metric key, column title); "utility_ratio" and "seconds" are added per run below
COLUMNS: tuple[tuple[str, str], ...] = (
    ("forget_quality", "forget quality"),
    ("model_utility", "model utility"),
    ("utility_ratio", "utility / target"),
    ("forget_refusal_rate", "refusal rate"),
    ("forget_gibberish_rate", "gibberish rate"),
    ("forget_fact_accuracy", "forget fact acc."),
    ("retain_fact_accuracy", "retain fact acc."),
    ("relearn_rouge_recovered", "relearn ROUGE recovered"),
    ("seconds", "wall time (s)"),
)


# the same for a request on the user's own data: knowledge probes, no retain model (eval/documents.py)
DOCUMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("forget_probe_top1", "forget probe top-1"),
    ("paraphrase_probe_top1", "paraphrased top-1"),
    ("forget_probe_containment", "forget completion"),
    ("retain_probe_top1", "retain top-1"),
    ("hard_positive_probe_top1", "hard-positive top-1"),
    ("utility_probe_top1", "utility top-1"),
    ("general_probe_top1", "general knowledge top-1"),
    ("utility_ratio", "utility / target"),
    ("mia_loss_auc", "MIA AUC (LOSS)"),
    ("forget_gibberish_rate", "gibberish rate"),
    ("forget_leak_rate", "leak rate"),
    ("relearn_probe_top1_after", "relearned top-1"),
    ("seconds", "wall time (s)"),
)


def table_columns(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return DOCUMENT_COLUMNS if uses_sources(params) else COLUMNS


@dataclass(frozen=True)
class MethodRun:
    method: str
    seed: int
    metrics: dict[str, float]
    sample_answer: str  # the first forget question's answer: synthetic data, shown only in local reports


def utility_ratio(utility: float, target_utility: float) -> float:
    """Utility as a share of the target's; NaN when the target has none (an untrained micro model)."""
    return utility / target_utility if target_utility > 0 else float("nan")


def ratios_to_target(metrics: dict[str, float], target: dict[str, float]) -> dict[str, float]:
    """A candidate's locality as shares of the target's: `utility_ratio` (model utility) and `retain_fact_ratio`
    (fact accuracy on the retained people: utility alone hides a model that keeps fluency but loses them)."""
    target_facts = target["retain_fact_accuracy"]
    return {"utility_ratio": utility_ratio(metrics["model_utility"], target["model_utility"]),
            # a target that recalls none of those facts has none to lose (a micro test model): 1.0, not NaN
            "retain_fact_ratio": metrics["retain_fact_accuracy"] / target_facts if target_facts > 0 else 1.0}


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value); NaN in, NaN out."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def run_methods(
    layout: Layout,
    params: dict[str, Any],
    methods: Sequence[str],
    seeds: Sequence[int],
    mode: str = "lora",
    hyperparameters: Callable[[str], dict[str, Any]] | None = None,
    keep_dir: Path | None = None,
    wagle: dict[str, Any] | None = None,
    use_cache: bool = True,
) -> tuple[dict[str, dict[str, float]], list[MethodRun]]:
    """Train and evaluate every (method, seed); returns the target/retain metrics and one MethodRun each.

    Needs the request's target and retain models and datasets (a `make demo` run); their scores come from
    the evaluation cache. `hyperparameters(method)` defaults to params.yaml's `unlearn.<method>` section.
    `keep_dir`: keep each adapter/model in `keep_dir/<method>-seed<seed>` (default: discarded).
    `wagle`: a request's `wagle` block ({ratio[, mu, random]}) to run every method under the pipeline's WAGLE
    mask (one attribution pass, shared by all methods and seeds); each run's metrics then carry
    `attribution_seconds`.
    `use_cache`: a (method, seed) run whose inputs and code were all seen before is read back from
    `.cache/method-runs/` instead of retrained, so a long grid resumes where it stopped (never with `keep_dir`).
    """
    from dagster_project.core.data.corpus import load_corpus
    from dagster_project.core.data.request import WagleSpec
    from dagster_project.core.eval.report import build_eval_sets, build_report
    from dagster_project.core.methods.registry import get_method
    from dagster_project.core.methods.runner import run_unlearning
    from dagster_project.core.model.tiny_llama import load_tokenizer
    from dagster_project.core.stages import (
        runner_options,
        snap_datasets,
        unlearning_retain_records,
        wagle_attribution,
        wagle_inputs,
    )

    for method in methods:
        get_method(method)  # fail on a typo before an hour of training
    own = uses_sources(params)
    needed = (layout.target_model_dir, layout.forget_set, layout.retain_set,
              *((layout.probes_dir,) if own else (layout.retain_model_dir,)))
    for path in needed:
        if not path.exists():
            raise FileNotFoundError(f"{layout.rel(path)} is missing: run the request first (`make demo`, or the "
                                    f"profile's make target), or `dvc pull`")
    forget, retain = read_jsonl(layout.forget_set), read_jsonl(layout.retain_set)
    if own:  # the documents report: probes against the target model, no retain model
        from dagster_project.core.own_data import documents_evaluation, evaluation_inputs, forget_documents

        eval_sets = evaluation_inputs(layout)
        forget = forget_documents(layout)
        references = {"target": documents_evaluation(layout, params, layout.target_model_dir)["models"]["target"]}
    else:
        eval_sets = build_eval_sets(load_corpus(layout.corpus_dir), forget, retain, params["eval"])
        reference = reference_scores(layout, params, eval_sets)
        references = build_report(eval_sets, reference)["models"]
    retain = unlearning_retain_records(layout, params)  # what the pipeline's unlearning stage keeps
    tokenizer = load_tokenizer(layout.tokenizer_dir)
    hyperparameters = hyperparameters or (lambda m: dict(params["unlearn"].get(m) or {}))
    eval_params = params["eval"]

    def method_data(method: str, seed: int) -> dict | None:
        # the pipeline's own snap_data builder (hard positives answered by θ₀), so SNAP trains here as it does there
        if method != "snap":
            return None
        config = get_method(method).config_cls.from_hyperparameters({**hyperparameters(method), "seed": seed})
        return snap_datasets(layout, params, config.seed, config.neighbours)

    restriction: dict[str, Any] = {}
    attribution: dict[str, Any] = {}
    spec = None if wagle is None else WagleSpec(**wagle).model_dump()  # validated, completed like a request's
    if spec is not None:
        with tempfile.TemporaryDirectory(prefix="wagle-") as attribution_dir:  # its contents are loaded below
            attribution = wagle_attribution(layout, params, spec, Path(attribution_dir))
            restriction = wagle_inputs(Path(attribution_dir), mode)
    inputs = {"code": _source_fingerprint(), "mode": mode, "wagle": spec,
              "restriction": {k: v for k, v in attribution.items() if k in ("mask_sha256", "lora_targets")},
              "target": weights_md5(layout.target_model_dir),
              "references": references, "forget": forget, "retain": retain, "eval_sets": eval_sets, "eval": eval_params}
    runs = []
    for method in methods:
        for seed in seeds:
            key = fingerprint({**inputs, "method": method, "seed": seed, "hyperparameters": hyperparameters(method)})
            cached = layout.cache_dir / "method-runs" / f"{key}.json"
            if use_cache and keep_dir is None and cached.exists():
                runs.append(MethodRun(**read_json(cached)))
                continue
            with tempfile.TemporaryDirectory() as tmp:
                out_dir = keep_dir / f"{method}-seed{seed}" if keep_dir else Path(tmp) / "candidate"
                started = time.perf_counter()
                run_unlearning(layout.target_model_dir, tokenizer, forget, retain, method, mode,
                               {**hyperparameters(method), "seed": seed}, out_dir, method_data=method_data(method, seed),
                               options=runner_options(params), **restriction)
                seconds = time.perf_counter() - started
                if own:  # no sample answer: on the user's own data it would print personal data into tables
                    metrics = documents_evaluation(layout, params, out_dir, use_cache=False)["models"]["unlearned"]["metrics"]
                    sample_answer = ""
                else:
                    metrics, sample_answer = evaluate_candidate(out_dir, eval_sets, reference, eval_params)
            metrics["seconds"] = seconds
            if wagle is not None:
                metrics["attribution_seconds"] = attribution["attribution_seconds"]
            runs.append(MethodRun(method, seed, metrics, sample_answer))
            write_json(cached, dataclasses.asdict(runs[-1]))  # local cache only: never logged or versioned
    return {role: body["metrics"] for role, body in references.items()}, runs


def reference_scores(layout: Layout, params: dict[str, Any], eval_sets: dict) -> dict[str, dict]:
    """The target and retain models' scores on `eval_sets` (cached by model bytes): what candidates are
    reported against."""
    from dagster_project.core.stages import cached_scores

    return {role: cached_scores(layout, params, role, path, eval_sets)
            for role, path in (("target", layout.target_model_dir), ("retain", layout.retain_model_dir))}


def evaluate_candidate(model_dir: Path, eval_sets: dict, reference: dict[str, dict],
                       eval_params: dict[str, Any]) -> tuple[dict[str, float], str]:
    """A candidate model folder scored like the pipeline's evaluation: its metrics against the `reference`
    scores (from `reference_scores`), with `utility_ratio` to the target's, and its first forget answer."""
    from dagster_project.core.eval.report import build_report, score_model
    from dagster_project.core.eval.standalone import load_for_eval

    model, tokenizer = load_for_eval(model_dir)
    scores = score_model(model, tokenizer, eval_sets, eval_params["batch_size"], eval_params["max_new_tokens"],
                         eval_params["relearn_steps"], eval_params["seed"])
    models = build_report(eval_sets, {**reference, "candidate": scores})["models"]
    metrics = models["candidate"]["metrics"]
    metrics.update(ratios_to_target(metrics, models["target"]["metrics"]))
    return metrics, scores["forget"]["generation"][0]


def mean_std(values: Sequence[float]) -> str:
    """`values` as one table cell, "mean ± std" over seeds (the methods table's number format)."""
    return _cell(*_stats(values))


# the code a run's numbers depend on beyond its hashed inputs (data, model bytes, mask, hyper-parameters)
RESULT_CODE = ("methods", "attribution", "eval", "model", "probes", "data/snap.py")


def _source_fingerprint() -> str:
    """Hash of the code behind a run's numbers: a cached run is only reused by the code that produced it."""
    core = Path(__file__).resolve().parents[1]
    files = sorted(f for part in RESULT_CODE for f in ([core / part] if part.endswith(".py") else (core / part).rglob("*.py")))
    return fingerprint({str(f.relative_to(core)): md5_file(f) for f in files})


def summarise(runs: Sequence[MethodRun]) -> dict[str, dict[str, tuple[float, float]]]:
    """method -> metric -> (mean, std over seeds), for every metric of the runs."""
    by_method: dict[str, list[MethodRun]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    return {method: {key: _stats([r.metrics[key] for r in group]) for key in group[0].metrics}
            for method, group in by_method.items()}


def _cell(mean: float, std: float | None) -> str:
    fmt = (lambda v: f"{v:.2g}") if abs(mean) < 0.01 and mean != 0 else (lambda v: f"{v:.3g}")
    return fmt(mean) if std is None else f"{fmt(mean)} ± {std:.2g}"


def markdown_table(references: dict[str, dict[str, float]], runs: Sequence[MethodRun],
                   columns: Sequence[tuple[str, str]] = COLUMNS) -> str:
    """One row per reference model and per method (mean ± std), plus each method's seed-0 sample answer (none on
    the user's own data: `DOCUMENT_COLUMNS`)."""
    summary = summarise(runs)
    samples_shown = columns is not DOCUMENT_COLUMNS
    header = "| model | " + " | ".join(title for _, title in columns) + " |"
    header += " sample forget answer (first seed) |" if samples_shown else ""
    lines = [header, "|---" * (len(columns) + 1 + samples_shown) + "|"]
    target_utility = references["target"]["model_utility"]
    for role, metrics in references.items():
        values = {**metrics, "utility_ratio": utility_ratio(metrics["model_utility"], target_utility)}
        cells = [_cell(values[k], None) if k in values else "—" for k, _ in columns]
        lines.append(f"| {role} | " + " | ".join(cells) + (" | — |" if samples_shown else " |"))
    samples = {}
    for run in runs:
        samples.setdefault(run.method, run.sample_answer.replace("|", "/").strip() or "(empty)")
    for method, stats in summary.items():
        cells = [_cell(*stats[k]) if k in stats else "—" for k, _ in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + (f" | {samples[method][:80]} |" if samples_shown else " |"))
    return "\n".join(lines)
