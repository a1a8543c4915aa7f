"""Data assets: the synthetic corpus, the parsed forget request, the forget/retain sets and the cleaned
training set."""

import dagster as dg

from dagster_project.core.data.io import read_json
from dagster_project.core.layout import uses_sources
from dagster_project.defs.resources import PipelineResource, materialize_stage, request_of, requests_partitions

SEARCHED_SOURCES = ["train_source", "retain_source"]  # defs/sources.py, by name


@dg.asset(group_name="data", kinds={"python", "dvc"},
          description="Deterministic TOFU-style corpus of fictitious people, world facts and splits.")
def tofu_like_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "tofu_like_corpus")


@dg.asset(group_name="data", kinds={"python", "dvc"}, partitions_def=requests_partitions,
          deps=[tofu_like_corpus],  # after it: the request's subjects are checked against the corpus first
          description="The forget request file, validated completely (schema, size, path, method, hyper-parameters "
                      "and their bounds, subjects) and normalised; its attached documents cut into passages.")
def forget_request(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    return materialize_stage(context, pipeline, "forget_request")


@dg.asset(group_name="data", kinds={"python", "dvc"}, deps=[tofu_like_corpus, forget_request, *SEARCHED_SOURCES],
          partitions_def=requests_partitions,
          description="What to forget (personal data: metadata holds counts and hashes only): the subjects' QA records "
                      "of the corpus, or, on your own sources, every record about the subjects (names and aliases, "
                      "BM25, MiniLM; scored, thresholded), the records named by id and the attached documents.")
def forget_set(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    result = materialize_stage(context, pipeline, "forget_set")
    report_path = pipeline.layout(request_of(context)).collection_dir / "report.json"
    if not uses_sources(pipeline.params()) or not report_path.exists():
        return result
    report = read_json(report_path)  # counts, a histogram and hashed ids: no names, no text
    return dg.MaterializeResult(metadata={
        **(result.metadata or {}),
        "records_per_subject": dg.MetadataValue.json(report["per_subject"]),
        "records_per_source": dg.MetadataValue.json(report["per_source"]),
        "score_histogram": dg.MetadataValue.md(histogram_table(report)),
        "score_plot": dg.MetadataValue.path(str(report_path.with_name("scores.png"))),
        "record_ids_sha256": dg.MetadataValue.json(report["record_ids_sha256"]),
    })


def histogram_table(report: dict) -> str:
    """The collection's score histogram as a Markdown table of its non-empty bins, the threshold marked."""
    counts, edges = report["score_histogram"]["counts"], report["score_histogram"]["edges"]
    rows = [f"| {edges[i]:.2f}–{edges[i + 1]:.2f}{' ◀ threshold' if edges[i] <= report['threshold'] < edges[i + 1] else ''} "
            f"| {count} |" for i, count in enumerate(counts) if count]
    return (f"Threshold {report['threshold']:.2f} (collected at or above).\n\n"
            "| best score of a searched record | records |\n|---|---|\n" + "\n".join(rows))


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
