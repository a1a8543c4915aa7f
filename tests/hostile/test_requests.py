"""Every hostile request file of tests/hostile/cases.py, through the entry points that read request files:
`unlearn request sync` and the sensor on data/requests/. For each case:

- the outcome: refused with its one-line reason (sync exits 1, the sensor skips it), or accepted as a partition;
- one bad file harms nothing: a valid request beside it still gets its partition and its run;
- nothing is registered and no artifact is left: the pipeline root is byte-identical outside data/requests/
  (dvc.yaml gains stages only for an accepted request);
- the subject's name appears in no output, log, Dagster instance file or artifact.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dagster_project.cli import main as cli_main
from dagster_project.core.data.corpus import load_corpus
from dagster_project.core.data.datasets import trained_person_ids
from dagster_project.core.layout import Layout
from dagster_project.core.stages import run_stage
from dagster_project.defs.resources import PipelineResource
from dagster_project.defs.sensors import new_request_files
from conftest import MICRO_PARAMS
from cases import BASE, CASES, VALID, Case

NEIGHBOUR = "neighbour"  # a valid request beside every hostile file


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro pipeline root whose corpus is built (so subjects are checked against it where requests are read)."""
    root = tmp_path_factory.mktemp("hostile") / "root"
    (root / "data" / "requests").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(MICRO_PARAMS))
    run_stage("tofu_like_corpus", Layout.from_params(root, MICRO_PARAMS), MICRO_PARAMS)
    return root


def _names(root: Path) -> dict[str, str]:
    corpus = load_corpus(root / "assets" / "corpus")
    trained = trained_person_ids(corpus.splits)
    by_id = {p["person_id"]: p["name"] for p in corpus.people}
    name, other = (by_id[pid] for pid in sorted(trained)[:2])
    return {"name": name, "other": other, "NAME": name.upper(), "lower": name.replace(" ", "").lower(),
            "key": name.replace(" ", "_"), "holdout": by_id[corpus.splits["holdout"][0]],
            "everyone": "[" + ", ".join(by_id[pid] for pid in sorted(trained)) + "]"}


def _snapshot(root: Path) -> dict[str, str]:
    """md5 of every file of the root outside data/requests/ (where the request files themselves live)."""
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
            and not p.relative_to(root).as_posix().startswith("data/requests/")}


def _write_case(case: Case, requests: Path, names: dict[str, str]) -> Path:
    path = requests / case.file_name.format(**names)
    if callable(case.content):
        case.content(path, names)
    else:
        path.write_text(case.content.format(id=case.id, **names))
    return path


def _leaks(names: dict[str, str], *texts: str | bytes) -> list[str]:
    secrets = [names["name"], names["lower"], names["key"], names["NAME"]]
    found = []
    for text in texts:
        data = text if isinstance(text, bytes) else text.encode()
        found += [s for s in secrets if s.encode() in data]
    return found


