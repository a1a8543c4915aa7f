"""Registration is atomic from the reader's side, and `audit verify` catches a changed byte in any copy of a
registered artifact: MLflow's run artifacts, the workspace, the DVC cache, the DVC remote and dvc.lock."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import MICRO_PARAMS, MICRO_REQUEST, materialize_request

from dagster_project.cli import main as cli_main
from dagster_project.core.audit.manifest import cache_object, cached_listing
from dagster_project.core.data.io import read_json
from dagster_project.core.layout import Layout, load_params

MODEL = "micro-model"


def selection(*names: str):
    import dagster as dg

    return dg.AssetSelection.assets(*names)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro store (root/ and its DVC remote dvc-remote/, which .dvc/config names relatively, so a copy of
    the store is self-contained) materialised up to the evaluation: everything but the registration."""
    import dagster as dg
    import torch

    from dagster_project.core.tracking.dvc import ensure_repo
    from dagster_project.dvc_yaml import write_or_check

    store = tmp_path_factory.mktemp("evaluated") / "store"
    root = store / "root"
    (root / "data" / "requests").mkdir(parents=True)
    (root / "data" / "requests" / "micro.yaml").write_text(MICRO_REQUEST)
    (root / "params.yaml").write_text(yaml.safe_dump(MICRO_PARAMS))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as conftest's one_thread: a 32-wide model only waits on thread barriers
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            ensure_repo(root, remote_url="../dvc-remote")  # relative to the root
            write_or_check(root, MICRO_PARAMS, check=False)
            upstream = dg.AssetSelection.all() - selection("registered_model", "champion", "champion_compliance")
            assert materialize_request(root, "micro", upstream).success
    finally:
        torch.set_num_threads(threads)
    return store


def copy_store(evaluated: Path, dst: Path) -> Path:
    """A copy of the evaluated store; its root."""
    shutil.copytree(evaluated, dst / "store", symlinks=True)
    return dst / "store" / "root"


def client_of(root: Path):
    from mlflow import MlflowClient

    from dagster_project.core.tracking.mlflow_registry import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))


class Killed(Exception):
    """Stands in for SIGKILL inside registration: nothing after the call that raises it runs."""


def kill_at_the_marker(client_class) -> Callable:
    """Every tag and artifact in place, killed on the call that would mark the version complete."""
    real = client_class.set_model_version_tag

    def set_tag(self, name, version, key, value):
        if key == "registration":
            raise Killed("registration")
        return real(self, name, version, key, value)
    return set_tag


def kill_after_creating_without_metrics(client_class) -> Callable:
    """The hollow version of the operator probe: created with its other tags but none of its metric tags,
    then killed."""
    real = client_class.create_model_version

    def create(self, name, source, run_id=None, tags=None, **kwargs):
        real(self, name, source, run_id=run_id, tags={k: v for k, v in tags.items() if not k.startswith("metric.")},
             **kwargs)
        raise Killed("registration")
    return create


@pytest.mark.e2e
@pytest.mark.parametrize(("method", "kill"), [("set_model_version_tag", kill_at_the_marker),
                                              ("create_model_version", kill_after_creating_without_metrics)])
