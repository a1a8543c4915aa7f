"""In-process materialisation of the whole asset graph on a micro config, and the blocking GX gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import materialize_request

from dagster_project.cli import main as cli_main
from dagster_project.core.data import datasets
from dagster_project.core.data.io import read_json, read_jsonl
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.tracking import dvc as dvc_tracking
from dagster_project.core.tracking.mlflow_registry import registry_status


@pytest.mark.e2e
def test_whole_graph_registers_a_candidate_with_dvc_hashes(micro_root: Path, capsys: pytest.CaptureFixture) -> None:
    result = materialize_request(micro_root, "micro")
    assert result.success
    checks = result.get_asset_check_evaluations()
    # snap_data, revealed_forget_set, knowledge_probes and the four undeclared sources pass empty
    assert len(checks) == 10 and all(c.passed for c in checks)

    status = registry_status(micro_root)
    (model,) = status["models"]
    assert model["name"] == "micro-model" and model["aliases"] == {"candidate": "1"}
    (version,) = model["versions"]
    assert version["request_id"] == "micro"
    layout = Layout.from_params(micro_root, load_params(micro_root))
    # per-request stages are a dvc.yaml foreach: dvc.lock names them <stage>@<request id>
    locked = {stage: dvc_tracking.locked_outs(micro_root, f"{stage}@micro") for stage in ("forget_set", "unlearned_adapter")}
    assert version["dvc_md5"]["forget_set"] == locked["forget_set"][layout.rel(layout.forget_set)]
    assert version["dvc_md5"]["unlearned_adapter"] == locked["unlearned_adapter"][layout.rel(layout.unlearned_dir)]
    assert version["dvc_md5"]["unlearned_adapter"].endswith(".dir")
    for key in ("forget_quality", "model_utility", "forget_rouge"):
        assert 0.0 <= version["metrics"][key] <= 1.0

    # flat, stable run metric names; the retain model compared with itself has forget quality 1
    from mlflow import MlflowClient

    from dagster_project.core.tracking.mlflow_registry import tracking_uri

    run_metrics = MlflowClient(tracking_uri=tracking_uri(micro_root)).get_run(version["run_id"]).data.metrics
    assert run_metrics["forget10/forget_quality"] == pytest.approx(version["metrics"]["forget_quality"], rel=1e-5)
    assert run_metrics["retain/forget10/forget_quality"] == 1.0
    assert run_metrics["retain/forget10/priv_leak"] == 0.0

    # the Dagster metadata carries the same md5 DVC recorded, and no forget-set text
    forget_event = result.asset_materializations_for_node("forget_set")[0]
    assert forget_event.metadata["dvc_md5:forget.jsonl"].value == locked["forget_set"][layout.rel(layout.forget_set)]
    forget_names = {r["subject"] for r in read_jsonl(layout.forget_set)}
    all_metadata = json.dumps([str(e.metadata) for node in ("forget_request", "forget_set", "registered_model")
                               for e in result.asset_materializations_for_node(node)])
    assert forget_names and not any(name in all_metadata for name in forget_names)

    # DVC agrees with the workspace after the run, and the CLI reports the same registry
    assert dvc_tracking.status(micro_root) == {}
    assert cli_main(["--root", str(micro_root), "status", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["models"][0]["versions"][0]["aliases"] == ["candidate"]
    assert read_json(layout.registry_record)["version"] == "1"

    # `unlearn eval` on the registered candidate reproduces the pipeline's numbers; without a
    # reference it reports only retain-free metrics
    assert cli_main(["--root", str(micro_root), "eval", "--model", "models:/micro-model@candidate", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)["metrics"]
    assert "forget_quality" not in alone and "priv_leak" not in alone
    pipeline_metrics = read_json(layout.eval_dir / "report.json")["models"]["unlearned"]["metrics"]
    assert alone["mia_loss_auc"] == pytest.approx(pipeline_metrics["mia_loss_auc"])
    assert cli_main(["--root", str(micro_root), "eval", "--model", layout.rel(layout.unlearned_dir),
                     "--reference", layout.rel(layout.retain_model_dir), "--json"]) == 0
    referenced = json.loads(capsys.readouterr().out)["metrics"]
    assert referenced["forget_quality"] == pytest.approx(pipeline_metrics["forget_quality"])

    # `unlearn run` tries another method on the same request: mean ± std over seeds, nothing registered
    assert cli_main(["--root", str(micro_root), "run", "--method", "npo", "--set", "steps=2", "--set", "batch_size=4",
                     "--seeds", "0", "1", "--json"]) == 0
    tried = json.loads(capsys.readouterr().out)
    assert tried["hyperparameters"] == {"steps": 2, "batch_size": 4} and tried["seeds"] == [0, 1]
    assert 0.0 <= tried["metrics"]["forget_quality"]["mean"] <= 1.0 and tried["metrics"]["seconds"]["std"] >= 0.0
    cached_runs = sorted((layout.cache_dir / "method-runs").glob("*.json"))
    assert len(cached_runs) == 2  # one per seed
    # the same run again is read back from the cache (its wall time too); another hyper-parameter retrains
    assert cli_main(["--root", str(micro_root), "run", "--method", "npo", "--set", "steps=2", "--set", "batch_size=4",
                     "--seeds", "1", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["metrics"]
    assert sorted((layout.cache_dir / "method-runs").glob("*.json")) == cached_runs
    assert any(read_json(path)["seed"] == 1 and read_json(path)["metrics"]["seconds"] == again["seconds"]["mean"]
               for path in cached_runs)
    assert cli_main(["--root", str(micro_root), "run", "--method", "npo", "--set", "steps=3", "--set", "batch_size=4",
                     "--json"]) == 0
    capsys.readouterr()
    assert len(list((layout.cache_dir / "method-runs").glob("*.json"))) == 3
    assert len(registry_status(micro_root)["models"][0]["versions"]) == 1
    assert cli_main(["--root", str(micro_root), "run", "--method", "npo", "--set", "steps"]) == 2  # not KEY=VALUE
    assert cli_main(["--root", str(micro_root), "run", "--method", "nope"]) == 2


def test_failing_gx_check_blocks_unlearning(micro_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = datasets.build_retain_set

    def leaky_retain_set(qa, splits, forget_ids):  # a bug that leaks one forget record into the retain set
        return real_build(qa, splits, forget_ids) + datasets.build_forget_set(qa, forget_ids)[:1]

    monkeypatch.setattr("dagster_project.core.stages.build_retain_set", leaky_retain_set)
    selection = ["tofu_like_corpus", "forget_request", "forget_set", "retain_set", "unlearned_adapter"]
    result = materialize_request(micro_root, "micro", selection, dvc_commit=False, raise_on_error=False)
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [c.check_name for c in failed] == ["retain_set_is_valid_and_disjoint"]
    assert "shares" in (failed[0].description or "")
    assert result.asset_materializations_for_node("unlearned_adapter") == []
    layout = Layout.from_params(micro_root, load_params(micro_root))
    assert not layout.unlearned_dir.exists()


def test_snap_request_trains_on_its_validated_snap_data_asset(micro_root: Path) -> None:
    (micro_root / "data" / "requests" / "micro.yaml").write_text(
        "id: micro\nsplit: forget10\nmethod: snap\nmode: lora\nhyperparameters:\n  steps: 3\n  batch_size: 4\n"
        "  swd_directions: 8\n")
    # θ₀ must be able to answer its hard positives: train the micro target model long enough to say something
    params = load_params(micro_root)
    params["train"].update(epochs=30, schedule_epochs=30, lr=0.01)
    (micro_root / "params.yaml").write_text(yaml.safe_dump(params))
    selection = ["tofu_like_corpus", "forget_request", "forget_set", "retain_set", "tokenizer", "target_model",
                 "snap_data", "unlearned_adapter"]
    result = materialize_request(micro_root, "micro", selection, dvc_commit=False)
    assert result.success
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "snap_data_is_valid"]
    assert check.passed and check.metadata["rows"].value > 0
    metadata = result.asset_materializations_for_node("snap_data")[0].metadata
    layout = Layout.from_params(micro_root, load_params(micro_root))
    forget = read_jsonl(layout.forget_set)
    negative = read_jsonl(layout.snap_data_dir / "negative.jsonl")
    hard = read_jsonl(layout.snap_data_dir / "hard_positives.jsonl")
    assert metadata["built"].value is True and metadata["answered_by"].value == "theta0"
    assert metadata["negative_pairs"].value == len(negative) >= 35 * len({r["person_id"] for r in forget})
    assert hard and not {r["person_id"] for r in hard} & {r["person_id"] for r in forget}
    assert not any(r["subject"] in str(metadata) for r in forget)  # counts and md5s only
    manifest = read_json(layout.unlearned_dir / "unlearn_manifest.json")
    assert manifest["method"] == "snap" and manifest["steps_done"] == 3
    # generated once per (θ₀, data, seed): a re-materialisation reads the content-hash cache back
    (cached,) = (layout.personal_cache_dir / "snap-data").glob("*.json")
    read_again = materialize_request(micro_root, "micro", ["snap_data"], dvc_commit=False)
    assert read_again.success and read_jsonl(layout.snap_data_dir / "negative.jsonl") == negative
    assert list((layout.personal_cache_dir / "snap-data").glob("*.json")) == [cached]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_wagle_request_masks_weights_or_places_adapters(micro_root: Path, mode: str) -> None:
    import torch
    from safetensors.torch import load_file

    from dagster_project.core.attribution import load_mask

    (micro_root / "data" / "requests" / "micro.yaml").write_text(
        f"id: micro\nsplit: forget10\nmethod: npo\nmode: {mode}\nhyperparameters:\n  steps: 3\n  batch_size: 4\n"
        "wagle:\n  ratio: 0.5\n")
    selection = ["tofu_like_corpus", "forget_request", "forget_set", "retain_set", "tokenizer", "target_model",
                 "snap_data", "weight_attribution", "unlearned_adapter"]
    result = materialize_request(micro_root, "micro", selection, dvc_commit=False)
    assert result.success
    metadata = result.asset_materializations_for_node("weight_attribution")[0].metadata
    assert metadata["built"].value is True and metadata["kept"].value == round(0.5 * metadata["total"].value)
    layout = Layout.from_params(micro_root, load_params(micro_root))
    manifest = read_json(layout.attribution_dir / "manifest.json")
    assert manifest["mask_sha256"] == metadata["mask_sha256"].value and manifest["lora_targets"]
    if mode == "full":
        mask = load_mask(layout.attribution_dir / "mask.safetensors")
        before = load_file(str(layout.target_model_dir / "model.safetensors"))
        after = load_file(str(layout.unlearned_dir / "model.safetensors"))
        for name, keep in mask.items():
            assert torch.equal(after[name][~keep], before[name][~keep])  # masked weights bit-identical
        assert any(not torch.equal(after[n][k], before[n][k]) for n, k in mask.items() if k.any())
    else:
        adapter = read_json(layout.unlearned_dir / "adapter_config.json")
        assert sorted(adapter["target_modules"]) == sorted(manifest["lora_targets"])


@pytest.mark.e2e
def test_reveal_request_trains_on_what_the_model_reveals(micro_root: Path) -> None:
    """`forget_data: reveal`: the revealed set is an asset with a blocking GX check, release rounds produce a
    merged model that evaluation and registration take like any other, and MLflow gets hashes, not names."""
    import mlflow

    (micro_root / "data" / "requests" / "micro.yaml").write_text(
        "id: micro\nsplit: forget10\nmethod: npo\nforget_data: reveal\n")
    params = load_params(micro_root)
    # the micro model (one epoch) says little that is relevant: keep all it says, release at any relevance
    params["reveal"]["relevance_threshold"], params["release"]["stop_relevance"] = 0.0, 0.0
    (micro_root / "params.yaml").write_text(yaml.safe_dump(params))
    result = materialize_request(micro_root, "micro")
    assert result.success
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "revealed_forget_set_is_valid"]
    assert check.passed and check.metadata["rows"].value > 0
    layout = Layout.from_params(micro_root, load_params(micro_root))
    metadata = result.asset_materializations_for_node("revealed_forget_set")[0].metadata
    revealed = read_jsonl(layout.revealed_dir / "revealed.jsonl")
    assert metadata["built"].value is True and metadata["rounds"].value == 6 and metadata["revealed"].value == len(revealed)
    manifest = read_json(layout.unlearned_dir / "unlearn_manifest.json")
    assert manifest["forget_data"] == "reveal" and manifest["rounds_done"] == 1 and manifest["objective"] == "npo"
    assert (layout.unlearned_dir / "rounds" / "round-0" / "forget" / "adapter_model.safetensors").exists()
    # what each round trained on is versioned beside the datasets, not in the model folder MLflow stores
    assert read_jsonl(layout.release_rounds_dir / "round-0" / "revealed.jsonl")
    assert not list(layout.unlearned_dir.rglob("*.jsonl"))
    assert (layout.unlearned_dir / "model.safetensors").exists()  # the merged composition, evaluated and registered
    assert "forget_quality" in read_json(layout.eval_dir / "report.json")["models"]["unlearned"]["metrics"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{micro_root / '.mlflow' / 'mlflow.db'}")
    assert client.get_model_version(params["registry"]["model_name"], "1").tags["forget_data"] == "reveal"
    # the reveal run: one reward per round, plotted by MLflow; subject names appear nowhere
    (run,) = client.search_runs([client.get_experiment_by_name("reveal").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "reward")) == 6
    subjects = {r["subject"] for r in read_jsonl(layout.forget_set)}
    logged = json.dumps([run.data.params, run.data.tags, str(metadata)])
    assert not any(subject in logged for subject in subjects)
