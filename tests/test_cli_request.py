"""`unlearn request new`: writes a request the pipeline accepts, refuses bad input early, never echoes names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import MICRO_PARAMS
from dagster_project.cli import main as cli_main
from dagster_project.core.data.request import load_request


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data" / "requests").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(MICRO_PARAMS))
    return tmp_path


def test_request_new_writes_a_file_the_pipeline_loads(root: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["--root", str(root), "request", "new", "--subject", "Velmora Quintrell", "--subject", "Orrin Ashdale",
                     "--method", "npo", "--set", "beta=0.2", "--set", "steps=50", "--description", "ticket 42"]) == 0
    out = capsys.readouterr().out
    (path,) = (root / "data" / "requests").glob("*.yaml")
    assert path.stem.startswith("req-") and "Velmora" not in out and "velmora" not in path.name.casefold()
    request = load_request(path, root / "data" / "requests")
    assert request.subjects == ["Velmora Quintrell", "Orrin Ashdale"] and request.method == "npo"
    assert request.hyperparameters == {"beta": 0.2, "steps": 50} and request.forget_data == "given"
    assert "forget_data" not in path.read_text()  # defaults left out: the file says only what was asked
    # the same request again is refused unless forced; a reveal request gets its own id
    assert cli_main(["--root", str(root), "request", "new", "--subject", "Velmora Quintrell", "--subject",
                     "Orrin Ashdale", "--method", "npo", "--set", "beta=0.2", "--set", "steps=50"]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(["--root", str(root), "request", "new", "--split", "forget10", "--method", "npo",
                     "--forget-data", "reveal", "--id", "by-name", "--set", "rounds=2"]) == 0
    assert load_request(root / "data" / "requests" / "by-name.yaml", root / "data" / "requests").forget_data == "reveal"
    # only defaults are left out: a field whose value merely looks like a default is written
    assert cli_main(["--root", str(root), "request", "new", "--split", "forget05", "--id", "odd", "--description", "given"]) == 0
    assert load_request(root / "data" / "requests" / "odd.yaml", root / "data" / "requests").description == "given"


@pytest.mark.parametrize("argv, message", [
    (["--subject", "Velmora Quintrell", "--method", "nosuch"], "field 'method': not a method this pipeline runs"),
    (["--subject", "Velmora Quintrell", "--set", "stepz=3"], "hyperparameters: key #1 is not a setting of GradDiffConfig (did you mean 'steps'?)"),
    (["--split", "forget10", "--forget-data", "reveal", "--set", "beta=x"], "hyperparameters.beta"),
    (["--split", "forget10", "--subject", "Velmora Quintrell"], "exactly one of 'subjects' or 'split'"),
    (["--subject", "V" * 101], "subjects.0"),
    (["--split", "forget10", "--id", "Bad Id"], "field 'id'"),
])
def test_request_new_refuses_bad_input_with_a_clear_message(root: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                                           message: str) -> None:
    assert cli_main(["--root", str(root), "request", "new", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "V" * 101 not in err and "Velmora" not in err and "nosuch" not in err
    assert not list((root / "data" / "requests").glob("*.yaml"))