def test_a_kill_inside_registration_leaves_no_usable_version_and_a_rerun_completes_it(
        evaluated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        method: str, kill: Callable) -> None:
    from mlflow import MlflowClient

    from dagster_project.core.tracking.mlflow_registry import IncompleteVersion, resolve_version

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = copy_store(evaluated, tmp_path)
    cli = ["--root", str(root)]
    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, method, kill(MlflowClient))
        killed = materialize_request(root, "micro", selection("registered_model"), raise_on_error=False)
    assert not killed.success
    client = client_of(root)
    (hollow,) = client.search_model_versions(f"name='{MODEL}'")
    assert hollow.version == 1 and "registration" not in hollow.tags
    assert any(k.startswith("metric.") for k in hollow.tags) == (method == "set_model_version_tag")
    assert dict(client.get_registered_model(MODEL).aliases) == {}  # nothing points at it
    capsys.readouterr()

    # every reader refuses it with one line naming the version and the fix; `unlearn status` flags it
    reason = f"models:/{MODEL}/1 is incomplete: it has no registration=complete tag"
    assert cli_main([*cli, "status"]) == 0
    assert f"INCOMPLETE: {reason}" in capsys.readouterr().out
    assert cli_main([*cli, "promote", MODEL, "1"]) == 2
    refused = capsys.readouterr().err
    assert reason in refused and refused.count("\n") == 1
    assert "unlearn stage registered_model --request micro" in refused
    assert cli_main([*cli, "audit", "verify", f"models:/{MODEL}/1", "--no-rerun"]) == 1
    verified = capsys.readouterr().out
    assert f"[FAIL] registration complete: {reason}" in verified and "result: FAILED (0/1 checks)" in verified
    client.set_registered_model_alias(MODEL, "champion", "1")  # moved by hand: an alias still never resolves to it
    with pytest.raises(IncompleteVersion, match=reason):
        resolve_version(root, f"models:/{MODEL}@champion")
    assert cli_main([*cli, "compliance"]) == 2
    assert reason in capsys.readouterr().err
    client.delete_registered_model_alias(MODEL, "champion")

    # the re-run completes that version from its run's registration record instead of re-using it hollow
    assert materialize_request(root, "micro", selection("registered_model")).success
    (version,) = client.search_model_versions(f"name='{MODEL}'")
    record = read_json(Layout.from_params(root, load_params(root)).registry_record)
    metrics = {k.removeprefix("metric."): v for k, v in version.tags.items() if k.startswith("metric.")}
    assert version.version == 1 and record["version"] == "1" and version.tags["registration"] == "complete"
    assert len(metrics) == int(version.tags["registration.metric_tags"]) == len(record["metrics"]) > 40
    assert metrics == {k: f"{v:.6g}" for k, v in record["metrics"].items()}
    assert {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()} == {"candidate": "1"}
    capsys.readouterr()
    assert cli_main([*cli, "audit", "verify", f"models:/{MODEL}@candidate", "--no-rerun"]) == 0
    assert "result: PASSED" in capsys.readouterr().out
    assert cli_main([*cli, "promote", MODEL, "1", "--json"]) == 1  # the micro candidate is gated out, by its metrics
    gates = json.loads(capsys.readouterr().out)["gates"]
    assert [g["gate"] for g in gates if not g["passed"]] == ["utility_ratio", "gibberish_rate"]


