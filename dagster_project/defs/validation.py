"""Great Expectations checks on every dataset; blocking, so bad data never reaches unlearning."""

import dagster as dg

from dagster_project.core.checks import forget_set_checks, retain_set_checks
from dagster_project.core.data.corpus import load_corpus
from dagster_project.core.data.io import read_json
from dagster_project.core.data.validation import CheckOutcome, validate_qa_dataset
from dagster_project.defs.data import forget_set, retain_set, tofu_like_corpus
from dagster_project.defs.resources import PipelineResource, request_of


def check_result(*outcomes: CheckOutcome) -> dg.AssetCheckResult:
    failures = [f for o in outcomes for f in o.failures()]
    return dg.AssetCheckResult(
        passed=all(o.passed for o in outcomes),
        description="; ".join(failures) or "all expectations passed",
        metadata={
            "rows": sum(o.n_rows for o in outcomes),
            "expectations": sum(len(o.checks) for o in outcomes),
            "failed_expectations": dg.MetadataValue.json(failures),
        },
    )


@dg.asset_check(asset=tofu_like_corpus, blocking=True, description="GX: schema, ids, answers, lengths of corpus, world facts and famous authors")
def corpus_is_valid(pipeline: PipelineResource) -> dg.AssetCheckResult:
    manifest = pipeline.layout().corpus_dir / "manifest.json"
    if manifest.exists() and not read_json(manifest)["built"]:
        return dg.AssetCheckResult(passed=True, description="this root serves its own sources: no corpus to validate")
    corpus = load_corpus(pipeline.layout().corpus_dir)
    return check_result(validate_qa_dataset(corpus.qa, "corpus_qa", min_rows=100),
                        validate_qa_dataset(corpus.world_facts, "world_facts"),
                        validate_qa_dataset(corpus.real_world, "real_world"))


@dg.asset_check(asset=forget_set, blocking=True,
                description="GX: schema, non-empty, unique ids, no empty answers; on your own sources also every "
                            "collected record at or above the threshold and about a subject")
def forget_set_is_valid(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
    return check_result(*forget_set_checks(pipeline.layout(request_of(context)), pipeline.params()))


@dg.asset_check(asset=retain_set, blocking=True, additional_deps=[forget_set],
                description="GX: retain set valid and disjoint from the forget set (subjects and exact questions; on "
                            "your own sources: no forget record, no record naming a subject)")
def retain_set_is_valid_and_disjoint(context: dg.AssetCheckExecutionContext,
                                     pipeline: PipelineResource) -> dg.AssetCheckResult:
    return check_result(*retain_set_checks(pipeline.layout(request_of(context)), pipeline.params()))
