"""Jobs: the whole graph for one request (what `make demo` materialises)."""

import dagster as dg

from dagster_project.defs.deployment import executor

unlearn_request_job = dg.define_asset_job(
    "unlearn_request",
    # governance assets run in their own jobs (defs/governance.py): a gated-out candidate is not a failed run
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("champion", "champion_compliance"),
    description="Corpus → validation → target/retain models → unlearning → evaluation → MLflow registration.",
)

# in-process on a laptop, a pod per step on a cluster (UNLEARN_DEPLOYMENT, defs/deployment.py)
defs = dg.Definitions(jobs=[unlearn_request_job], executor=executor())
