"""Model assets: tokenizer, target model (all people) and retain model (the gold model for forget quality)."""

import dagster as dg

from dagster_project.defs.data import SEARCHED_SOURCES, retain_set, tofu_like_corpus
from dagster_project.defs.resources import PipelineResource, materialize_stage, requests_partitions


@dg.asset(group_name="models", kinds={"python", "dvc"}, deps=[tofu_like_corpus, *SEARCHED_SOURCES],
          description="The base model's tokenizer, or a byte-level BPE trained on the corpus (or sources) text.")
def tokenizer(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "tokenizer")


@dg.asset(group_name="models", kinds={"pytorch", "dvc"}, deps=[tofu_like_corpus, tokenizer, "train_source"],
          description="The model requests are unlearned from: fine-tuned here on the corpus or the train source "
                      "(cached by content hash), or your already fine-tuned model as it is.")
def target_model(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "target_model")


@dg.asset(group_name="models", kinds={"pytorch", "dvc"}, deps=[tofu_like_corpus, tokenizer, retain_set],
          partitions_def=requests_partitions,
          description="The same recipe without the forget subjects: the gold standard of forgetting (not built on "
                      "your own sources, whose evaluation needs none).")
def retain_model(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "retain_model")
