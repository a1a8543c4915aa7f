"""The one switch (UNLEARN_DEPLOYMENT): the same Definitions, local or cluster executor and GPU tags.

    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_deployment.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import json
from dagster_project.definitions import defs
definitions = defs()
job = definitions.resolve_job_def("unlearn_request")
node = next(n for n in job.graph.node_defs if n.name == "unlearned_adapter")
print(json.dumps({"executor": job.executor_def.name, "tags": node.tags, "pool": node.pool,
                  "assets": sorted(k.to_user_string() for k in definitions.resolve_asset_graph().get_all_asset_keys())}))
"""


def load(repo_root: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("UNLEARN_DEPLOYMENT", "MLFLOW_TRACKING_URI", "KUBERNETES_SERVICE_HOST")}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=repo_root, capture_output=True, text=True, timeout=300,
                          env={**environment, **env})


def test_local_compose_and_kubernetes_share_the_assets_and_differ_in_executor_gpu_tags_and_pool(
        repo_root: Path) -> None:
    local = json.loads(load(repo_root).stdout)
    shared = {"UNLEARN_DEPLOYMENT": "cluster", "MLFLOW_TRACKING_URI": "http://mlflow.example:5000"}
    cluster = json.loads(load(repo_root, **shared, KUBERNETES_SERVICE_HOST="10.0.0.1").stdout)
    compose = json.loads(load(repo_root, **shared).stdout)  # a GPU box outside Kubernetes
    assert local["assets"] == cluster["assets"] == compose["assets"] and "unlearned_adapter" in local["assets"]
    assert local["executor"] == compose["executor"] == "in_process" and cluster["executor"] == "k8s"
    assert "dagster-k8s/config" not in compose["tags"]
    assert "dagster-k8s/config" not in local["tags"]
    # one machine (local, compose): the training slot is the lock file; pods on Kubernetes: Dagster's pool
    assert local["pool"] is None and compose["pool"] is None and cluster["pool"] == "training"
    k8s = json.loads(cluster["tags"]["dagster-k8s/config"])
    assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert k8s["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.present": "true"}


def test_a_cluster_without_a_shared_mlflow_or_an_unknown_deployment_is_refused(repo_root: Path) -> None:
    missing = load(repo_root, UNLEARN_DEPLOYMENT="cluster")
    assert missing.returncode != 0 and "UNLEARN_DEPLOYMENT=cluster needs MLFLOW_TRACKING_URI" in missing.stderr
    unknown = load(repo_root, UNLEARN_DEPLOYMENT="cloud")
    assert unknown.returncode != 0 and "UNLEARN_DEPLOYMENT: expected one of ('local', 'cluster')" in unknown.stderr
