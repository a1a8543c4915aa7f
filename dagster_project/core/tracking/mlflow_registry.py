"""MLflow: one run per unlearning request, one registered model version per run, aliases on top.

The embedded default is a sqlite store and local artifacts under the repo (`.mlflow/`, git-ignored);
`MLFLOW_TRACKING_URI` overrides it. Never pass forget-set text here: params, metrics and tags carry
hashes, counts and numbers only.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EXPERIMENT = "unlearning"
CANDIDATE = "candidate"
CHAMPION = "champion"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str
    run_id: str
    tracking_uri: str

    def to_dict(self) -> dict:
        return asdict(self)


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / '.mlflow' / 'mlflow.db'}"


def _client(root: Path):
    """A client bound to this root's store; no global mlflow state (set_tracking_uri leaks into env)."""
    from mlflow import MlflowClient  # lazily: ~1.3 s to import

    uri = tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client, root: Path, name: str = EXPERIMENT) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # the embedded store keeps artifacts beside its database; a server decides for itself
    local = tracking_uri(root).startswith("sqlite:")
    return client.create_experiment(name, artifact_location=(root / ".mlflow" / "artifacts").as_uri() if local else None)


def log_run(
    root: Path,
    run_name: str,
    params: dict[str, str | int | float],
    metrics: dict[str, float],
    tags: dict[str, str],
    artifact_dirs: dict[str, Path] | None = None,
    experiment: str = EXPERIMENT,
    series: dict[str, list[float]] | None = None,
):
    """One finished MLflow run with its params, metrics, tags and artifact folders; returns (client, run).

    `series`: metrics logged once per step (0, 1, ...), e.g. a bandit's reward per round, plotted by MLflow."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(root)
    run = client.create_run(_experiment_id(client, root, experiment), run_name=run_name, tags=tags)
    now_ms = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, float(value), now_ms, 0) for key, value in metrics.items()],
        params=[Param(key, str(value)) for key, value in params.items()],
        tags=[RunTag("mlflow.runName", run_name)],
    )
    steps = [Metric(key, float(value), now_ms, step) for key, values in (series or {}).items()
             for step, value in enumerate(values)]
    for start in range(0, len(steps), 1000):  # MLflow's limit on metrics per log_batch call
        client.log_batch(run.info.run_id, metrics=steps[start:start + 1000])
    for name, path in (artifact_dirs or {}).items():
        client.log_artifacts(run.info.run_id, str(path), artifact_path=name)
    client.set_terminated(run.info.run_id)
    return client, run


def register_candidate(
    root: Path,
    model_name: str,
    run_name: str,
    params: dict[str, str | int | float],
    metrics: dict[str, float],
    version_metrics: dict[str, float],
    tags: dict[str, str],
    artifact_dirs: dict[str, Path],
) -> Registration:
    """Log a run, register its `model` artifact as a new version and point alias `candidate` at it.

    `metrics` go to the run; `version_metrics` (the candidate's own) also become `metric.<name>` version tags.
    """
    from mlflow.exceptions import MlflowException

    client, run = log_run(root, run_name, params, metrics, tags, artifact_dirs)
    run_id = run.info.run_id
    try:
        client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(model_name, description="Unlearned candidates of the target model")
    version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags=tags)
    for key, value in version_metrics.items():
        client.set_model_version_tag(model_name, version.version, f"metric.{key}", f"{value:.6g}")
    client.set_registered_model_alias(model_name, CANDIDATE, version.version)
    return Registration(model_name, str(version.version), CANDIDATE, run_id, tracking_uri(root))


def download_model_version(root: Path, uri: str, dst: Path | None = None) -> Path:
    """Fetch the files of `models:/<name>@<alias>` or `models:/<name>/<version>` from this root's registry."""
    import tempfile

    reference = uri.removeprefix("models:/")
    client = _client(root)
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in reference:
        name, number = reference.split("/", 1)
        version = client.get_model_version(name, number)
    else:
        raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    run_id = version.run_id
    target = dst or Path(tempfile.mkdtemp(prefix="unlearn-model-"))
    return Path(client.download_artifacts(run_id, "model", str(target)))


def registry_status(root: Path) -> dict:
    """Every registered model with its aliases and versions (tags hold metrics and DVC md5s)."""
    client = _client(root)
    models = []
    for model in client.search_registered_models():
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        versions = []
        for version in client.search_model_versions(f"name='{model.name}'"):
            tags = dict(version.tags or {})
            versions.append({
                "version": str(version.version),
                "aliases": sorted(a for a, v in aliases.items() if v == str(version.version)),
                "run_id": version.run_id,
                "request_id": tags.get("request_id"),
                "metrics": {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")},
                "dvc_md5": {k.removeprefix("dvc_md5."): v for k, v in tags.items() if k.startswith("dvc_md5.")},
            })
        versions.sort(key=lambda v: int(v["version"]))
        models.append({"name": model.name, "aliases": aliases, "versions": versions})
    return {"tracking_uri": tracking_uri(root), "models": models}
