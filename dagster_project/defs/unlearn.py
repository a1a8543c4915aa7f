"""The unlearning job: the request's method applied to the target model (a LoRA adapter by default)."""

import dagster as dg

from dagster_project.core.data.io import read_json, read_jsonl
from dagster_project.core.data.validation import validate_revealed_set, validate_snap_data
from dagster_project.core.stages import load_snap_data
from dagster_project.defs.data import forget_request, forget_set, retain_set
from dagster_project.defs.deployment import training_op_tags, training_pool
from dagster_project.defs.models import target_model, tokenizer
from dagster_project.defs.resources import PipelineResource, materialize_stage, request_of, requests_partitions
from dagster_project.defs.validation import check_result


@dg.asset(group_name="unlearning", kinds={"python", "dvc"}, partitions_def=requests_partitions,
          deps=[target_model, tokenizer, forget_set, retain_set, forget_request],
          description="SNAP's negative instructions with obliterated responses and its hard positives (answered by "
                      "θ₀); empty files when the request's method is not SNAP.")
def snap_data(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "snap_data")


@dg.asset_check(asset=snap_data, blocking=True, additional_deps=[forget_set],
                description="GX: both sets non-empty, no blank text, responses neither gibberish nor leaking a forget value")
def snap_data_is_valid(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
    layout = pipeline.layout(request_of(context))
    data = load_snap_data(layout)
    if not data["negative"] and not data["hard_positives"]:
        return dg.AssetCheckResult(passed=True, description="not a SNAP request: nothing to validate")
    return check_result(validate_snap_data(data["negative"], data["hard_positives"], read_jsonl(layout.forget_set)))


@dg.asset(group_name="unlearning", kinds={"pytorch", "dvc"}, deps=[target_model, tokenizer, forget_set, forget_request],
          partitions_def=requests_partitions,
          description="Reveal (forget_data: reveal requests): what the target model reveals about the subjects, chosen "
                      "by a NeuralUCB bandit over instruction templates; the relevant, deduplicated responses are the "
                      "forget set. Empty for other requests.")
def revealed_forget_set(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "revealed_forget_set")


@dg.asset_check(asset=revealed_forget_set, blocking=True,
                description="GX: non-empty, unique ids and responses, no blank text, relevance at or above the threshold")
def revealed_forget_set_is_valid(context: dg.AssetCheckExecutionContext,
                                 pipeline: PipelineResource) -> dg.AssetCheckResult:
    layout = pipeline.layout(request_of(context))
    manifest = read_json(layout.revealed_dir / "manifest.json")
    if not manifest["built"]:
        return dg.AssetCheckResult(passed=True, description="not a reveal request: nothing to validate")
    records = read_jsonl(layout.revealed_dir / "revealed.jsonl")
    return check_result(validate_revealed_set(records, manifest["config"]["relevance_threshold"]))


@dg.asset(group_name="unlearning", kinds={"pytorch", "dvc"}, partitions_def=requests_partitions,
          deps=[target_model, tokenizer, forget_set, retain_set, forget_request],
          description="WAGLE weight attribution for requests with a `wagle` block: one gradient pass at θ₀, the "
                      "packed mask of the top `ratio` weights (full-weight runs) and the LoRA target modules holding "
                      "the most attribution (LoRA runs); reused from a content-hash cache when model and data match.")
def weight_attribution(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "weight_attribution")


@dg.asset(group_name="unlearning", kinds={"pytorch", "dvc"}, partitions_def=requests_partitions,
          deps=[target_model, tokenizer, forget_set, retain_set, forget_request, snap_data, weight_attribution,
                revealed_forget_set],
          # one training step at a time across runs: the lock file of materialize_stage's slot, or Dagster's pool on
          # Kubernetes (defs/deployment.py); a crashed step retries
          pool=training_pool(), retry_policy=dg.RetryPolicy(max_retries=2, delay=10),
          op_tags=training_op_tags(),  # a GPU pod in cluster mode (defs/deployment.py)
          description="Unlearned adapter (mode=lora) or model (mode=full) for the request; for a reveal request the "
                      "merged model of the release rounds, with each round's forget/retain LoRA modules under rounds/.")
def unlearned_adapter(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "unlearned_adapter")
