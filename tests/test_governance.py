"""Governance: promotion gates, requests in force, the compliance re-check and the audit trail."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import dagster as dg
import pytest
import yaml
from conftest import MICRO_PARAMS, materialize_request

from dagster_project.cli import main as cli_main
from dagster_project.core.audit.gates import Gates, check_gates, load_gates
from dagster_project.core.audit.compute import compute_environment, pinned_compute_variables, run_pinned
from dagster_project.core.audit.manifest import VerifyReport, add_compute_check
from dagster_project.core.data.io import read_json, read_jsonl
from dagster_project.core.data.corpus import CorpusConfig, generate_corpus
from dagster_project.core.layout import Layout, load_params
from dagster_project.defs.resources import PipelineResource
from dagster_project.defs.sensors import new_request_files

GOOD = {"forget_quality": 0.3, "utility_ratio": 0.97, "retain_fact_ratio": 0.98, "forget_gibberish_rate": 0.1,
        "forget_refusal_rate": 0.0}


def test_each_gate_passes_at_its_bound_and_fails_beyond_it() -> None:
    gates = Gates()
    assert all(r.passed for r in check_gates(gates, GOOD))
    at_bounds = {"forget_quality": 0.05, "utility_ratio": 0.95, "retain_fact_ratio": 0.9, "forget_gibberish_rate": 0.25,
                 "forget_refusal_rate": 1.0}
    assert all(r.passed for r in check_gates(gates, at_bounds))
    # the locality gate: utility kept (0.96x) while the retained people's facts are lost (0.57 -> 0.13)
    for key, bad in (("forget_quality", 0.049), ("utility_ratio", 0.9), ("forget_gibberish_rate", 0.3),
                     ("retain_fact_ratio", 0.13 / 0.57)):
        failed = [r for r in check_gates(gates, {**GOOD, key: bad}) if not r.passed]
        assert len(failed) == 1 and failed[0].value == bad and key in failed[0].detail
    with pytest.raises(KeyError, match="utility_ratio"):
        check_gates(gates, {k: v for k, v in GOOD.items() if k != "utility_ratio"})


def test_an_earlier_request_recalled_beyond_the_tolerance_fails_its_gate() -> None:
    then = {"forget_rouge": 0.10, "forget_fact_accuracy": 0.0, "relearn_rouge_after": 0.5}
    kept = {"forget_rouge": 0.14, "forget_fact_accuracy": 0.05, "relearn_rouge_after": 0.4}  # within 0.05
    lost = {"forget_rouge": 0.80, "forget_fact_accuracy": 0.0, "relearn_rouge_after": 0.5}
    results = {r.gate: r for r in check_gates(Gates(), GOOD, {"req-a": (kept, then), "req-b": (lost, then)})}
    assert results["still_forgotten:req-a"].passed
    failed = results["still_forgotten:req-b"]
    assert not failed.passed and failed.value == pytest.approx(0.7) and "forget_rouge 0.1 -> 0.8" in failed.detail


def test_gates_come_from_params_and_name_a_bad_key() -> None:
    assert load_gates({"promotion": {"utility_ratio_min": 0.9}}) == Gates(utility_ratio_min=0.9)
    assert load_gates({}) == Gates()
    with pytest.raises(ValueError, match="promotion.utility_min: unknown"):
        load_gates({"promotion": {"utility_min": 0.9}})
    with pytest.raises(ValueError, match="promotion.forget_quality_min: expected float"):
        load_gates({"promotion": {"forget_quality_min": "high"}})


def governance_params() -> dict:
    """The micro config with a model big enough to learn its people (so forgetting them is measurable) and
    gates only on the requests in force."""
    params = json.loads(json.dumps(MICRO_PARAMS))
    params["model"].update(hidden_size=64, intermediate_size=128, num_layers=2)
    params["train"].update(epochs=40, schedule_epochs=40, lr=0.005)
    params["unlearn"]["graddiff"] = {"steps": 10, "batch_size": 4, "lr": 0.003}
    params["promotion"] = {"forget_quality_min": 0.0, "utility_ratio_min": 0.0, "gibberish_rate_max": 1.0,
                           "refusal_rate_max": 1.0, "regression_tolerance": 0.05}
    return params


def test_the_compute_check_names_what_differs_and_never_fails() -> None:
    now = compute_environment()
    assert set(now) == {"cpu", "cpu_capability", "cpu_bf16", "threads", "torch", "gpu", "cuda", "cudnn",
                        "float32_matmul", "cuda_deterministic"}
    assert now["threads"] >= 1 and now["cpu"] and now["cpu_capability"]  # e.g. "AVX512", "AVX2", "DEFAULT"
    report = VerifyReport("models:/m/1")
    add_compute_check(report, {"compute": now}, now)
    elsewhere = "AVX512" if now["cpu_capability"] == "AVX2" else "AVX2"
    add_compute_check(report, {"compute": {**now, "cpu_capability": elsewhere, "cpu_bf16": not now["cpu_bf16"]}}, now)
    add_compute_check(report, {}, now)  # a manifest written before the field existed
    (same, _, same_detail), (other, _, other_detail), (old, _, old_detail) = report.checks
    assert same == "compute environment matches the version's" and "same CPU" in same_detail
    assert other == "compute environment differs from the version's"
    assert other_detail.startswith(f"cpu_bf16: {not now['cpu_bf16']} -> {now['cpu_bf16']}; "
                                   f"cpu_capability: {elsewhere} -> {now['cpu_capability']} (")
    assert "not recorded" in old_detail and report.passed  # informational: never a failure


def test_a_rebuild_is_pinned_to_the_versions_instruction_set_and_threads(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("UNLEARN_CPU_BF16", raising=False)
    # any CPU can run these: the baseline kernels, one thread, float32 training
    recorded = {**compute_environment(), "cpu_capability": "DEFAULT", "threads": 1, "cpu_bf16": False}
    pinned = pinned_compute_variables(recorded)
    assert pinned == {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "UNLEARN_CPU_BF16": "0"}
    assert pinned_compute_variables(None) == {}
    assert "UNLEARN_CPU_BF16" not in pinned_compute_variables({**recorded, "cpu_bf16": True})
    assert run_pinned(recorded, tmp_path)["compute"] == recorded  # the child computes like the recorded version
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # what the user set wins
    assert pinned_compute_variables(recorded) == {"ATEN_CPU_CAPABILITY": "default", "UNLEARN_CPU_BF16": "0"}


def test_a_version_trained_with_deterministic_cuda_kernels_is_rebuilt_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UNLEARN_CUDA_DETERMINISTIC", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    on_gpu = {**compute_environment(), "gpu": "NVIDIA H200", "cuda": "12.8", "cudnn": 91000}
    assert pinned_compute_variables({**on_gpu, "cuda_deterministic": True}).items() >= {
        "UNLEARN_CUDA_DETERMINISTIC": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}.items()
    assert "UNLEARN_CUDA_DETERMINISTIC" not in pinned_compute_variables({**on_gpu, "cuda_deterministic": False})
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the other workspace setting torch accepts: kept
    assert "CUBLAS_WORKSPACE_CONFIG" not in pinned_compute_variables({**on_gpu, "cuda_deterministic": True})


def test_the_deterministic_switch_turns_on_torchs_strict_mode_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from dagster_project.core.model.tiny_llama import training_device

    strict: list[bool] = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, **_: strict.append(mode))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("FLASH_ATTENTION_DETERMINISTIC", raising=False)
    monkeypatch.setenv("UNLEARN_CUDA_DETERMINISTIC", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device().type == "cpu" and strict == []  # the CPU path is deterministic as it is
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what training_device decides on a GPU
    assert training_device().type == "cuda" and strict == [True]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert os.environ["FLASH_ATTENTION_DETERMINISTIC"] == "1"  # flash-attn reads its own switch, not torch's
    monkeypatch.setenv("UNLEARN_CUDA_DETERMINISTIC", "0")
    assert training_device().type == "cuda" and strict == [True]  # off: no call


@pytest.mark.e2e
def test_promotion_gates_compliance_and_audit_over_two_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                one_thread, capsys: pytest.CaptureFixture,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from mlflow import MlflowClient

    from dagster_project.core.tracking.dvc import ensure_repo
    from dagster_project.core.tracking.mlflow_registry import tracking_uri
    from dagster_project.dvc_yaml import write_or_check

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    caplog.set_level(logging.DEBUG)  # every log line of the runs below is scanned for forget-set text at the end
    printed: list[str] = []  # and everything printed

    def output() -> str:
        captured = capsys.readouterr()
        printed.extend((captured.out, captured.err))
        return captured.out
    root = tmp_path / "root"
    requests = root / "data" / "requests"
    requests.mkdir(parents=True)
    params = governance_params()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    ensure_repo(root, remote_url=str(tmp_path / "dvc-remote"))
    write_or_check(root, params, check=False)
    instance = dg.DagsterInstance.ephemeral()  # one instance: the partitions persist across the runs below
    cli = ["--root", str(root)]
    client = MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))

    # two requests and a broken file dropped into data/requests/: the sensor adds two partitions and two runs
    people = generate_corpus(CorpusConfig(**params["corpus"]))
    other = next(p["name"] for p in people.people if p["person_id"] in people.splits["retain"])
    (requests / "req-a.yaml").write_text("id: req-a\nsplit: forget10\nmethod: graddiff\nmode: full\n")
    (requests / "req-b.yaml").write_text(yaml.safe_dump({"id": "req-b", "subjects": [other], "method": "graddiff",
                                                         "mode": "full"}))
    (requests / "broken.yaml").write_text("id: broken\nsplit: forget10\nmethod: npo\nmode: sideways\n")
    sensed = new_request_files(dg.build_sensor_context(instance=instance, resources={"pipeline": PipelineResource(root=str(root))}))
    assert [r.partition_key for r in sensed.run_requests] == ["req-a", "req-b"]
    (added,) = sensed.dynamic_partitions_requests
    assert list(added.partition_keys) == ["req-a", "req-b"]
    instance.add_dynamic_partitions("requests", list(added.partition_keys))
    assert list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["forget_set"]["foreach"]) == ["req-a", "req-b"]
    skipped = new_request_files(dg.build_sensor_context(instance=instance, resources={"pipeline": PipelineResource(root=str(root))}))
    assert isinstance(skipped, dg.SkipReason) and "broken.yaml" in skipped.skip_message and "mode" in skipped.skip_message

    # request A: the pipeline registers v1, the promote_candidate job's asset promotes it (nothing else in force)
    assert materialize_request(root, "req-a", instance=instance).success
    promoted = materialize_request(root, "req-a", ["champion"], instance=instance)
    (gate_check,) = promoted.get_asset_check_evaluations()
    assert gate_check.passed and promoted.asset_materializations_for_node("champion")[0].metadata["promoted"].value
    model = client.get_registered_model("micro-model")
    assert {alias: str(v) for alias, v in model.aliases.items()} == {"candidate": "1", "champion": "1"}
    (entry,) = json.loads(model.tags["requests_in_force"])
    assert entry["request_id"] == "req-a" and entry["version"] == "1"
    v1 = client.get_model_version("micro-model", "1").tags
    assert v1["promotion"] == "passed" and json.loads(v1["seeds"]) == {"corpus": 0, "train": 0, "eval": 0, "unlearn": 0}
    assert len(v1["environment_sha256"]) == 64 and v1["git_commit"]
    assert json.loads(v1["compute"]) == compute_environment()

    # re-materialising with unchanged inputs re-uses the version instead of registering a duplicate
    again = materialize_request(root, "req-a", ["evaluation", "registered_model"], instance=instance)
    assert again.asset_materializations_for_node("registered_model")[0].metadata["reused"].value is True
    assert [str(v.version) for v in client.search_model_versions("name='micro-model'")] == ["1"]
    record = read_json(root / "assets" / "registry" / "req-a.json")
    assert record["version"] == "1" and record["audit_manifest_sha256"] == v1["audit_manifest_sha256"]

    # the champion re-evaluated on request A reproduces its numbers: compliance passes
    assert cli_main([*cli, "compliance"]) == 0
    assert "[ok] req-a" in output()

    # audit: every artifact re-hashed from DVC, MLflow agrees, the evaluation re-run on rebuilt bytes matches
    assert cli_main([*cli, "audit", "verify", "models:/micro-model@champion"]) == 0
    verified = output()
    assert "[ok] copies of unlearned_adapter hash to the version's md5" in verified and "result: PASSED" in verified
    assert "[ok] re-run evaluation matches the recorded metrics" in verified and "FAIL" not in verified
    assert "[ok] compute environment matches the version's: same CPU" in verified

    # request B forgets someone else, so its candidate still knows A's people: gated out, champion stays v1
    assert materialize_request(root, "req-b", instance=instance).success
    output()  # DVC's own progress lines
    assert cli_main([*cli, "promote", "micro-model", "2", "--json"]) == 1
    refused = json.loads(output())
    assert not refused["promoted"]
    assert [g["gate"] for g in refused["gates"] if not g["passed"]] == ["still_forgotten:req-a"]
    assert client.get_model_version("micro-model", "2").tags["promotion"] == "failed"
    assert str(client.get_registered_model("micro-model").aliases["champion"]) == "1"
    assert cli_main([*cli, "promote", "micro-model", "2", "--force"]) == 2  # forcing needs a reason

    # tampering: the champion alias moved by hand to B's candidate; the compliance job fails loudly
    client.set_registered_model_alias("micro-model", "champion", "2")
    compliance = materialize_request(root, None, ["champion_compliance"], raise_on_error=False, instance=instance)
    assert not compliance.success
    (still_forgets,) = compliance.get_asset_check_evaluations()
    assert not still_forgets.passed and "req-a" in (still_forgets.description or "")
    assert client.get_model_version("micro-model", "2").tags["compliance"] == "failed"

    # a tampered DVC object fails the audit: the forget set's cached bytes no longer hash to the manifest's md5
    forget_md5 = read_json(root / "assets" / "registry" / "req-a.json")["dvc_md5"]["forget_set"]
    cached = root / ".dvc" / "cache" / "files" / "md5" / forget_md5[:2] / forget_md5[2:]
    cached.chmod(0o644)
    cached.write_bytes(cached.read_bytes() + b"\n")
    assert cli_main([*cli, "audit", "verify", "models:/micro-model/1", "--no-rerun"]) == 1
    tampered = output()
    assert "[FAIL] DVC cache copy of forget_set" in tampered and "result: FAILED" in tampered

    # the model card says what was forgotten by hash and count; no forget-set answer is anywhere in MLflow
    card_dir = client.download_artifacts(client.get_model_version("micro-model", "1").run_id, "audit", str(tmp_path / "card"))
    card = (Path(card_dir) / "model_card.md").read_text()
    assert "request `req-a`" in card and "| still_forgotten" not in card and "forget records" in card
    answers = [r["answer"] for request in ("req-a", "req-b")
               for r in read_jsonl(root / "assets" / "datasets" / request / "forget.jsonl")]
    names = {r["subject"] for request in ("req-a", "req-b")
             for r in read_jsonl(root / "assets" / "datasets" / request / "forget.jsonl")}
    stored = b"".join(p.read_bytes() for p in (root / ".mlflow").rglob("*") if p.is_file())
    assert answers and not [a for a in answers if a.encode() in stored]
    assert not [n for n in names if n.encode() in stored]
    # nor in the Dagster event log of any run above (log lines, metadata, check descriptions)
    events = "".join(str(event) for run in instance.get_runs() for event in instance.all_logs(run.run_id))
    assert len(instance.get_runs()) >= 5 and "ASSET_MATERIALIZATION" in events
    assert not [a for a in answers if a in events] and not [n for n in names if n in events]
    # nor in any log record or printed line (CLI reports, progress bars, DVC, MLflow, Dagster's own loggers)
    output()  # what was printed since the last read
    logs = caplog.text + "".join(printed)
    assert len(caplog.records) > 100 and not [a for a in answers if a in logs] and not [n for n in names if n in logs]


@pytest.mark.e2e
def test_a_run_killed_during_training_reruns_to_exactly_one_version(micro_root: Path, one_thread,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """SIGKILL in the middle of the unlearning step, then the same request again: the finished assets are
    not recomputed (models come from their content-hash cache), training resumes from its last checkpoint,
    one version is registered, aliases agree, and the resumed adapter is the one a fresh rebuild makes."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    from mlflow import MlflowClient

    from dagster_project.core.tracking.dvc import status
    from dagster_project.core.tracking.mlflow_registry import tracking_uri

    params = yaml.safe_load((micro_root / "params.yaml").read_text())
    params["unlearn"]["graddiff"]["steps"] = 400  # long enough to be killed mid-way, short enough to rerun
    params["checkpoint"] = {"every_steps": 25}
    (micro_root / "params.yaml").write_text(yaml.safe_dump(params))
    layout = Layout.from_params(micro_root, load_params(micro_root))
    checkpoint = layout.cache_dir / "checkpoints" / "micro.pt"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from pathlib import Path; "
              f"from conftest import materialize_request; materialize_request(Path({str(micro_root)!r}), 'micro')")
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # tqdm draws the training bar on stderr as soon as the step trains
        if "unlearn graddiff/lora" in line:
            break
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:  # a first checkpoint, then the kill
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert layout.target_model_dir.exists() and not layout.registry_record.exists()  # killed between the two
    saved_at = torch.load(checkpoint, weights_only=True)["steps_done"]
    assert saved_at % 25 == 0 and 0 < saved_at < 400

    rerun = materialize_request(micro_root, "micro")
    assert rerun.success
    capsys.readouterr()
    for model in ("target_model", "retain_model"):  # finished before the kill: read back, not retrained
        assert rerun.asset_materializations_for_node(model)[0].metadata["cached"].value is True
    resumed = rerun.asset_materializations_for_node("unlearned_adapter")[0].metadata
    assert resumed["resumed_from_step"].value == saved_at and resumed["steps_done"].value == 400
    assert not checkpoint.exists()
    client = MlflowClient(tracking_uri=tracking_uri(micro_root), registry_uri=tracking_uri(micro_root))
    assert [str(v.version) for v in client.search_model_versions("name='micro-model'")] == ["1"]
    assert {alias: str(v) for alias, v in client.get_registered_model("micro-model").aliases.items()} == {"candidate": "1"}
    assert read_json(layout.registry_record)["version"] == "1"
    assert status(micro_root) == {}  # dvc.lock agrees with the workspace

    # the version re-created from scratch by `dvc repro` in an empty store matches it byte for byte
    assert cli_main(["--root", str(micro_root), "audit", "reproduce", "models:/micro-model/1", "--json"]) == 0
    reproduced = json.loads(capsys.readouterr().out)
    rebuilt = {c["check"] for c in reproduced["checks"] if c["ok"]}
    assert {"rebuilt target_model has the version's md5", "rebuilt unlearned_adapter has the version's md5",
            "rebuilt request has the version's md5", "compute environment matches the version's"} <= rebuilt
    assert reproduced["passed"]