"""MLflow: one run per unlearning request, one registered model version per run, aliases on top.

The embedded default is a sqlite store and local artifacts under the repo (`.mlflow/`, git-ignored);
`MLFLOW_TRACKING_URI` overrides it. Never pass forget-set text here: params, metrics and tags carry
hashes, counts and numbers only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from dagster_project.core.data.io import folder_md5s, sha256_text

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EXPERIMENT = "unlearning"
CANDIDATE = "candidate"
CHAMPION = "champion"
# a version is complete once it holds this tag, set after every other tag and artifact and before any alias
REGISTRATION_TAG, COMPLETE = "registration", "complete"
RECORD_FILE = "registration/record.json"  # run artifact: the version's tags and every artifact file's md5
RECORD_SHA_TAG = "registration.record_sha256"
METRIC_COUNT_TAG = "registration.metric_tags"


class IncompleteVersion(ValueError):
    """A version whose registration did not finish: nothing may read it as a candidate or champion."""


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


LOCKED_ATTEMPTS = 8  # tries of one MLflow call while another process holds the embedded sqlite store's write lock


class RetryingClient:
    """An MlflowClient whose calls are retried, with backoff, when the embedded sqlite store answers "database
    is locked": concurrent request runs (one process each) then queue for sqlite's single writer instead of
    failing (MLflow's own tests meet the same error). The failed call's transaction was rolled back, so a
    retry cannot apply anything twice. A server-backed store (PostgreSQL) never raises it."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            for attempt in range(LOCKED_ATTEMPTS):
                try:
                    return attribute(*args, **kwargs)
                except Exception as error:  # MlflowException or sqlalchemy's OperationalError, by message
                    if "database is locked" not in str(error) or attempt == LOCKED_ATTEMPTS - 1:
                        raise
                    time.sleep(0.2 * 2 ** attempt)
        return call


def _client(root: Path):
    """A client bound to this root's store; no global mlflow state (set_tracking_uri leaks into env).

    The embedded sqlite store is switched to write-ahead logging once (a setting kept in the database file):
    readers then never block the writer, and the writer queues instead of failing (RetryingClient)."""
    from mlflow import MlflowClient  # lazily: ~1.3 s to import

    uri = tracking_uri(root)
    if not uri.startswith("sqlite:///"):
        return RetryingClient(MlflowClient(tracking_uri=uri, registry_uri=uri))
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    # one process at a time creates and migrates a new store (MLflow's migrations are not concurrency-safe);
    # the client's stores, made with it and on their first calls, create or migrate the schema
    with FileLock(f"{database}.lock"):
        with sqlite3.connect(database, timeout=30) as connection:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
        client = RetryingClient(MlflowClient(tracking_uri=uri, registry_uri=uri))
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    return client


def _experiment_id(client, root: Path, name: str = EXPERIMENT) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    # the embedded store keeps artifacts beside its database; a server decides for itself
    local = tracking_uri(root).startswith("sqlite:")
    try:
        return client.create_experiment(name, artifact_location=(root / ".mlflow" / "artifacts").as_uri() if local else None)
    except MlflowException as race:  # another request's run created it in between
        if race.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


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


def artifact_md5s(artifact_dirs: dict[str, Path]) -> dict[str, str]:
    """{artifact path in the run: md5} of every file `log_artifacts` logs from `artifact_dirs`."""
    return {f"{name}/{path}": md5 for name, folder in sorted(artifact_dirs.items())
            for path, md5 in folder_md5s(folder).items()}


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
    Atomic for readers: the run gets every artifact and, last, a record of the version's tags and of each
    artifact file's md5 (RECORD_FILE); the version is created with all its tags in one call; then the tag
    `registration=complete`; then the alias. A kill at any point leaves either no version or one without
    the tag and without an alias, which readers refuse and a re-run completes from the record
    (`complete_registration`)."""
    from mlflow.exceptions import MlflowException

    version_tags = {**tags, **{f"metric.{key}": f"{value:.6g}" for key, value in version_metrics.items()},
                    METRIC_COUNT_TAG: str(len(version_metrics))}
    record = json.dumps({"tags": version_tags, "artifacts": artifact_md5s(artifact_dirs)}, indent=1, sort_keys=True)
    with tempfile.TemporaryDirectory(prefix="unlearn-registration-") as tmp:
        record_path = Path(tmp) / RECORD_FILE
        record_path.parent.mkdir()
        record_path.write_text(record)
        client, run = log_run(root, run_name, params, metrics, tags,
                              {**artifact_dirs, record_path.parent.name: record_path.parent})
    run_id = run.info.run_id
    try:
        client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(model_name, description="Unlearned candidates of the target model")
        except MlflowException as race:  # another request's run created it in between: the same outcome
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/model", run_id=run_id,
                                          tags={**version_tags, RECORD_SHA_TAG: sha256_text(record)})
    client.set_model_version_tag(model_name, version.version, REGISTRATION_TAG, COMPLETE)
    client.set_registered_model_alias(model_name, CANDIDATE, version.version)
    return Registration(model_name, str(version.version), CANDIDATE, run_id, tracking_uri(root))


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def metrics(self) -> dict[str, float]:
        """The candidate's own metrics, from its `metric.<name>` tags."""
        return {k.removeprefix("metric."): float(v) for k, v in self.tags.items() if k.startswith("metric.")}

    @property
    def incomplete(self) -> str:
        """Why the version cannot be read as registered, in one line; "" when it is complete."""
        request = self.tags.get("request_id", "<request>")
        fix = (f"re-run request {request}'s registration (its registered_model asset, or `unlearn stage "
               f"registered_model --request {request}`) to complete or replace it")
        if self.tags.get(REGISTRATION_TAG) != COMPLETE:
            return (f"models:/{self.name}/{self.version} is incomplete: it has no {REGISTRATION_TAG}={COMPLETE} tag "
                    f"(its registration stopped part-way, or predates the tag); {fix}")
        expected = self.tags.get(METRIC_COUNT_TAG)
        if expected != str(len(self.metrics)):
            return (f"models:/{self.name}/{self.version} is incomplete: it holds {len(self.metrics)} of its "
                    f"{expected} metric tags; {fix}")
        return ""


def _version_info(version) -> VersionInfo:
    return VersionInfo(version.name, str(version.version), version.run_id, dict(version.tags or {}),
                       tuple(version.aliases or ()))


def registration_record(root: Path, info: VersionInfo, dst: Path) -> str | None:
    """The text of the version's registration record (JSON; tag RECORD_SHA_TAG holds its SHA-256) from its
    run; None when the run holds none (a version registered before records existed)."""
    from mlflow.exceptions import MlflowException

    try:
        return download_run_file(root, info.run_id, RECORD_FILE, dst).read_text()
    except (MlflowException, OSError):
        return None


def complete_registration(root: Path, info: VersionInfo) -> VersionInfo | None:
    """Finish a version whose registration was interrupted: every tag its run's record names (set again
    where missing or different), the record's hash, then `registration=complete`. None when the run holds
    no record: the version cannot be completed, register a new one instead."""
    with tempfile.TemporaryDirectory(prefix="unlearn-registration-") as tmp:
        record = registration_record(root, info, Path(tmp))
    if record is None:
        return None
    wanted = {**json.loads(record)["tags"], RECORD_SHA_TAG: sha256_text(record)}
    set_version_tags(root, info.name, info.version, {k: v for k, v in wanted.items() if info.tags.get(k) != v})
    set_version_tags(root, info.name, info.version, {REGISTRATION_TAG: COMPLETE})  # last, as at registration
    return resolve_version(root, f"models:/{info.name}/{info.version}")


def resolve_version(root: Path, uri: str) -> VersionInfo:
    """`models:/<name>@<alias>` or `models:/<name>/<version>` in this root's registry, with its tags.

    An alias never resolves to an incomplete version (IncompleteVersion); a version number does, so it can
    be inspected and completed."""
    reference = uri.removeprefix("models:/")
    client = _client(root)
    if "@" in reference:
        name, alias = reference.split("@", 1)
        return require_complete(_version_info(client.get_model_version_by_alias(name, alias)))
    if "/" in reference:
        name, number = reference.split("/", 1)
        return _version_info(client.get_model_version(name, number))
    raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def require_complete(info: VersionInfo) -> VersionInfo:
    """`info` if its registration finished; IncompleteVersion with the one-line reason otherwise."""
    if info.incomplete:
        raise IncompleteVersion(info.incomplete)
    return info


def find_version(root: Path, name: str, tag: str, value: str) -> VersionInfo | None:
    """The newest version of `name` whose tag `tag` equals `value`, complete or not (its `incomplete` says);
    None if none does (or no such model)."""
    client = _client(root)
    if not client.search_registered_models(f"name='{name}'"):
        return None
    matches = [v for v in client.search_model_versions(f"name='{name}'") if (v.tags or {}).get(tag) == value]
    if not matches:
        return None
    return _version_info(max(matches, key=lambda v: int(v.version)))


def champion_version(root: Path, name: str) -> VersionInfo | None:
    """The version alias `champion` points at; None when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return resolve_version(root, f"models:/{name}@{CHAMPION}")
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def download_model_version(root: Path, uri: str, dst: Path | None = None, rebase: bool = True) -> Path:
    """Fetch the files of `models:/<name>@<alias>` or `models:/<name>/<version>` from this root's registry.

    A LoRA adapter names its base model relative to where the pipeline built it (assets/unlearned/<request>);
    `rebase` points the downloaded copy's config at that base model in this root, so it loads from anywhere
    (`rebase=False`: the bytes exactly as registered, for audits)."""
    import json
    import tempfile

    from dagster_project.core.layout import Layout

    version = resolve_version(root, uri)
    target = dst or Path(tempfile.mkdtemp(prefix="unlearn-model-"))
    model_dir = Path(_client(root).download_artifacts(version.run_id, "model", str(target)))
    config_path = model_dir / "adapter_config.json"
    if rebase and config_path.exists():
        config = json.loads(config_path.read_text())
        if not Path(config["base_model_name_or_path"]).is_absolute():
            built_at = Layout(root=root, request_file=f"requests/{version.tags['request_id']}.yaml").unlearned_dir
            config["base_model_name_or_path"] = str((built_at / config["base_model_name_or_path"]).resolve())
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return model_dir


def download_run_file(root: Path, run_id: str, artifact_path: str, dst: Path) -> Path:
    """One artifact file of a run, copied under `dst`."""
    return Path(_client(root).download_artifacts(run_id, artifact_path, str(dst)))


def set_version_tags(root: Path, name: str, version: str, tags: dict[str, str]) -> None:
    client = _client(root)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def set_alias(root: Path, name: str, alias: str, version: str) -> None:
    _client(root).set_registered_model_alias(name, alias, version)


def model_tag(root: Path, name: str, key: str, default: str = "") -> str:
    """A tag of the registered model itself (not of a version)."""
    return dict(_client(root).get_registered_model(name).tags or {}).get(key, default)


def set_model_tag(root: Path, name: str, key: str, value: str) -> None:
    _client(root).set_registered_model_tag(name, key, value)


def log_text(root: Path, run_id: str, text: str, artifact_file: str) -> None:
    """A text artifact (a model card, a manifest) added to a finished run."""
    _client(root).log_text(run_id, text, artifact_file)


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
                "incomplete": _version_info(version).incomplete,  # "" when its registration finished
                "aliases": sorted(a for a, v in aliases.items() if v == str(version.version)),
                "run_id": version.run_id,
                "request_id": tags.get("request_id"),
                "metrics": {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")},
                "dvc_md5": {k.removeprefix("dvc_md5."): v for k, v in tags.items() if k.startswith("dvc_md5.")},
            })
        versions.sort(key=lambda v: int(v["version"]))
        models.append({"name": model.name, "aliases": aliases, "versions": versions})
    return {"tracking_uri": tracking_uri(root), "models": models}
