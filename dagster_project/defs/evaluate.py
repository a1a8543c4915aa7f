"""Evaluation: TOFU metrics for the target, retain and unlearned models, as a table and a plot."""

import dagster as dg

from dagster_project.core.data.io import read_json
from dagster_project.defs.data import forget_request, forget_set, retain_set, tofu_like_corpus
from dagster_project.defs.models import retain_model, target_model, tokenizer
from dagster_project.defs.resources import PipelineResource, materialize_stage, request_of, requests_partitions
from dagster_project.defs.unlearn import unlearned_adapter

TABLE_METRICS = ("forget_quality", "model_utility", "forget_rouge", "forget_fact_accuracy", "forget_prob",
                 "forget_truth_ratio", "forget_gibberish_rate", "forget_refusal_rate", "mia_loss_auc", "mia_min_k_auc",
                 "priv_leak", "verbmem_rouge", "forget_extraction_strength", "relearn_rouge_after", "retain_rouge",
                 "retain_fact_accuracy", "retain_prob", "real_world_rouge", "real_world_prob", "world_rouge")


def metrics_table(report: dict) -> str:
    models = [m for m in ("target", "retain", "unlearned") if m in report["models"]]
    lines = ["| metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for key in TABLE_METRICS:
        values = [report["models"][m]["metrics"].get(key) for m in models]
        lines.append(f"| {key} | " + " | ".join("—" if v is None else f"{v:.4g}" for v in values) + " |")
    return "\n".join(lines)


@dg.asset(group_name="evaluation", kinds={"pytorch", "dvc"}, partitions_def=requests_partitions,
          deps=[target_model, retain_model, unlearned_adapter, forget_set, retain_set, tofu_like_corpus, tokenizer,
                forget_request],
          description="Prob, ROUGE-L recall, truth ratio, forget quality and model utility per model.")
def evaluation(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    layout = pipeline.layout(request_of(context))
    result = materialize_stage(context, pipeline, "evaluation")
    report = read_json(layout.eval_dir / "report.json")
    return dg.MaterializeResult(metadata={
        **(result.metadata or {}),
        "metrics_table": dg.MetadataValue.md(metrics_table(report)),
        "plot": dg.MetadataValue.path(str(layout.eval_dir / "metrics.png")),
    })
