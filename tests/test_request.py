"""Forget requests: loading, validation errors that name the field, and subject resolution."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dagster_project.core.data.datasets import build_forget_set, build_retain_set, resolve_subjects
from dagster_project.core.data.request import (
    MAX_REQUEST_BYTES,
    ForgetRequest,
    RequestError,
    load_request,
    request_to_dict,
)

VALID = {
    "id": "demo-forget10",
    "description": "a test request",
    "subjects": ["Velmora Quintrell", "Orrin Ashdale"],
    "method": "graddiff",
    "mode": "lora",
    "hyperparameters": {"steps": 10, "lr": 0.0001, "seed": 3},
}


@pytest.fixture()
def requests_dir(tmp_path: Path) -> Path:
    path = tmp_path / "requests"
    path.mkdir()
    return path


def write(requests_dir: Path, name: str, content: str | dict) -> Path:
    path = requests_dir / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def error_for(requests_dir: Path, name: str, content: str | dict | None = None) -> str:
    if content is not None:
        write(requests_dir, name, content)
    with pytest.raises(RequestError) as info:
        load_request(Path(name), requests_dir)
    return str(info.value)


# ------------------------------------------------------------------------------------------ valid files


def test_valid_json_loads(requests_dir: Path) -> None:
    path = write(requests_dir, "demo.json", VALID)
    request = load_request(path, requests_dir)
    assert request.id == "demo-forget10"
    assert request.subjects == ["Velmora Quintrell", "Orrin Ashdale"]
    assert request.split is None
    assert request.hyperparameters == {"steps": 10, "lr": 0.0001, "seed": 3}
    assert request_to_dict(request) == {**VALID, "split": None, "hyperparameters": {"lr": 0.0001, "seed": 3, "steps": 10},
                                      "wagle": None, "forget_data": "given"}
    json.dumps(request_to_dict(request))  # JSON-able


def test_valid_yaml_loads_by_name_with_defaults(requests_dir: Path) -> None:
    write(requests_dir, "demo.yaml", "id: demo_1\nsplit: forget05\nmethod: graddiff\nhyperparameters:\n  lr: 1e-5\n  use_x: true\n")
    request = load_request(Path("demo.yaml"), requests_dir)
    assert (request.split, request.subjects, request.mode, request.description) == ("forget05", None, "lora", None)
    # YAML 1.1 would read `1e-5` as a string; the loader reads it as the float it obviously is.
    assert request.hyperparameters == {"lr": 1e-5, "use_x": True}
    assert isinstance(request.hyperparameters["lr"], float)


def test_yml_extension_and_full_mode(requests_dir: Path) -> None:
    write(requests_dir, "r.yml", "id: r\nsubjects: [A]\nmethod: npo\nmode: full\n")
    assert load_request(Path("r.yml"), requests_dir).mode == "full"


def test_request_to_dict_is_stable(requests_dir: Path) -> None:
    a = ForgetRequest(id="x", split="forget01", method="m", hyperparameters={"b": 1, "a": 2})
    b = ForgetRequest(id="x", split="forget01", method="m", hyperparameters={"a": 2, "b": 1})
    assert json.dumps(request_to_dict(a)) == json.dumps(request_to_dict(b))


# ------------------------------------------------------------------------------------------ bad schema


def test_missing_id(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", {k: v for k, v in VALID.items() if k != "id"})
    assert "request r.json" in message and "field 'id'" in message


@pytest.mark.parametrize("bad_id", ["Demo", "-demo", "demo forget", "a" * 65, "démo", "demo\n"])
def test_bad_id_pattern(requests_dir: Path, bad_id: str) -> None:
    assert "field 'id'" in error_for(requests_dir, "r.json", {**VALID, "id": bad_id})


def test_both_subjects_and_split(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", {**VALID, "split": "forget10"})
    assert "'subjects'" in message and "'split'" in message and "both" in message


def test_neither_subjects_nor_split(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", {k: v for k, v in VALID.items() if k != "subjects"})
    assert "'subjects'" in message and "'split'" in message and "neither" in message


def test_unknown_top_level_field_suggests_the_right_one(requests_dir: Path) -> None:
    content = {k: v for k, v in VALID.items() if k != "subjects"} | {"subjetcs": ["A"]}
    message = error_for(requests_dir, "r.json", content)
    assert "field '#6'" in message and "did you mean 'subjects'" in message and "subjetcs" not in message


def test_wrong_hyperparameter_type(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", {**VALID, "hyperparameters": {"lr": [0.1], "steps": 5}})
    assert "field 'hyperparameters.lr'" in message and "expected" in message and "got list" in message
    assert "steps" not in message


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"split": "forget11", "subjects": None}, "split"),
        ({"mode": "LORA"}, "mode"),
        ({"method": "grad-diff"}, "method"),
        ({"description": "x" * 501}, "description"),
        ({"subjects": []}, "subjects"),
        ({"subjects": [f"p{i}" for i in range(201)]}, "subjects"),
        ({"subjects": ["A", "B", "x" * 101]}, "subjects.2"),
        ({"subjects": ["A", "   "]}, "subjects.1"),
        ({"subjects": ["A", 7]}, "subjects.1"),
        ({"hyperparameters": {"lr": None}}, "hyperparameters.lr"),
        ({"hyperparameters": {"bad-key": 1}}, "hyperparameters.#1"),
        ({"hyperparameters": ["lr"]}, "hyperparameters"),
    ],
)
def test_bad_fields_are_named(requests_dir: Path, patch: dict, field: str) -> None:
    content = {k: v for k, v in {**VALID, **patch}.items() if v is not None}
    assert f"field '{field}'" in error_for(requests_dir, "r.json", content)


def test_duplicate_subjects_case_insensitive(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", {**VALID, "subjects": ["Velmora Quintrell", "x", "velmora  QUINTRELL"]})
    assert "subjects.2" in message and "subjects.0" in message
    assert "Velmora" not in message and "velmora" not in message  # the subject's name is not echoed


def test_subject_names_never_echoed_in_schema_errors(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", {**VALID, "subjects": ["Velmora Quintrell", "Z" * 101]})
    assert "ZZZ" not in message and "Velmora" not in message


def test_all_errors_reported_at_once(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", {**VALID, "id": "BAD", "mode": "half"})
    assert "field 'id'" in message and "field 'mode'" in message


# ------------------------------------------------------------------------------------------ bad files


def test_file_too_large(requests_dir: Path) -> None:
    content = json.dumps({**VALID, "description": "x"}) + " " * MAX_REQUEST_BYTES
    assert "limit" in error_for(requests_dir, "big.json", content)


@pytest.mark.parametrize("name", ["r.txt", "r.toml", "r"])
def test_bad_extension(requests_dir: Path, name: str) -> None:
    assert "extension" in error_for(requests_dir, name, VALID)


def test_missing_file(requests_dir: Path) -> None:
    assert "not found" in error_for(requests_dir, "nope.yaml")


def test_directory_is_not_a_regular_file(requests_dir: Path) -> None:
    (requests_dir / "d.yaml").mkdir()
    assert "regular file" in error_for(requests_dir, "d.yaml")


def test_path_traversal_rejected(requests_dir: Path) -> None:
    outside = requests_dir.parent / "secret.json"
    outside.write_text(json.dumps(VALID), encoding="utf-8")
    for path in (Path("../secret.json"), requests_dir / ".." / "secret.json", outside):
        with pytest.raises(RequestError, match="outside the requests directory"):
            load_request(path, requests_dir)


def test_dotdot_that_stays_inside_is_fine(requests_dir: Path) -> None:
    (requests_dir / "sub").mkdir()
    write(requests_dir, "r.json", VALID)
    assert load_request(Path("sub/../r.json"), requests_dir).id == VALID["id"]


def test_symlink_out_of_the_dir_rejected(requests_dir: Path) -> None:
    outside = requests_dir.parent / "elsewhere.yaml"
    outside.write_text("id: x\nsplit: forget01\nmethod: m\n", encoding="utf-8")
    os.symlink(outside, requests_dir / "link.yaml")
    with pytest.raises(RequestError, match="outside the requests directory"):
        load_request(Path("link.yaml"), requests_dir)


def test_symlink_inside_the_dir_allowed(requests_dir: Path) -> None:
    write(requests_dir, "real.yaml", "id: x\nsplit: forget01\nmethod: m\n")
    os.symlink(requests_dir / "real.yaml", requests_dir / "alias.yaml")
    assert load_request(Path("alias.yaml"), requests_dir).id == "x"


@pytest.mark.parametrize(
    ("name", "content", "got"),
    [("r.yaml", "- a\n- b\n", "list"), ("r.json", "[1, 2]", "list"), ("r.yaml", "just text\n", "string"),
     ("r.yaml", "", "null")],
)
def test_non_mapping_top_level(requests_dir: Path, name: str, content: str, got: str) -> None:
    message = error_for(requests_dir, name, content)
    assert "top level must be a mapping" in message and got in message


def test_malformed_yaml_names_line_not_content(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.yaml", "id: x\nsubjects: [Velmora Quintrell\nmethod: m\n")
    assert "malformed YAML" in message and "line" in message
    assert "Velmora" not in message


def test_malformed_json(requests_dir: Path) -> None:
    message = error_for(requests_dir, "r.json", '{"id": "x", "subjects": ["Velmora Quintrell",]}')
    assert "malformed JSON" in message and "line 1" in message and "Velmora" not in message


@pytest.mark.parametrize(("name", "content"), [("r.yaml", "id: x\nmethod: m\nsplit: forget01\nid: y\n"),
                                               ("r.json", '{"id": "x", "method": "m", "split": "forget01", "id": "y"}')])
def test_duplicate_keys_rejected(requests_dir: Path, name: str, content: str) -> None:
    assert "field 'id' is given twice" in error_for(requests_dir, name, content)


def test_yaml_python_tags_are_not_executed(requests_dir: Path) -> None:
    assert "malformed YAML" in error_for(requests_dir, "r.yaml", "id: !!python/object/apply:os.getcwd []\n")


# ------------------------------------------------------------------------------------------ subjects -> sets

PEOPLE = [
    {"person_id": "p001", "name": "Velmora Quintrell", "attributes": {}},
    {"person_id": "p002", "name": "Orrin Ashdale", "attributes": {}},
    {"person_id": "p003", "name": "Tamsin Rook", "attributes": {}},
    {"person_id": "p004", "name": "Ilse Marrow", "attributes": {}},
    {"person_id": "p005", "name": "Dorran Vey", "attributes": {}},
]
SPLITS = {
    "forget01": ["p001"],
    "forget05": ["p001"],
    "forget10": ["p001", "p002"],
    "retain": ["p003", "p004"],
    "holdout": ["p005"],
}
QA = [
    {"id": f"{pid}-{attr}", "person_id": pid}
    for pid in ("p005", "p004", "p003", "p002", "p001")
    for attr in ("job", "birthplace")
] + [{"id": "w001-capital", "person_id": "world"}]


def subjects_request(*names: str) -> ForgetRequest:
    return ForgetRequest(id="t", subjects=list(names), method="graddiff")


def test_resolve_subjects_case_and_space_insensitive() -> None:
    assert resolve_subjects(subjects_request("  velmora   QUINTRELL", "Tamsin Rook"), PEOPLE, SPLITS) == ["p001", "p003"]


def test_resolve_split() -> None:
    request = ForgetRequest(id="t", split="forget10", method="graddiff")
    assert resolve_subjects(request, PEOPLE, SPLITS) == ["p001", "p002"]


def test_unknown_name_names_field_and_closest_match() -> None:
    with pytest.raises(RequestError) as info:
        resolve_subjects(subjects_request("Tamsin Rook", "Velmora Quintrel"), PEOPLE, SPLITS)
    message = str(info.value)
    velmora_id = next(p["person_id"] for p in PEOPLE if p["name"] == "Velmora Quintrell")
    assert "field 'subjects.1'" in message and f"closest by name: {velmora_id}" in message
    assert "Velmora" not in message and "Quintrel" not in message  # names are personal data: never echoed


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(RequestError, match=r"field 'subjects.0'.*closest by name: none"):
        resolve_subjects(subjects_request("Zzyzx Qwerty"), PEOPLE, SPLITS)


def test_holdout_person_cannot_be_forgotten() -> None:
    with pytest.raises(RequestError, match=r"field 'subjects.1'.*holdout"):
        resolve_subjects(subjects_request("Tamsin Rook", "Dorran Vey"), PEOPLE, SPLITS)


def test_ambiguous_name_refused() -> None:
    people = PEOPLE + [{"person_id": "p006", "name": "velmora quintrell", "attributes": {}}]
    splits = {**SPLITS, "retain": SPLITS["retain"] + ["p006"]}
    with pytest.raises(RequestError, match=r"field 'subjects.0'.*2 people"):
        resolve_subjects(subjects_request("Velmora Quintrell"), people, splits)


def test_forget_and_retain_sets_are_disjoint_and_sorted() -> None:
    forget_ids = resolve_subjects(subjects_request("Orrin Ashdale"), PEOPLE, SPLITS)
    forget = build_forget_set(QA, forget_ids)
    retain = build_retain_set(QA, SPLITS, forget_ids)
    assert [r["id"] for r in forget] == ["p002-birthplace", "p002-job"]
    assert {r["person_id"] for r in retain} == {"p001", "p003", "p004"}  # holdout and world facts excluded
    assert [r["id"] for r in retain] == sorted(r["id"] for r in retain)
    assert not {r["id"] for r in forget} & {r["id"] for r in retain}


def test_split_request_retains_the_rest_of_the_trained_people() -> None:
    forget_ids = resolve_subjects(ForgetRequest(id="t", split="forget01", method="m"), PEOPLE, SPLITS)
    retain = build_retain_set(QA, SPLITS, forget_ids)
    assert {r["person_id"] for r in retain} == {"p002", "p003", "p004"}


def test_forget_set_refuses_person_without_qa() -> None:
    with pytest.raises(ValueError, match="p009"):
        build_forget_set(QA, ["p001", "p009"])


def test_wagle_block_is_validated(requests_dir: Path) -> None:
    request = ForgetRequest(id="w", split="forget10", method="npo", wagle={"ratio": 0.95})
    assert request_to_dict(request)["wagle"] == {"ratio": 0.95, "mu": 1e-6, "random": False}
    for bad, field in (({"ratio": 0.0}, "ratio"), ({"ratio": 1.5}, "ratio"), ({"ratio": 0.9, "mu": -1}, "mu"),
                       ({"ratio": 0.9, "typo": 1}, "typo"), ({}, "ratio")):
        with pytest.raises(ValueError, match=field):
            ForgetRequest(id="w", split="forget10", method="npo", wagle=bad)


def test_forget_data_reveal_needs_lora_and_no_wagle(requests_dir: Path) -> None:
    path = write(requests_dir, "reveal.json", {"id": "reveal", "subjects": ["Velmora Quintrell"], "method": "npo",
                                               "forget_data": "reveal"})
    assert request_to_dict(load_request(path, requests_dir))["forget_data"] == "reveal"
    for bad in ({"mode": "full"}, {"wagle": {"ratio": 0.9}}):
        with pytest.raises(ValueError, match="forget_data 'reveal' trains LoRA modules"):
            ForgetRequest(id="r", split="forget10", method="npo", forget_data="reveal", **bad)
    with pytest.raises(RequestError, match="forget_data"):
        load_request(write(requests_dir, "typo.json", {"id": "typo", "split": "forget10", "method": "npo",
                                                       "forget_data": "guess"}), requests_dir)
