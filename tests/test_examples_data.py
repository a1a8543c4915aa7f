"""The worked examples' data: committed exactly as profiles/examples.py writes it, and a profile root gets it all."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dagster_project.core.data.request import load_request
from dagster_project.core.layout import load_params
from dagster_project.core.sources.load import declared_sources, read_source
from dagster_project.profiles.examples import EXAMPLES, PROFILES


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_committed_example_data_is_what_the_generator_writes(example: str) -> None:
    files = EXAMPLES[example]()
    for relative, content in files.items():
        path = PROFILES / example / relative
        assert path.read_text(encoding="utf-8") == content, f"{path} is stale: python -m dagster_project.profiles.examples"
    committed = {p.relative_to(PROFILES / example).as_posix() for p in (PROFILES / example).rglob("*") if p.is_file()}
    assert committed - set(files) <= {f"data/requests/{name}" for name in ("forget-customer.yaml", "forget-holmes.yaml")}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_a_profile_root_has_valid_sources_and_request(tmp_path: Path, example: str) -> None:
    from dagster_project.cli import main as cli_main

    assert cli_main(["profile", "init", example, str(tmp_path / "root")]) == 0
    root = tmp_path / "root"
    params = load_params(root)
    request = load_request(root / params["request"], root / params["requests_dir"])
    records = {role: [r for spec in specs for r in read_source(spec, root, role)]
               for role, specs in declared_sources(params).items()}
    assert all(records.values()) and "nonmember" in records
    names = [form for subject in request.subject_entries for form in subject.forms]
    # the non-members never name the subject: membership inference compares strangers' text with theirs
    assert not [r for r in records["nonmember"] if any(n.casefold() in r["completion"].casefold() for n in names)]
    if example == "support-tickets":
        assert len(records["train"]) == 126 and request.records == {"train": ["T-20002"]}
        assert {r["record"] for r in records["train"]} >= {"T-20002", "N-10001"}
    else:
        assert "train" not in records and "train" not in params and request.documents == ["holmes.md"]
    # init again with the same settings is a no-op, with others it is refused
    assert cli_main(["profile", "init", example, str(root)]) == 0
    assert cli_main(["profile", "init", example, str(root), "--set", "eval.seed=1"]) == 2
    assert yaml.safe_load((root / "params.yaml").read_text())["eval"]["seed"] == 0
