"""Retention: once a request's run has registered a version, its text is only in the artifact store; after
`unlearn request purge`, nowhere in the root, its DVC cache or its remote, and the audit trail still verifies."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from conftest import materialize_request
from dagster_project.cli import main as cli_main
from dagster_project.core.data.io import read_jsonl
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.tracking.dvc import push

# what the embedded corpus's own training data and the models trained on it legitimately hold: the forget people
# are in the corpus (the user's training data, which cleaned_training_set replaces) and in θ₀'s tokenizer
TRAINING_DATA = ("assets/corpus/", "assets/tokenizer/", "assets/models/", "data/requests/", ".dvc/")


def _files_naming(folder: Path, names: list[str], skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(skip):
            continue
        data = path.read_bytes()
        if any(name.encode() in data for name in names):
            found.append(rel)
    return found


def test_a_finished_request_leaves_its_text_only_in_the_store_and_purge_removes_it(
        micro_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    layout = Layout.from_params(micro_root, load_params(micro_root))
    with dg.DagsterInstance.get() as instance:
        assert materialize_request(micro_root, "micro", instance=instance).success
    names = sorted({r["subject"] for r in read_jsonl(layout.forget_set)})
    assert names
    push(micro_root)

    # the run is done: no cache outside the store holds the request's text, nor does the Dagster instance
    assert not layout.personal_cache_dir.exists()
    outside_store = [p for p in _files_naming(micro_root, names, TRAINING_DATA) if not p.startswith("assets/")]
    assert outside_store == []
    assert _files_naming(tmp_path / "dagster_home", names) == []

    # a dry run lists and deletes nothing
    assert cli_main(["--root", str(micro_root), "request", "purge", "micro", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["deleted"] is False and "assets/datasets/micro/forget.jsonl" in listed["files"]
    assert layout.forget_set.exists()

    assert cli_main(["--root", str(micro_root), "request", "purge", "micro", "--yes", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted"] and report["cache_objects"] > 0 and report["remote_objects"] == report["cache_objects"]
    assert not layout.forget_set.exists() and not (micro_root / layout.request_file).exists()
    # nothing that names the subjects is left but the training data itself (corpus, θ₀) and its DVC objects
    assert _files_naming(micro_root, names, TRAINING_DATA) == []
    cache = micro_root / ".dvc" / "cache" / "files" / "md5"
    remote = tmp_path / "dvc-remote" / "files" / "md5"
    forget_md5 = report["files"]["assets/datasets/micro/forget.jsonl"]
    assert not (cache / forget_md5[:2] / forget_md5[2:]).exists()
    assert not (remote / forget_md5[:2] / forget_md5[2:]).exists()
    # the kept adapter, report and record, and the purge record holding md5s only
    assert layout.unlearned_dir.is_dir() and layout.registry_record.is_file()
    record = json.loads((micro_root / "assets" / "registry" / "micro-purged.json").read_text())
    assert record["files"]["assets/datasets/micro/forget.jsonl"] == forget_md5
    assert not any(name in json.dumps(record) for name in names)

    # the audit trail verifies with hashes alone
    version = json.loads(layout.registry_record.read_text())["version"]
    code = cli_main(["--root", str(micro_root), "audit", "verify", f"models:/micro-model/{version}", "--json"])
    verdict = json.loads(capsys.readouterr().out)
    assert code == 0 and verdict["passed"], verdict
    checks = {c["check"]: c for c in verdict["checks"]}
    assert {"forget_set purged", "retain_set purged", "request purged"} <= set(checks)
    assert "skipped: the request's data was purged" in checks["evaluation re-run"]["detail"]
    assert checks["copies of unlearned_adapter hash to the version's md5"]["ok"]
