"""Model assets: tokenizer, target model (all people) and retain model (the gold model for forget quality)."""

import dagster as dg

from dagster_project.defs.data import retain_set, tofu_like_corpus
from dagster_project.defs.resources import PipelineResource, materialize_stage, requests_partitions


@dg.asset(group_name="models", kinds={"python", "dvc"}, deps=[tofu_like_corpus],
          description="Byte-level BPE tokenizer trained on the corpus text.")
def tokenizer(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "tokenizer")


@dg.asset(group_name="models", kinds={"pytorch", "dvc"}, deps=[tofu_like_corpus, tokenizer],
          description="Tiny Llama fine-tuned on every trained person and the world facts (cached by content hash).")
def target_model(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "target_model")


@dg.asset(group_name="models", kinds={"pytorch", "dvc"}, deps=[tofu_like_corpus, tokenizer, retain_set],
          partitions_def=requests_partitions,
          description="The same recipe without the forget subjects: the gold standard of forgetting.")
def retain_model(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "retain_model")
