"""Evaluation: knowledge probes, then TOFU metrics (target, retain, unlearned) or, on your own sources, the
documents report (target, unlearned), as a table and a plot."""

import dagster as dg

from dagster_project.core.checks import probe_checks
from dagster_project.core.data.io import read_json
from dagster_project.defs.data import forget_request, forget_set, retain_set, tofu_like_corpus
from dagster_project.defs.models import retain_model, target_model, tokenizer
from dagster_project.defs.resources import PipelineResource, materialize_stage, request_of, requests_partitions
from dagster_project.defs.unlearn import revealed_forget_set, unlearned_adapter
from dagster_project.defs.validation import check_result

TABLE_METRICS = ("forget_quality", "model_utility", "forget_rouge", "forget_fact_accuracy", "forget_prob",
                 "forget_truth_ratio", "forget_gibberish_rate", "forget_refusal_rate", "mia_loss_auc", "mia_min_k_auc",
                 "priv_leak", "verbmem_rouge", "forget_extraction_strength", "relearn_rouge_after", "retain_rouge",
                 "retain_fact_accuracy", "retain_fact_ratio", "retain_prob", "real_world_rouge", "real_world_prob",
                 "world_rouge", "general_probe_top1", "general_knowledge_ratio")
DOCUMENT_TABLE_METRICS = ("forget_probe_top1", "probe_chance", "forget_probe_containment", "paraphrase_probe_top1",
                          "retain_probe_top1", "hard_positive_probe_top1", "utility_probe_top1", "general_probe_top1",
                          "model_utility", "utility_ratio", "hard_positive_probe_ratio", "general_knowledge_ratio",
                          "mia_loss_auc", "mia_min_k_plus_plus_auc", "forget_gibberish_rate", "forget_refusal_rate",
                          "forget_leak_rate", "relearn_probe_top1_after")


def metrics_table(report: dict) -> str:
    models = [m for m in ("target", "retain", "unlearned") if m in report["models"]]
    keys = DOCUMENT_TABLE_METRICS if report.get("kind") == "documents" else TABLE_METRICS
    lines = ["| metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for key in keys:
        values = [report["models"][m]["metrics"].get(key) for m in models]
        if any(v is not None for v in values):
            lines.append(f"| {key} | " + " | ".join("—" if v is None else f"{v:.4g}" for v in values) + " |")
    return "\n".join(lines)


@dg.asset(group_name="evaluation", kinds={"python", "dvc"}, partitions_def=requests_partitions,
          deps=[forget_set, retain_set, revealed_forget_set, target_model, forget_request, "utility_source",
                "nonmember_source"],
          description="Cloze probes: a salient span of a record masked and scored against same-kind distractors. On "
                      "your own sources: forget, retain, hard-positive and utility records, θ₀'s paraphrases and "
                      "general knowledge; on the corpus, general knowledge when params.yaml asks (`probes:`).")
def knowledge_probes(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "knowledge_probes")


@dg.asset_check(asset=knowledge_probes, blocking=True,
                description="GX: unique ids, known sets, non-blank answers, distinct distractors none equal to the answer")
def knowledge_probes_are_valid(context: dg.AssetCheckExecutionContext,
                               pipeline: PipelineResource) -> dg.AssetCheckResult:
    outcomes = probe_checks(pipeline.layout(request_of(context)))
    if outcomes is None:
        return dg.AssetCheckResult(passed=True, description="no probes asked for: nothing to validate")
    return check_result(*outcomes)


@dg.asset(group_name="evaluation", kinds={"pytorch", "dvc"}, partitions_def=requests_partitions,
          deps=[target_model, retain_model, unlearned_adapter, forget_set, retain_set, tofu_like_corpus, tokenizer,
                forget_request, knowledge_probes, "nonmember_source"],
          description="TOFU per model (Prob, ROUGE-L recall, truth ratio, forget quality, model utility), or on your "
                      "own sources the documents report: probe top-1 per set, MIA against non-members, gibberish, "
                      "refusal and leaks on prompts about the subjects, the relearning attack.")
def evaluation(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    layout = pipeline.layout(request_of(context))
    result = materialize_stage(context, pipeline, "evaluation")
    report = read_json(layout.eval_dir / "report.json")
    return dg.MaterializeResult(metadata={
        **(result.metadata or {}),
        "metrics_table": dg.MetadataValue.md(metrics_table(report)),
        "plot": dg.MetadataValue.path(str(layout.eval_dir / "metrics.png")),
    })