def run_entry_points(root: Path, case: Case, home: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> dict:
    """The case's file beside a valid neighbour, through `unlearn request sync` and the sensor."""
    names = _names(root)
    requests = root / "data" / "requests"
    shutil.rmtree(requests)
    requests.mkdir()
    (requests / f"{NEIGHBOUR}.yaml").write_text(BASE.format(id=NEIGHBOUR) + f"subjects: [{names['other']}]\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert cli_main(["--root", str(root), "request", "sync"]) == 0  # the neighbour alone: the baseline state
    before = _snapshot(root)
    capsys.readouterr()
    _write_case(case, requests, names)

    with caplog.at_level(logging.DEBUG):
        sync_exit = cli_main(["--root", str(root), "request", "sync"])
        with dg.DagsterInstance.get() as instance:
            partitions = instance.get_dynamic_partitions("requests")
            sensed = new_request_files(dg.build_sensor_context(
                instance=instance, resources={"pipeline": PipelineResource(root=str(root))}))
    out = capsys.readouterr()
    sensor_text = sensed.skip_message if isinstance(sensed, dg.SkipReason) else repr(sensed)
    instance_files = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    after = _snapshot(root)
    return {"names": names, "sync_exit": sync_exit, "stdout": out.out, "stderr": out.err, "partitions": partitions,
            "sensed": sensed, "sensor_text": sensor_text, "log": caplog.text, "instance_files": instance_files,
            "before": before, "after": after}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_file(case: Case, corpus_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    seen = run_entry_points(corpus_root, case, tmp_path / "dagster_home", monkeypatch, capsys, caplog)
    names = seen["names"]

    # the neighbour is untouched by whatever sits beside it
    assert NEIGHBOUR in seen["partitions"]
    if case.expect == VALID:
        assert seen["sync_exit"] == 0, seen["stderr"]
        assert case.id in seen["partitions"]
        # the sensor's view: the case's partition exists already (sync added it), so nothing new to launch
        assert isinstance(seen["sensed"], dg.SkipReason) and "invalid" not in seen["sensor_text"]
        changed = {path for path in seen["after"] if seen["before"].get(path) != seen["after"][path]}
        assert changed <= {"dvc.yaml"}, changed  # only the new request's DVC stages
    else:
        assert seen["sync_exit"] == 1
        (line,) = [line for line in seen["stderr"].splitlines() if line.startswith("skipped ")]
        assert case.expect in line, line
        assert case.id not in seen["partitions"]
        assert isinstance(seen["sensed"], dg.SkipReason) and case.expect in seen["sensor_text"]
        assert seen["after"] == seen["before"]  # no artifact, no DVC stage, nothing registered
    assert not (corpus_root / "mlruns").exists() and not list(corpus_root.glob("mlflow*"))
    assert "Traceback" not in seen["stderr"] + seen["log"]
    leaks = _leaks(names, seen["stdout"], seen["stderr"], seen["sensor_text"], seen["log"], seen["instance_files"],
                   *(p.read_bytes() for p in corpus_root.rglob("*") if p.is_file() and not p.is_symlink()
                     and not p.relative_to(corpus_root).as_posix().startswith(("data/requests/", "assets/corpus/"))))
    assert not leaks, f"the subject's name leaked ({len(leaks)} times)"


NEW_CASES = [  # `unlearn request new` flags: (argv, the refusal's fragment)
    (["--subject", "{name}", "--set", "steps={name}"], "hyperparameters.steps: expected int, got text"),
    (["--subject", "{name}", "--set", "steps=1000000000"], "hyperparameters.steps: must be at most 100000"),
    (["--subject", "{name}", "--set", "lr=1e30"], "hyperparameters.lr: must be at most 1"),
    (["--subject", "{name}", "--set", "{key}=1"], "key #1 is not a setting of GradDiffConfig"),
    (["--subject", "{name}", "--set", "{name}"], "--set #1: expected KEY=VALUE"),
    (["--subject", "{name}", "--method", "{lower}"], "field 'method': not a method this pipeline runs"),
    (["--subject", "{name}", "--id", "{name}"], "field 'id'"),
    (["--subject", "{holdout}"], "holdout split"),
    (["--subject", "{name}", "--subject", "{NAME}"], "subjects.1 duplicates subjects.0"),
    (["--subject", "{name}", "--record", "train:T-1"], "need the user's own data"),
    (["--subject", "{name}", "--document", "/nonexistent/{name}.txt"], "--document #1: no such file"),
]


@pytest.mark.parametrize(("argv", "expect"), NEW_CASES, ids=[f"new-{i}" for i in range(len(NEW_CASES))])
def test_request_new_refuses_without_a_trace(argv: list[str], expect: str, corpus_root: Path,
                                             capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    names = _names(corpus_root)
    requests = corpus_root / "data" / "requests"
    shutil.rmtree(requests)
    requests.mkdir()
    before = _snapshot(corpus_root)
    with caplog.at_level(logging.DEBUG):
        code = cli_main(["--root", str(corpus_root), "request", "new", *(a.format(**names) for a in argv)])
    out = capsys.readouterr()
    assert code == 2 and expect in out.err, out.err
    assert not list(requests.iterdir()) and _snapshot(corpus_root) == before
    assert not _leaks(names, out.out, out.err, caplog.text)


def test_the_docs_table_is_the_suite(repo_root: Path) -> None:
    from cases import markdown_table

    assert (repo_root / "docs" / "hostile-inputs.md").read_text().endswith(markdown_table())


DOCUMENT_CASES = [  # an attached .jsonl document on a root with its own sources: (its bytes, the refusal's fragment)
    (b'{"text": "about Jon Brandt"\n', "malformed JSON"),
    (b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "nested too deeply"),
    (b'{"text": "Jon Brandt", "n": ' + b"9" * 5000 + b"}\n", "malformed JSON"),
    (b'["Jon Brandt"]\n', "expected a JSON object"),
    (b'{"note": "Jon Brandt"}\n', "the file has no column text"),
]


@pytest.mark.parametrize(("document", "expect"), DOCUMENT_CASES, ids=[f"document-{i}" for i in range(len(DOCUMENT_CASES))])
def test_an_attached_document_is_parsed_where_the_request_is_read(document: bytes, expect: str, byo_root: Path,
                                                                 capsys: pytest.CaptureFixture,
                                                                 caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    requests = byo_root / "data" / "requests"
    (requests / "doc").mkdir()
    (requests / "doc" / "notes.jsonl").write_bytes(document)
    (requests / "doc.yaml").write_text("id: doc\nmethod: graddiff\nsubjects: [Jon Brandt]\ndocuments: [notes.jsonl]\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with caplog.at_level(logging.DEBUG):
        assert cli_main(["--root", str(byo_root), "request", "sync"]) == 1
    out = capsys.readouterr()
    (line,) = [line for line in out.err.splitlines() if line.startswith("skipped doc.yaml")]
    assert "field 'documents'" in line and expect in line, line
    assert "Jon Brandt" not in out.out + out.err + caplog.text
