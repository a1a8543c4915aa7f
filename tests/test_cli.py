"""The `unlearn` console script: help, clear errors on bad requests, stages through the core functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagster_project.cli import main


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("status", "summary", "stage", "dvc-yaml", "methods"):
        assert command in out


@pytest.mark.parametrize("command", ["verify", "reproduce"])
def test_audit_help_names_the_pinned_variables(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(v in out for v in ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "UNLEARN_CPU_BF16",
                                  "UNLEARN_CUDA_DETERMINISTIC", "compute environment"))


def test_stage_runs_core_function_and_prints_counts(micro_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--root", str(micro_root), "stage", "tofu_like_corpus"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["stage"] == "tofu_like_corpus" and printed["people"] == 14 and printed["qa"] == 14 * 12
    assert (micro_root / "assets" / "corpus" / "qa.jsonl").exists()


def test_bad_request_gets_an_error_naming_the_field(micro_root: Path, capsys: pytest.CaptureFixture) -> None:
    (micro_root / "data" / "requests" / "micro.yaml").write_text("id: micro\nsplit: forget10\nmethod: graddiff\nmode: sideways\n")
    assert main(["--root", str(micro_root), "stage", "forget_request"]) == 2
    err = capsys.readouterr().err
    assert "field 'mode'" in err and "Traceback" not in err


def test_request_id_must_match_file_name(micro_root: Path, capsys: pytest.CaptureFixture) -> None:
    (micro_root / "data" / "requests" / "micro.yaml").write_text("id: other\nsplit: forget10\nmethod: graddiff\n")
    assert main(["--root", str(micro_root), "stage", "forget_request"]) == 2
    assert "must equal the file name" in capsys.readouterr().err


def test_unknown_subject_is_refused_before_training(micro_root: Path, capsys: pytest.CaptureFixture) -> None:
    (micro_root / "data" / "requests" / "micro.yaml").write_text("id: micro\nsubjects: [Nobody Atall]\nmethod: graddiff\n")
    assert main(["--root", str(micro_root), "stage", "tofu_like_corpus"]) == 0
    # the request's first stage checks its subjects against the built corpus: nothing is written
    assert main(["--root", str(micro_root), "stage", "forget_request"]) == 2
    err = capsys.readouterr().err
    assert "subjects.0" in err and "no person with this name" in err and "Nobody" not in err
    assert not (micro_root / "assets" / "requests").exists()


def test_methods_lists_graddiff_with_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "graddiff" in out and "retain_loss" in out


def test_status_on_an_empty_store(micro_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--root", str(micro_root), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == []


def test_set_overrides_parse_numbers_like_a_person_writes_them() -> None:
    from dagster_project.cli import parse_overrides

    assert parse_overrides(["lr=1e-4", "steps=20", "retain_loss=kl", "flag=true", "beta=0.1"]) == {
        "lr": 1e-4, "steps": 20, "retain_loss": "kl", "flag": True, "beta": 0.1}
    assert isinstance(parse_overrides(["lr=1e-4"])["lr"], float)
