"""Data assets: the synthetic corpus, the parsed forget request, the forget/retain sets and the cleaned
training set."""

import dagster as dg

from dagster_project.defs.resources import PipelineResource, materialize_stage, requests_partitions

SEARCHED_SOURCES = ["train_source", "retain_source"]  # defs/sources.py, by name


@dg.asset(group_name="data", kinds={"python", "dvc"},
          description="Deterministic TOFU-style corpus of fictitious people, world facts and splits.")
def tofu_like_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "tofu_like_corpus")


@dg.asset(group_name="data", kinds={"python", "dvc"}, partitions_def=requests_partitions,
          description="The forget request file, validated (schema, size, path) and normalised; its attached "
                      "documents cut into passages.")
def forget_request(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "forget_request")


@dg.asset(group_name="data", kinds={"python", "dvc"}, deps=[tofu_like_corpus, forget_request, *SEARCHED_SOURCES],
          partitions_def=requests_partitions,
          description="What to forget (personal data: metadata holds counts and hashes only): the subjects' QA records "
                      "of the corpus, or, on your own sources, every record about the subjects (names and aliases, "
                      "BM25, MiniLM; scored, thresholded), the records named by id and the attached documents.")
def forget_set(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "forget_set")


@dg.asset(group_name="data", kinds={"python", "dvc"}, deps=[tofu_like_corpus, forget_request, forget_set,
                                                            *SEARCHED_SOURCES],
          partitions_def=requests_partitions,
          description="What unlearning keeps: QA records of every other trained person, or, on your own sources, hard "
                      "positives (records closest to the forget documents that name no subject) and a seeded sample.")
def retain_set(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "retain_set")


@dg.asset(group_name="data", kinds={"python", "dvc"}, deps=[tofu_like_corpus, forget_set, "train_source"],
          partitions_def=requests_partitions,
          description="The training data without the forget records, each train file in its own format: what any "
                      "later fine-tune or an exact retrain must use, so the forgotten people do not come back.")
def cleaned_training_set(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "cleaned_training_set")
