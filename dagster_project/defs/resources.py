"""The pipeline resource (where the repo and params live), the request partitions, and the one helper
every asset uses."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_project.core.layout import Layout, load_params
from dagster_project.core.slots import hold_slot, slot_path
from dagster_project.core.stages import STAGES, run_stage
from dagster_project.core.tracking.dvc import commit_stage
from dagster_project.defs.deployment import on_kubernetes

# one partition per forget request (key = request id = the request file's stem), added by the sensor on
# data/requests/ or `unlearn requests sync`; corpus, tokenizer and target model are shared, unpartitioned
requests_partitions = dg.DynamicPartitionsDefinition(name="requests")


class PipelineResource(dg.ConfigurableResource):
    """Repo root (artifact store, DVC repo, MLflow store) and params file of the run."""

    root: str = ""  # empty: $UNLEARN_ROOT, else the current directory
    params_file: str = "params.yaml"
    dvc_commit: bool = True  # record every stage in dvc.lock as it materialises

    def root_path(self) -> Path:
        return Path(self.root or os.environ.get("UNLEARN_ROOT") or os.getcwd()).resolve()

    def params(self) -> dict[str, Any]:
        return load_params(self.root_path(), self.params_file)

    def layout(self, request_id: str | None = None) -> Layout:
        """The layout of request `request_id` (a partition key), or of params.yaml's `request:` without one."""
        if request_id:
            return Layout.for_request(self.root_path(), self.params(), request_id)
        return Layout.from_params(self.root_path(), self.params())


def request_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str | None:
    """The request a run serves: its partition key (sensor runs, UI launches, `--tags dagster/partition`)."""
    run = context.run if isinstance(context, dg.AssetExecutionContext) else context.op_execution_context.run
    return run.tags.get("dagster/partition")


def _publishable(result: dict[str, Any]) -> dict[str, Any]:
    """Scalar results only: counts, hashes, metrics (stage results never carry forget-set text)."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}


@contextmanager
def stage_slot(context: dg.AssetExecutionContext, root: Path, slot: str | None) -> Iterator[float]:
    """The machine-wide slot `slot` (core/slots.py) held for the stage, yielding the seconds waited for it; nothing
    to hold without one, or on Kubernetes, where the asset's Dagster pool is the slot (defs/deployment.py)."""
    if slot is None or on_kubernetes():
        yield 0.0
        return
    with ExitStack() as held:
        try:
            waited = held.enter_context(hold_slot(slot_path(root, slot), context.run_id, context.log.info))
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as interrupt:
            # SIGINT/SIGTERM while queued: Dagster turns an interrupt into a retry of a step with a RetryPolicy,
            # which would only queue again; a Failure that refuses retries stops the run, as the signal asked
            raise dg.Failure(f"interrupted while waiting for the {slot} slot, before training: run the request "
                             f"again to queue anew", allow_retries=False) from interrupt
        yield waited


def materialize_stage(context: dg.AssetExecutionContext, pipeline: PipelineResource, name: str) -> dg.MaterializeResult:
    """Run the core stage `name` (holding its machine-wide slot, if it has one), record its outputs in DVC and
    publish counts, md5s and timing."""
    layout, params = pipeline.layout(request_of(context)), pipeline.params()
    stage = STAGES[name]
    try:
        with stage_slot(context, layout.root, stage.slot) as waited:
            started = time.perf_counter()
            result = run_stage(name, layout, params)
            seconds = time.perf_counter() - started
    except (ValueError, TypeError, KeyError) as error:
        # a bad request, setting or input: the same inputs fail the same way, so the step's retry policy must not
        # run it again (a kill, an OOM or a flaky disk still retries). Core messages name fields, never values.
        raise dg.Failure(description=f"stage {name}: {error}", allow_retries=False) from error
    context.log.info(f"stage {name} finished in {seconds:.1f}s")
    metadata: dict[str, Any] = {**_publishable(result), "stage_seconds": round(seconds, 2)}
    if stage.slot is not None:
        metadata["slot_wait_seconds"] = round(waited, 2)
    paths = [layout.rel(p) for p in stage.paths(layout, params)]
    metadata["paths"] = dg.MetadataValue.json(paths)
    if pipeline.dvc_commit and paths:  # a stage with no outputs here has no DVC stage
        if not stage.shared:  # a request file added since dvc.yaml was written gets its foreach entry first
            from dagster_project.dvc_yaml import write_or_check

            write_or_check(layout.root, params, check=False)
        md5s = commit_stage(layout.root, stage.key(layout))
        metadata["dvc_md5"] = dg.MetadataValue.json(md5s)
        for path in paths:
            if path in md5s:
                metadata[f"dvc_md5:{Path(path).name}"] = md5s[path]
    return dg.MaterializeResult(metadata=metadata)


defs = dg.Definitions(resources={"pipeline": PipelineResource()})
