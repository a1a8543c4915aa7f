"""The unlearning job: the request's method applied to the target model (a LoRA adapter by default)."""

import dagster as dg

from dagster_project.defs.data import forget_request, forget_set, retain_set
from dagster_project.defs.models import target_model, tokenizer
from dagster_project.defs.resources import PipelineResource, materialize_stage


@dg.asset(group_name="unlearning", kinds={"pytorch", "dvc"},
          deps=[target_model, tokenizer, forget_set, retain_set, forget_request],
          description="Unlearned adapter (mode=lora) or model (mode=full) for the request.")
def unlearned_adapter(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "unlearned_adapter")
