"""Jobs: the whole graph for one request (what `make demo` materialises)."""

import dagster as dg

unlearn_request_job = dg.define_asset_job(
    "unlearn_request",
    # governance assets run in their own jobs (defs/governance.py): a gated-out candidate is not a failed run
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("champion", "champion_compliance"),
    description="Corpus → validation → target/retain models → unlearning → evaluation → MLflow registration.",
)

defs = dg.Definitions(jobs=[unlearn_request_job], executor=dg.in_process_executor)
