"""Registration: an MLflow run and model version with alias `candidate`, then the DVC push."""

import dagster as dg

from dagster_project.core.tracking.dvc import push
from dagster_project.defs.data import forget_request
from dagster_project.defs.evaluate import evaluation
from dagster_project.defs.resources import PipelineResource, materialize_stage, requests_partitions
from dagster_project.defs.unlearn import unlearned_adapter


@dg.asset(group_name="registry", kinds={"mlflow", "dvc"}, deps=[evaluation, unlearned_adapter, forget_request],
          partitions_def=requests_partitions,
          description="MLflow registered model version (alias candidate) tagged with metrics and DVC md5s.")
def registered_model(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    result = materialize_stage(context, pipeline, "registered_model")
    pushed = push(pipeline.root_path()) if pipeline.dvc_commit else 0
    context.log.info(f"dvc push: {pushed} file(s) sent to the default remote")
    return dg.MaterializeResult(metadata={**(result.metadata or {}), "dvc_pushed_files": pushed})
