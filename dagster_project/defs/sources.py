"""The user's own data (params.yaml `sources:`): one asset per role, each with a blocking GX check.

On the embedded corpus no source is declared: each asset records `declared: false` and its check passes.
"""

import dagster as dg

from dagster_project.core.checks import source_checks
from dagster_project.core.sources.load import ROLES
from dagster_project.defs.resources import PipelineResource, materialize_stage
from dagster_project.defs.validation import check_result

ROLE_DESCRIPTIONS = {
    "train": "what the model was fine-tuned on: searched for the forget records, cleaned per request",
    "retain": "text the model must keep when there is no train source (a pretrained model)",
    "nonmember": "text of the same kind the model never saw: the membership-inference baseline",
    "utility": "held-out general text: utility probes",
}


def source_asset(role: str) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    name = f"{role}_source"

    @dg.asset(name=name, group_name="sources", kinds={"python", "dvc"},
              description=f"Source `{role}` ({ROLE_DESCRIPTIONS[role]}): every declared file read (JSONL, CSV, "
                          f"Parquet, datasets), its records normalised; the md5 of each file in the metadata.")
    def source(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        return materialize_stage(context, pipeline, name)

    @dg.asset_check(asset=source, name=f"{name}_is_valid", blocking=True,
                    description="GX: schema, non-empty, unique ids, no blank text, size bounds (rows named by number)")
    def source_is_valid(pipeline: PipelineResource) -> dg.AssetCheckResult:
        outcomes = source_checks(pipeline.layout(), pipeline.params(), role)
        if outcomes is None:
            return dg.AssetCheckResult(passed=True, description=f"no {role} source declared: nothing to validate")
        return check_result(*outcomes)

    return source, source_is_valid


train_source, train_source_is_valid = source_asset("train")
retain_source, retain_source_is_valid = source_asset("retain")
nonmember_source, nonmember_source_is_valid = source_asset("nonmember")
utility_source, utility_source_is_valid = source_asset("utility")
SOURCE_ASSETS = [f"{role}_source" for role in ROLES]  # by name: the data assets depend on them without a cycle
