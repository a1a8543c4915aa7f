"""Governance: promotion of the registered candidate behind the gates, and the daily compliance re-check.

Both live outside `unlearn_request` (a gated-out candidate is a decision, not a failed pipeline run):
the `promote_candidate` job promotes this request's registered version, the `compliance` job (daily
schedule) re-evaluates the champion on every request in force and fails loudly on a regression.
"""

import dagster as dg

from dagster_project.core.audit.promotion import promote, run_compliance
from dagster_project.core.data.io import read_json
from dagster_project.defs.registry import registered_model
from dagster_project.defs.resources import PipelineResource, request_of, requests_partitions


@dg.asset(group_name="registry", kinds={"mlflow"}, deps=[registered_model], partitions_def=requests_partitions,
          check_specs=[dg.AssetCheckSpec("promotion_gates_passed", asset="champion",
                                        description="Every promotion gate passed and the alias moved; a failure "
                                                    "lists each failed gate with its value and bound.")],
          description="Alias `champion` moved to this request's registered version when every promotion gate passes "
                      "(params.yaml `promotion:`; earlier requests in force must stay forgotten).")
def champion(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    layout, params = pipeline.layout(request_of(context)), pipeline.params()
    record = read_json(layout.registry_record)
    result = promote(pipeline.root_path(), params, record["name"], record["version"])
    context.log.info(f"models:/{result.name}/{result.version}: {'promoted' if result.promoted else 'gated out'}")
    failed = [g.detail for g in result.failed]
    return dg.MaterializeResult(
        metadata={"version": result.version, "request_id": result.request_id, "promoted": result.promoted,
                  "gates": dg.MetadataValue.json([g.to_dict() for g in result.gates])},
        check_results=[dg.AssetCheckResult(passed=result.promoted, description="; ".join(failed) or "all gates passed")],
    )


@dg.asset(group_name="compliance", kinds={"mlflow"},
          check_specs=[dg.AssetCheckSpec("champion_still_forgets", asset="champion_compliance",
                                        description="No request in force is recalled by the champion beyond "
                                                    "params.yaml promotion.regression_tolerance.")],
          description="The champion re-evaluated on every request in force (forget set, paraphrase probe, relearning "
                      "attack); logged to MLflow experiment `compliance`, tag compliance=passed|failed on the version.")
def champion_compliance(context: dg.AssetExecutionContext, pipeline: PipelineResource):
    params = pipeline.params()
    result = run_compliance(pipeline.root_path(), params, params["registry"]["model_name"])
    if not result.version:
        context.log.info("no champion yet: nothing in force to check")
    regressed = {request_id: r for request_id, r in result.requests.items() if r}
    yield dg.MaterializeResult(
        metadata={"version": result.version, "requests_checked": len(result.requests),
                  "requests_regressed": len(regressed), "mlflow_run_id": result.run_id,
                  "regressions": dg.MetadataValue.json(regressed)},
        check_results=[dg.AssetCheckResult(passed=result.passed, severity=dg.AssetCheckSeverity.ERROR,
                                           description="; ".join(f"{k}: {', '.join(v)}" for k, v in regressed.items())
                                           or f"{len(result.requests)} request(s) still forgotten")],
    )
    if not result.passed:  # after the events above are recorded: the run itself fails, for alerting
        raise dg.Failure(description=f"champion v{result.version} regressed on {len(regressed)} request(s) in force: "
                                     f"{', '.join(sorted(regressed))}")


promote_candidate_job = dg.define_asset_job("promote_candidate", selection=[champion],
                                            description="Promote this request's registered version if its gates pass.")
compliance_job = dg.define_asset_job("compliance", selection=[champion_compliance],
                                     description="Re-check the champion on every request in force.")
daily_compliance = dg.ScheduleDefinition(job=compliance_job, cron_schedule="0 6 * * *",
                                         default_status=dg.DefaultScheduleStatus.RUNNING)

defs = dg.Definitions(assets=[champion, champion_compliance], jobs=[promote_candidate_job, compliance_job],
                      schedules=[daily_compliance])
