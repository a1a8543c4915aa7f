"""Data assets: the synthetic corpus, the parsed forget request, and the forget/retain sets."""

import dagster as dg

from dagster_project.defs.resources import PipelineResource, materialize_stage, requests_partitions


@dg.asset(group_name="data", kinds={"python", "dvc"},
          description="Deterministic TOFU-style corpus of fictitious people, world facts and splits.")
def tofu_like_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "tofu_like_corpus")


@dg.asset(group_name="data", kinds={"python"}, partitions_def=requests_partitions, 
          description="The forget request file, validated (schema, size, path) and normalised.")
def forget_request(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "forget_request")


@dg.asset(group_name="data", kinds={"python", "dvc"}, deps=[tofu_like_corpus, forget_request], partitions_def=requests_partitions, 
          description="QA records of the subjects to forget (personal data: metadata holds counts and hashes only).")
def forget_set(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "forget_set")


@dg.asset(group_name="data", kinds={"python", "dvc"}, deps=[tofu_like_corpus, forget_request], partitions_def=requests_partitions, 
          description="QA records of every trained person not being forgotten.")
def retain_set(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "retain_set")
