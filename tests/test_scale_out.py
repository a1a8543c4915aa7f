"""Scale-out on existing engines: Dagster storage and an MLflow server on PostgreSQL; concurrent requests.

    source infra/ci-postgres.sh      # a loopback PostgreSQL (what .ci/run does); without it those tests skip
    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_scale_out.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import MICRO_REQUEST, REPO, materialize_request

POSTGRES = os.environ.get("UNLEARN_TEST_POSTGRES", "")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="UNLEARN_TEST_POSTGRES unset: source infra/ci-postgres.sh")
SHARED = ("tofu_like_corpus", "tokenizer", "target_model")  # unpartitioned: materialised once, before the requests


def _admin(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{POSTGRES}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


@pytest.fixture
def database() -> Iterator[str]:
    """Factory of fresh databases on the test server, dropped afterwards: url = database('dagster')."""
    made: list[str] = []

    def make(purpose: str) -> str:
        name = f"unlearn_{purpose}_{uuid.uuid4().hex[:8]}"
        _admin(f"CREATE DATABASE {name}")
        made.append(name)
        return f"{POSTGRES}/{name}"

    yield make
    for name in made:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(database, tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with its backend store on PostgreSQL, artifacts served by it."""
    port = _free_port()
    process = subprocess.Popen(
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; name the driver installed (psycopg2)
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
         database("mlflow").replace("postgresql://", "postgresql+psycopg2://", 1),
         "--artifacts-destination", str(tmp_path / "mlflow-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up on {uri} (exit {process.poll()})")
            time.sleep(0.5)
    yield uri
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


def postgres_home(database, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$DAGSTER_HOME with infra/dagster.yaml (storage: postgres, every field from the environment)."""
    url = urlsplit(database("dagster"))
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "infra" / "dagster.yaml", home / "dagster.yaml")
    for key, value in {"DAGSTER_PG_USERNAME": url.username, "DAGSTER_PG_PASSWORD": url.password,
                       "DAGSTER_PG_HOST": url.hostname, "DAGSTER_PG_PORT": str(url.port or 5432),
                       "DAGSTER_PG_DB": url.path.lstrip("/")}.items():
        monkeypatch.setenv(key, value)
    return home


def sqlite_files(*folders: Path) -> list[str]:
    """Every sqlite database under `folders` (by its header), DVC's own index excepted."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and ".dvc" not in path.parts and path.open("rb").read(16) == b"SQLite format 3\x00":
                found.append(str(path))
    return found


@pytest.mark.e2e
@needs_postgres
def test_the_demo_request_runs_on_postgres_dagster_and_an_mlflow_server(micro_root: Path, tmp_path: Path, database,
                                                                        mlflow_server: str, monkeypatch, one_thread) -> None:
    import dagster as dg
    import psycopg2
    from mlflow import MlflowClient

    home = postgres_home(database, tmp_path / "dagster-home", monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"

    result = materialize_request(micro_root, "micro", instance=instance)
    assert result.success
    connection = psycopg2.connect(f"{POSTGRES}/{os.environ['DAGSTER_PG_DB']}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cursor.fetchone()[0] >= 10
    connection.close()

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    versions = client.search_model_versions("name='micro-model'")
    assert [v.version for v in versions] == ["1"]
    assert client.get_registered_model("micro-model").aliases == {"candidate": "1"}
    tags = versions[0].tags
    assert tags["request_id"] == "micro" and any(k.startswith("metric.") for k in tags)
    assert any(k.startswith("dvc_md5.") for k in tags)
    assert client.get_run(versions[0].run_id).data.metrics  # logged through the server, stored in PostgreSQL
    assert not (micro_root / ".mlflow").exists() and sqlite_files(micro_root, home) == []


def run_requests_concurrently(root: Path, requests: list[str], env: dict[str, str]) -> None:
    """One process per request, all at once, each materialising its partition (the shared assets are done)."""
    script = ("import sys, dagster as dg; sys.path.insert(0, {tests!r}); from pathlib import Path; "
              "from conftest import materialize_request; "
              "selection = dg.AssetSelection.all() - dg.AssetSelection.assets('champion', 'champion_compliance', "
              "*{shared!r}); "
              "result = materialize_request(Path({root!r}), sys.argv[1], selection=selection, "
              "instance=dg.DagsterInstance.get()); sys.exit(0 if result.success else 1)")
    code = script.format(tests=str(REPO / "tests"), shared=SHARED, root=str(root))
    processes = [subprocess.Popen([sys.executable, "-c", code, request], env={**os.environ, **env},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for request in requests]
    failures = [(request, process.communicate()[1][-3000:]) for request, process in zip(requests, processes)
                if process.wait() != 0]
    assert not failures, failures


def check_one_version_per_request(uri: str, requests: list[str]) -> None:
    """0 duplicate versions, 0 lost metrics or tags: every version carries what a lone run's version carries."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name='micro-model'")
    assert sorted(v.tags["request_id"] for v in versions) == sorted(requests)  # one each, none twice
    tag_keys = [frozenset(v.tags) for v in versions]
    metric_keys = [frozenset(client.get_run(v.run_id).data.metrics) for v in versions]
    assert len(set(tag_keys)) == 1 and len(set(metric_keys)) == 1  # none lost anything the others have
    assert sum(k.startswith("metric.") for k in tag_keys[0]) >= 10 and len(metric_keys[0]) >= 30


def prepare_requests(root: Path, count: int) -> list[str]:
    requests = [f"req-{i}" for i in range(count)]
    for i, request in enumerate(requests):
        text = MICRO_REQUEST.replace("id: micro", f"id: {request}").replace("seed: 0", f"seed: {i}")
        (root / "data" / "requests" / f"{request}.yaml").write_text(text)
    return requests


@pytest.mark.e2e
@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=needs_postgres)])
def test_four_requests_at_once_lose_nothing_and_register_once_each(store: str, micro_root: Path, tmp_path: Path,
                                                                   database, monkeypatch, request, one_thread) -> None:
    """Four request partitions in four processes at once, against the embedded stores (Dagster and MLflow on
    sqlite: WAL and retries) or against PostgreSQL (Dagster storage and the MLflow server's backend)."""
    import dagster as dg
    import yaml

    from dagster_project.core.tracking.mlflow_registry import tracking_uri
    from dagster_project.dvc_yaml import write_or_check

    requests = prepare_requests(micro_root, 4)
    write_or_check(micro_root, yaml.safe_load((micro_root / "params.yaml").read_text()), check=False)
    home = tmp_path / "dagster-home"
    env = {"DAGSTER_HOME": str(home)}
    if store == "postgres":
        postgres_home(database, home, monkeypatch)
        env["MLFLOW_TRACKING_URI"] = request.getfixturevalue("mlflow_server")
    else:
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("requests", requests)
    shared = materialize_request(micro_root, None, selection=dg.AssetSelection.assets(*SHARED), instance=instance)
    assert shared.success
    run_requests_concurrently(micro_root, requests, env)
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    assert len(runs) == 1 + len(requests)
    check_one_version_per_request(env.get("MLFLOW_TRACKING_URI") or tracking_uri(micro_root), requests)
