"""The sensor on data/requests/: each new valid request file becomes a partition and a run."""

import dagster as dg

from dagster_project.core.data.request import scan_requests
from dagster_project.defs.jobs import unlearn_request_job
from dagster_project.defs.resources import PipelineResource, requests_partitions


@dg.sensor(job=unlearn_request_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a `requests` partition and an unlearn_request run for each new valid file in "
                       "data/requests/; invalid files are reported by name and field, never crash the sensor.")
def new_request_files(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult | dg.SkipReason:
    from dagster_project.dvc_yaml import write_or_check

    root, params = pipeline.root_path(), pipeline.params()
    valid, invalid = scan_requests(root / params["requests_dir"], params, pipeline.layout().corpus_dir)
    for name, error in invalid.items():
        context.log.warning(f"skipping {name}: {error}")
    known = set(context.instance.get_dynamic_partitions(requests_partitions.name))
    new = [request_id for request_id in valid if request_id not in known]
    if not new:
        problems = "; ".join(invalid.values())
        return dg.SkipReason(f"no new request files ({len(valid)} known)" + (f"; invalid: {problems}" if problems else ""))
    write_or_check(root, params, check=False)  # dvc.yaml gets the new requests' stages before they run
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=request_id, run_key=request_id) for request_id in new],
        dynamic_partitions_requests=[requests_partitions.build_add_request(new)],
    )