@pytest.fixture(scope="module")
def registered(evaluated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the evaluated store, registered (version 1, alias candidate) and pushed to its DVC remote."""
    root = copy_store(evaluated, tmp_path_factory.mktemp("registered"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert materialize_request(root, "micro", selection("registered_model")).success
    return root


def mlflow_file(path: str) -> Callable[[Path], tuple[Path, int | None]]:
    """A file of the version's MLflow run (the embedded store keeps artifacts under .mlflow/artifacts/<run>)."""
    def locate(root: Path) -> tuple[Path, int | None]:
        run_id = read_json(root / "assets" / "registry" / "micro.json")["run_id"]
        return root / ".mlflow" / "artifacts" / run_id / "artifacts" / path, None
    return locate


def workspace_file(path: str) -> Callable[[Path], tuple[Path, int | None]]:
    return lambda root: (root / path, None)


def dvc_object(label: str, file: str | None, remote: bool) -> Callable[[Path], tuple[Path, int | None]]:
    """The DVC object of artifact `label` (of `file` in it, for a folder) in the cache or in the remote."""
    def locate(root: Path) -> tuple[Path, int | None]:
        md5 = read_json(root / "assets" / "registry" / "micro.json")["dvc_md5"][label]
        md5 = cached_listing(root, md5)[file] if file else md5
        cached = cache_object(root, md5)
        return (root.parent / "dvc-remote" / cached.relative_to(root / ".dvc" / "cache") if remote else cached), None
    return locate


def lock_entry(stage: str, label: str) -> Callable[[Path], tuple[Path, int | None]]:
    """dvc.lock, at the md5 it records for `label`'s output of `stage`."""
    def locate(root: Path) -> tuple[Path, int | None]:
        md5 = read_json(root / "assets" / "registry" / "micro.json")["dvc_md5"][label]
        text = (root / "dvc.lock").read_text()
        return root / "dvc.lock", text.index(md5, text.index("outs:", text.index(f"  {stage}:")))
    return locate


FORGET_SET = "assets/datasets/micro/forget.jsonl"
# (what is flipped, where, the checks that must fail: exactly these)
TAMPERS = [
    ("mlflow-model", mlflow_file("model/adapter_model.safetensors"),
     {"MLflow copy of model/adapter_model.safetensors",
      "MLflow model artifact is the DVC-versioned adapter byte for byte"}),
    ("mlflow-evaluation-report", mlflow_file("evaluation/report.json"), {"MLflow copy of evaluation/report.json"}),
    ("mlflow-audit-manifest", mlflow_file("audit/audit_manifest.json"),
     {"MLflow copy of audit/audit_manifest.json", "manifest hash matches the version tag"}),
    ("mlflow-model-card", mlflow_file("audit/model_card.md"), {"MLflow copy of audit/model_card.md"}),
    ("mlflow-registration-record", mlflow_file("registration/record.json"),
     {"registration record matches the version tag"}),
    ("workspace-adapter", workspace_file("assets/unlearned/micro/adapter_model.safetensors"),
     {"workspace copy of unlearned_adapter (assets/unlearned/micro)"}),
    ("workspace-forget-set", workspace_file(FORGET_SET), {f"workspace copy of forget_set ({FORGET_SET})"}),
    ("workspace-target-model", workspace_file("assets/models/target/model.safetensors"),
     {"workspace copy of target_model (assets/models/target)"}),
    ("dvc-cache-adapter", dvc_object("unlearned_adapter", "adapter_model.safetensors", remote=False),
     {"DVC cache copy of unlearned_adapter"}),
    ("dvc-cache-forget-set", dvc_object("forget_set", None, remote=False), {"DVC cache copy of forget_set"}),
    ("dvc-remote-adapter", dvc_object("unlearned_adapter", "adapter_model.safetensors", remote=True),
     {"DVC remote copy of unlearned_adapter"}),
    ("dvc-remote-forget-set", dvc_object("forget_set", None, remote=True), {"DVC remote copy of forget_set"}),
    ("dvc-lock", lock_entry("forget_set@micro", "forget_set"), {f"dvc.lock entry of forget_set ({FORGET_SET})"}),
]


def verify_json(root: Path, capsys: pytest.CaptureFixture, *flags: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = cli_main(["--root", str(root), "audit", "verify", f"models:/{MODEL}/1", "--json", *flags])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.e2e
@pytest.mark.parametrize(("locate", "failing"), [pytest.param(locate, failing, id=name)
                                                  for name, locate, failing in TAMPERS])
def test_audit_verify_names_each_flipped_byte(registered: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture, locate: Callable,
                                              failing: set[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, offset = locate(registered)
    original, mode = path.read_bytes(), path.stat().st_mode
    at = len(original) // 2 if offset is None else offset
    path.chmod(0o644)  # DVC keeps its cache and remote objects read-only
    path.write_bytes(original[:at] + bytes([original[at] ^ 1]) + original[at + 1:])
    try:
        code, report = verify_json(registered, capsys, "--no-rerun")
    finally:
        path.write_bytes(original)
        path.chmod(mode)
    assert code == 1 and not report["passed"]
    assert {c["check"] for c in report["checks"] if not c["ok"]} == failing


@pytest.mark.e2e
def test_an_untampered_version_verifies_clean(registered: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, report = verify_json(registered, capsys)
    checks = {c["check"]: c for c in report["checks"]}
    assert code == 0 and report["passed"]
    assert checks["MLflow run artifacts match the registration record"]["detail"] == "7 files"
    artifacts = read_json(registered / "assets" / "registry" / "micro.json")["dvc_md5"]
    for label, md5 in artifacts.items():  # each artifact in the cache, the remote and the workspace
        detail = checks[f"copies of {label} hash to the version's md5"]["detail"]
        assert detail.startswith(f"{md5}: DVC cache, DVC remote, workspace (assets/"), detail
    assert "re-run evaluation matches the recorded metrics (|Δ| ≤ 1e-06)" in checks
