"""The one switch between a laptop and a cluster: `UNLEARN_DEPLOYMENT=local` (default) or `cluster`.

- local: the in-process executor; MLflow and DVC inside the repo (sqlite, folders) unless
  `MLFLOW_TRACKING_URI` points elsewhere; Dagster storage wherever `$DAGSTER_HOME/dagster.yaml` says (sqlite).
- cluster: MLflow at `$MLFLOW_TRACKING_URI` (required: pods and containers cannot share a sqlite file),
  Dagster storage on PostgreSQL (infra/dagster.yaml or the Helm chart). Inside Kubernetes (the pod has
  `KUBERNETES_SERVICE_HOST`) every step is its own pod (dagster-k8s's `k8s_job_executor`; the run launcher is
  the chart's `K8sRunLauncher`, infra/helm/values.yaml) and the unlearning step goes to a GPU node
  (`TRAINING_OP_TAGS`); on a docker compose GPU box (infra/docker-compose.yaml) steps run in the run's process.

One unlearning step trains at a time across runs: where all steps share one machine (local, compose) through the
lock file `<root>/.locks/training.lock` (core/slots.py says why not Dagster's pool there); on Kubernetes, where
steps are pods and a lock file cannot reach across them, through Dagster's pool `training`, whose slots the
daemon's run monitoring frees after a run's worker dies (infra/helm/values.yaml).

The same assets and jobs either way, as in Dagster's own example projects: only resources, executor and tags
are picked here. Not a module of definitions itself: defs/jobs.py and defs/unlearn.py ask it.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

DEPLOYMENTS = ("local", "cluster")
TRAINING_POOL = "training"
# the unlearning step's pod in cluster mode: one GPU, room for an 8B LoRA run, only on GPU nodes
TRAINING_OP_TAGS: dict[str, Any] = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1", "memory": "64Gi"},
                                           "requests": {"cpu": "4", "memory": "32Gi"}}},
        "pod_spec_config": {"node_selector": {"nvidia.com/gpu.present": "true"},
                            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    }
}


def deployment() -> str:
    name = os.environ.get("UNLEARN_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"UNLEARN_DEPLOYMENT: expected one of {DEPLOYMENTS}, got {name!r}")
    if name == "cluster" and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ValueError("UNLEARN_DEPLOYMENT=cluster needs MLFLOW_TRACKING_URI (the shared MLflow server); "
                         "a cluster's pods cannot share the embedded sqlite store")
    return name


def on_kubernetes() -> bool:
    return deployment() == "cluster" and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def executor() -> dg.ExecutorDefinition:
    if not on_kubernetes():
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor  # cluster extra: pip install '.[cluster]'

    return k8s_job_executor


def training_op_tags() -> dict[str, Any]:
    """Op tags of the unlearning step: a GPU pod on Kubernetes, none elsewhere."""
    return TRAINING_OP_TAGS if on_kubernetes() else {}


def training_pool() -> str | None:
    """Dagster pool of the unlearning step: `training` on Kubernetes, none elsewhere (the lock file holds the slot)."""
    return TRAINING_POOL if on_kubernetes() else None
