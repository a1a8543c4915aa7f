"""The user's own model, data and request: sources, matching, collection, probes, cleaned data, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import BYO_PARAMS, BYO_REQUEST, CUSTOMERS, materialize_request

from dagster_project.core.collection.collect import CollectionConfig, collect, split_passages
from dagster_project.core.collection.match import Subject, mentioned, normalise, subject_patterns
from dagster_project.core.data.io import read_json, read_jsonl
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.sources.load import SourceError, SourceFile, read_source

# ------------------------------------------------------------------------------------------------ matching


def found(alias: str, text: str) -> bool:
    return bool(mentioned(subject_patterns([Subject(alias)]), text))


@pytest.mark.parametrize("text", ["Ticket from ZOE O’BRIEN about a kettle", "zoë o'brien's order", "(Zoe  O'Brien)",
                                  "signed: Zoë O'Brien."])
def test_a_name_matches_across_case_accents_apostrophes_spaces_and_possessives(text: str) -> None:
    assert found("Zoë O'Brien", text)


@pytest.mark.parametrize(("text", "expected"), [("Ann called", True), ("Ann's parcel", True), ("(Ann)", True),
                                                ("Thanks, Ann.", True), ("Anne called", False), ("Joanna", False),
                                                ("Ann-Marie called", False), ("Mary-Ann called", False), ("ANNA", False)])
def test_a_match_stands_alone_between_word_boundaries(text: str, expected: bool) -> None:
    assert found("Ann", text) is expected


@pytest.mark.parametrize(("text", "expected"), [("write to zoe.obrien@example.org.", True),
                                                ("<ZOE.OBRIEN@EXAMPLE.ORG>", True),
                                                ("xzoe.obrien@example.org", False),
                                                ("zoe.obrien@example.org.uk", False),
                                                ("customer CUS-40217 called", True), ("CUS-402170", False)])
def test_an_email_or_id_alias_matches_only_whole(text: str, expected: bool) -> None:
    alias = "zoe.obrien@example.org" if "@" in text or "zoe" in text.casefold() else "CUS-40217"
    assert found(alias, text) is expected


def test_normalise_folds_what_people_vary() -> None:
    assert normalise("  Zoë\u00a0O’Brien ") == "zoe o'brien"
    assert normalise("Ǆ ŁÓDŹ") == normalise("dž łodz")  # NFKD: compatibility forms and accents


# ------------------------------------------------------------------------------------------------ sources


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_every_format_and_shape_normalises_to_prompt_and_completion(tmp_path: Path) -> None:
    import datasets
    import pandas as pd

    write_lines(tmp_path / "notes.jsonl", [{"id": 7, "text": " Note one. "}, {"id": "b", "text": "Note two."}])
    pd.DataFrame({"key": ["k1"], "q": ["Question?"], "a": ["Answer."]}).to_csv(tmp_path / "pairs.csv", index=False)
    pd.DataFrame({"prompt": ["P"], "completion": ["C"]}).to_parquet(tmp_path / "pairs.parquet")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}]
    datasets.Dataset.from_list([{"messages": chat}]).save_to_disk(str(tmp_path / "chats"))
    notes = read_source(SourceFile(path="notes.jsonl"), tmp_path, "train")
    assert [(r["id"], r["record"], r["prompt"], r["completion"]) for r in notes] == [
        ("train:notes:7", "7", "", "Note one."), ("train:notes:b", "b", "", "Note two.")]
    (pair,) = read_source(SourceFile(path="pairs.csv", fields={"id": "key", "prompt": "q", "completion": "a"}),
                          tmp_path, "utility")
    assert (pair["id"], pair["prompt"], pair["completion"]) == ("utility:pairs:k1", "Question?", "Answer.")
    (parquet,) = read_source(SourceFile(path="pairs.parquet"), tmp_path, "train")
    assert (parquet["record"], parquet["prompt"], parquet["completion"]) == ("1", "P", "C")  # no id: the row number
    (conversation,) = read_source(SourceFile(path="chats"), tmp_path, "train")
    assert conversation["prompt"] == "System: Be brief.\nUser: Hi" and conversation["completion"] == "Hello."


SECRET = "Velmora Quintrell lives at 4 Ashdale Row"


@pytest.mark.parametrize(("rows", "fields", "message"), [
    ([{"text": SECRET}, {"text": "   "}], {}, "record 2: field 'text': blank"),
    ([{"id": "a", "text": SECRET}, {"id": "a", "text": SECRET}], {}, "record 2: field 'id': the same id as record 1"),
    ([{"body": SECRET}], {"text": "text"}, "record 1: field 'text' is missing"),
    ([{"messages": [{"role": "user", "content": SECRET}, {"role": "user", "content": SECRET}]}], {},
     "record 1: field 'messages': the last message must be the assistant's"),
    ([{"text": SECRET}, "[" * 5000 + "]" * 5000], {}, "record 2: nested too deeply"),
    ([{"text": SECRET}, '{"text": "x", "n": ' + "9" * 5000 + "}"], {}, "record 2: malformed JSON"),
    ([{"text": 7}], {}, "record 1: field 'text': expected text, got int"),
    ([{"text": SECRET, "id": ""}], {}, "record 1: field 'id': expected a non-blank id"),
])
def test_a_bad_record_is_named_by_file_record_and_field_never_by_its_text(tmp_path: Path, rows: list, fields: dict,
                                                                         message: str) -> None:
    write_lines(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SourceError) as error:
        read_source(SourceFile(path="bad.jsonl", fields=fields), tmp_path, "train")
    assert str(error.value).startswith("source bad.jsonl:") and message in str(error.value)
    assert "Velmora" not in str(error.value) and "Ashdale" not in str(error.value)


def test_size_bounds_and_bad_bytes_are_refused(tmp_path: Path) -> None:
    write_lines(tmp_path / "big.jsonl", [{"text": "x" * 200}])
    with pytest.raises(SourceError, match="the limit is 100"):
        read_source(SourceFile(path="big.jsonl", max_bytes=100), tmp_path, "train")
    with pytest.raises(SourceError, match="record 1: 200 characters, the limit is 50"):
        read_source(SourceFile(path="big.jsonl", max_chars=50), tmp_path, "train")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(SourceError, match="record 1: not valid UTF-8"):
        read_source(SourceFile(path="latin1.jsonl"), tmp_path, "train")
    with pytest.raises(SourceError, match="not found"):
        read_source(SourceFile(path="missing.jsonl"), tmp_path, "train")


def test_the_cleaned_training_set_drops_forget_rows_and_keeps_every_other_byte(tmp_path: Path) -> None:
    import pandas as pd

    from dagster_project.core.sources.clean import write_cleaned

    lines = ['{"id": "a", "text": "Keep me."}', '{"id": "b",   "text": "Forget me."}', '{"text": "Keep too.", "id": "c"}']
    write_lines(tmp_path / "notes.jsonl", lines)
    pd.DataFrame({"id": ["x", "y"], "text": ["Gone.", "Stays."]}).to_csv(tmp_path / "rows.csv", index=False)
    files = [SourceFile(path="notes.jsonl"), SourceFile(path="rows.csv")]
    entries = write_cleaned(files, tmp_path, {"train:notes:b", "train:rows:x"}, tmp_path / "cleaned")
    assert (tmp_path / "cleaned" / "notes.jsonl").read_text() == lines[0] + "\n" + lines[2] + "\n"
    assert pd.read_csv(tmp_path / "cleaned" / "rows.csv").to_dict(orient="list") == {"id": ["y"], "text": ["Stays."]}
    assert [(e["name"], e["records"], e["removed"]) for e in entries] == [("notes.jsonl", 2, 1), ("rows.csv", 1, 1)]


# ------------------------------------------------------------------------------------------------ collection


def fake_encode(texts):
    """Hashed character n-grams: the fallback encoder, fast and deterministic (no MiniLM in unit tests)."""
    from dagster_project.core.reveal.scoring import hashed_ngram_encoder

    return hashed_ngram_encoder()(texts)


def records(*texts: str) -> list[dict]:
    return [{"id": f"train:n:{i}", "source": "train", "file": "n.jsonl", "record": str(i), "prompt": "",
             "completion": t} for i, t in enumerate(texts)]


def test_collection_scores_exact_mentions_first_and_ranks_the_rest() -> None:
    searched = records("Call from Marta Kowalski about 58123.", "marta.k@example.com wrote again.",
                       "Kowalski family order, no first name.", "Jon Brandt asked about Bremen.")
    subject = Subject("Marta Kowalski", ("marta.k@example.com",))
    collection = collect(searched, [subject], CollectionConfig(threshold=0.5), fake_encode)
    assert [r["record"] for r in collection.records] == ["0", "1"]
    assert all(r["score"] == 1.0 and r["match"] == "name" for r in collection.records)
    scores = {r["record"]: r["score"] for r in collection.scored}
    assert 0 < scores["3"] < scores["2"] < 0.5  # a surname alone ranks above a stranger, below the threshold
    report = collection.report()
    assert report["per_subject"] == {"subjects.0": 2} and report["per_source"] == {"train": 2}
    assert "Marta" not in json.dumps(report) and "train:n:0" not in json.dumps(report)  # hashed ids only


def test_zero_matches_say_what_to_do_without_the_name(byo_root: Path) -> None:
    from dagster_project.core.data.request import build_request
    from dagster_project.core.own_data import nothing_found

    request = build_request(id="nobody", subjects=["Quentin Ashmore"], method="npo")
    collection = collect(records("Jon Brandt asked about Bremen."), request.subject_entries, CollectionConfig(),
                         fake_encode)
    message = nothing_found(request, collection, documents=0)
    assert message and "subjects.0" in message and "documents" in message and "forget_data: reveal" in message
    assert "Quentin" not in message
    reveal = build_request(id="nobody", subjects=["Quentin Ashmore"], method="npo", forget_data="reveal")
    assert nothing_found(reveal, collection, documents=0) is None  # the model's own responses are its data


def test_documents_are_cut_into_passages_at_sentence_ends() -> None:
    text = "First fact. Second fact!\n\nA new paragraph with " + "many words " * 30 + "end."
    passages = split_passages(text, 120)
    assert passages[0] == "First fact. Second fact!" and all(len(p) <= 120 for p in passages)
    assert " ".join(" ".join(passages).split()) == " ".join(text.split())


# ------------------------------------------------------------------------------------------------ probes


def test_spans_have_kinds_and_distractors_share_them() -> None:
    from dagster_project.core.probes.build import ProbeConfig, build_probes
    from dagster_project.core.probes.spans import salient_spans

    text = "Marta Kowalski's order 58123 shipped to Gdansk on 12 March. She wrote from marta.k@example.com."
    assert [(s.text, s.kind) for s in salient_spans(text)] == [
        ("Kowalski", "name:1"), ("58123", "number:99999"), ("Gdansk", "name:1"), ("12", "number:99"),
        ("March", "month"), ("marta.k@example.com", "email")]
    forget = records(text)
    others = records("Jon Brandt's order 77120 went to Bremen on 3 May.", "Anna Weber lives in Leipzig since 2019.")
    subject = Subject("Marta Kowalski", ("marta.k@example.com",))
    probes = build_probes({"forget": forget}, forget + others, [subject], ProbeConfig(per_record=5,
                                                                                   general_knowledge=False))
    assert probes and {p["answer"] for p in probes} <= {"58123", "Gdansk", "12", "March"}  # never her own name
    for probe in probes:
        assert len(probe["distractors"]) == 3 and probe["answer"] not in probe["distractors"]
        assert "Marta Kowalski" in probe["context"] and probe["subjects"] == [0]
        if probe["kind"] == "name:1":
            assert set(probe["distractors"]) <= {"Brandt", "Bremen", "Weber", "Leipzig", "Jon", "Anna", "Kowalski"}
        if probe["kind"].startswith("number"):
            assert all(len(d) == len(probe["answer"]) and d.isdigit() for d in probe["distractors"])


def test_a_model_that_knows_the_span_ranks_it_first(tmp_path: Path, one_thread) -> None:
    from conftest import train_tiny_model

    from dagster_project.core.eval.standalone import load_for_eval
    from dagster_project.core.probes.score import score_probes

    pairs = [("", "The parcel of Marta went to Gdansk."), ("", "The parcel of Jon went to Bremen.")]  # free text
    model, tokenizer = load_for_eval(train_tiny_model(tmp_path, pairs, epochs=100)[0])
    probes = [{"id": "forget-00001", "set": "forget", "prompt": "", "context": "The parcel of Marta went to",
               "separator": " ", "answer": "Gdansk", "distractors": ["Bremen"]},
              {"id": "forget-00002", "set": "forget", "prompt": "", "context": "The parcel of Jon went to",
               "separator": " ", "answer": "Bremen", "distractors": ["Gdansk"]}]
    scores = score_probes(model, tokenizer, probes)
    assert all(s["top1"] for s in scores) and all(s["contained"] for s in scores)
    assert all(s["logprobs"][0] > s["logprobs"][1] + 1 for s in scores)


def test_every_option_of_a_probe_scored_in_one_pass_equals_scoring_each_alone(tmp_path: Path, one_thread) -> None:
    import torch
    from conftest import train_tiny_model

    from dagster_project.core.eval.standalone import load_for_eval
    from dagster_project.core.probes.score import option_logprobs

    pairs = [("", "Sherlock Holmes lives at 221B Baker Street in London."), ("Where?", "In Paris, near the river.")]
    model, tokenizer = load_for_eval(train_tiny_model(tmp_path, pairs, epochs=3)[0])
    contexts = ["Sherlock Holmes lives at 221B Baker Street in", "", "Question: Where?\nAnswer: In"]
    options = [[" London", " Paris", " New York"], ["Sherlock", "Holmes"], [" Paris", " the Baker Street flat", " X"]]

    def alone(context: str, option: str) -> float:
        ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        extra = tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids + extra])).logits[0].float(), -1)
        return sum(float(logp[len(ids) + j - 1, t]) for j, t in enumerate(extra) if len(ids) + j - 1 >= 0)

    packed = option_logprobs(model, tokenizer, contexts, options, batch_size=2)  # padding within a batch too
    for context, choices, values in zip(contexts, options, packed, strict=True):
        assert values == pytest.approx([alone(context, o) for o in choices], abs=1e-4)


def test_the_probes_check_fails_on_a_distractor_equal_to_the_answer() -> None:
    from dagster_project.core.data.document_checks import validate_probes
    from dagster_project.core.probes.build import SETS

    good = {"id": "forget-00001", "set": "forget", "record_id": "r", "prompt": "", "context": "Sent to",
            "separator": " ", "answer": "Gdansk", "distractors": ["Bremen", "Lyon"], "kind": "name:1", "subjects": [0]}
    assert validate_probes([good], SETS).passed
    outcome = validate_probes([good, {**good, "id": "forget-00002", "distractors": ["gdańsk", "Lyon"]}], SETS)
    assert not outcome.passed and any("rows 2" in f for f in outcome.failures())


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.e2e
def test_a_request_on_your_own_data_runs_the_whole_graph_and_leaks_no_name(byo_root: Path, one_thread,
                                                                         caplog: pytest.LogCaptureFixture,
                                                                         capsys: pytest.CaptureFixture) -> None:
    import logging

    import dagster as dg

    caplog.set_level(logging.DEBUG)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_request(byo_root, "byo", instance=instance)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert len(checks) == 10 and all(c.passed for c in checks.values())
    assert "no retain source declared" in checks["retain_source_is_valid"].description
    layout = Layout.from_params(byo_root, load_params(byo_root))

    # the forget set: Marta's two notes and her chat, found by name, e-mail address and customer id
    forget = read_jsonl(layout.forget_set)
    assert sorted(r["record"] for r in forget) == ["N-001", "N-002", "T-003"]
    assert {r["match"] for r in forget} == {"name"}
    metadata = result.asset_materializations_for_node("forget_set")[0].metadata
    assert metadata["records"].value == 3 and metadata["searched"].value == 18
    assert metadata["records_per_subject"].value == {"subjects.0": 3} and len(metadata["record_ids_sha256"].value) == 3
    histogram = metadata["score_histogram"].value
    assert "Threshold 0.50" in histogram and "| 0.95–1.00 | 3 |" in histogram
    # the retain set keeps other customers, the nearest first, and never names her
    retain = read_jsonl(layout.retain_set)
    assert {r["kind"] for r in retain} == {"hard_positive", "sample"} and len(retain) == 4 + 10
    assert not {r["id"] for r in retain} & {r["id"] for r in forget}
    assert not any("Marta" in r["completion"] or "marta.k" in r["completion"] for r in retain)
    # a new version of each training file without her records, in its own format
    cleaned = read_json(layout.cleaned_dir / "manifest.json")["files"]
    assert [(e["name"], e["removed"]) for e in cleaned] == [("notes.jsonl", 2), ("chats.jsonl", 1)]
    assert "Marta" not in (layout.cleaned_dir / "notes.jsonl").read_text()
    assert (layout.cleaned_dir / "chats.jsonl").read_text().count("\n") == len(CUSTOMERS) - 1

    # probes of every set, a documents report without a retain model, MIA against the held-out customers
    probes = read_jsonl(layout.probes_dir / "probes.jsonl")
    assert {p["set"] for p in probes} == {"forget", "retain", "hard_positive", "utility", "general"}
    report = read_json(layout.eval_dir / "report.json")
    assert report["kind"] == "documents" and set(report["models"]) == {"target", "unlearned"}
    metrics = report["models"]["unlearned"]["metrics"]
    for key in ("forget_probe_top1", "retain_probe_top1", "hard_positive_probe_top1", "general_probe_top1",
                "mia_loss_auc", "forget_gibberish_rate", "relearn_probe_top1_after", "utility_ratio"):
        assert key in metrics
    assert report["counts"]["nonmember_records"] == 6 and metrics["probe_chance"] == pytest.approx(0.25)
    assert read_json(layout.retain_model_dir / "train_manifest.json")["built"] is False

    # registered with the new artifacts' md5s; gated on the probes
    from dagster_project.core.tracking.mlflow_registry import registry_status

    (version,) = registry_status(byo_root)["models"][0]["versions"]
    for label in ("cleaned_training_set", "collection", "knowledge_probes", "train_source", "nonmember_source"):
        assert version["dvc_md5"][label].endswith(".dir")
    card = (layout.audit_dir / "model_card.md").read_text()
    assert "forget_probe_margin" in card and "cleaned_training_set" in card and "Marta" not in card

    # the audit re-hashes every artifact from DVC and re-runs the documents evaluation; a rebuild from scratch
    # (with the source files copied as they are) gives the same bytes and metrics
    from dagster_project.cli import main as cli_main

    printed = [capsys.readouterr().out]
    assert cli_main(["--root", str(byo_root), "audit", "verify", "models:/byo-micro/1"]) == 0
    printed.append(capsys.readouterr().out)
    assert "re-run evaluation matches the recorded metrics" in printed[-1]
    assert cli_main(["--root", str(byo_root), "audit", "reproduce", "models:/byo-micro/1", "--json"]) == 0
    printed.append(capsys.readouterr().out)
    reproduced = json.loads(printed[-1])
    assert any("rebuilt cleaned_training_set has the version's md5" == c["check"] and c["ok"]
               for c in reproduced["checks"])

    # no name, e-mail address or forgotten text in MLflow, Dagster's event log, logs or output
    secrets = ["Marta", "Kowalski", "marta.k@example.com"] + [r["completion"] for r in forget]
    stored = b"".join(p.read_bytes() for p in (byo_root / ".mlflow").rglob("*") if p.is_file())
    assert not [s for s in secrets if s.encode() in stored]
    events = "".join(str(event) for run in instance.get_runs() for event in instance.all_logs(run.run_id))
    assert "ASSET_MATERIALIZATION" in events and not [s for s in secrets if s in events]
    logs = caplog.text + "".join(printed) + capsys.readouterr().out
    assert len(caplog.records) > 50 and not [s for s in secrets if s in logs]


@pytest.mark.e2e
def test_a_subject_in_no_source_fails_clearly_unless_the_model_reveals_it(byo_root: Path, one_thread) -> None:
    request = {**BYO_REQUEST, "subjects": ["Quentin Ashmore"]}
    (byo_root / "data" / "requests" / "byo.yaml").write_text(yaml.safe_dump(request))
    selection = ["train_source", "retain_source", "forget_request", "forget_set"]
    failed = materialize_request(byo_root, "byo", selection, dvc_commit=False, raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.cause.message
    assert "CollectionError" in message and "forget_data: reveal" in message and "Quentin" not in message

    # the same subject with forget_data: reveal: what θ₀ says about them is the forget data and the probes' source
    (byo_root / "data" / "requests" / "byo.yaml").write_text(yaml.safe_dump(
        {**request, "method": "npo", "forget_data": "reveal"}))
    result = materialize_request(byo_root, "byo")
    assert result.success
    layout = Layout.from_params(byo_root, load_params(byo_root))
    assert read_jsonl(layout.forget_set) == []
    probes = read_jsonl(layout.probes_dir / "probes.jsonl")
    assert any(p["set"] == "forget" and p["record_id"].startswith("revealed-") for p in probes)
    assert read_json(layout.eval_dir / "report.json")["models"]["unlearned"]["metrics"]["forget_probe_top1"] >= 0


@pytest.mark.e2e
def test_documents_and_record_ids_join_the_forget_set(byo_root: Path, one_thread, capsys: pytest.CaptureFixture) -> None:
    from dagster_project.cli import main as cli_main

    letter = byo_root / "letter.txt"
    letter.write_text("Dear shop, I am Pavel Novak. My order 41207 went to Brno.\n\nPlease delete my data.")
    assert cli_main(["--root", str(byo_root), "request", "new", "--subject", "Pavel Novak", "--alias",
                     "p.novak@example.com", "--record", "train:T-203", "--document", str(letter), "--id", "pavel"]) == 0
    written = yaml.safe_load((byo_root / "data" / "requests" / "pavel.yaml").read_text())
    assert written["subjects"] == [{"name": "Pavel Novak", "aliases": ["p.novak@example.com"]}]
    assert written["records"] == {"train": ["T-203"]} and written["documents"] == ["letter.txt"]
    assert (byo_root / "data" / "requests" / "pavel" / "letter.txt").read_text() == letter.read_text()
    # the reviewer's preview: on the terminal only, nothing written
    before = sorted(p for p in byo_root.rglob("*") if p.is_file())
    assert cli_main(["--root", str(byo_root), "request", "preview", "pavel"]) == 0
    shown = capsys.readouterr().out
    assert "Pavel Novak" in shown and "document" in shown and "record" in shown and "written nowhere" in shown
    assert sorted(p for p in byo_root.rglob("*") if p.is_file()) == before
    selection = ["train_source", "retain_source", "forget_request", "forget_set"]
    assert materialize_request(byo_root, "pavel", selection, dvc_commit=False).success
    layout = Layout.for_request(byo_root, load_params(byo_root), "pavel")
    forget = read_jsonl(layout.forget_set)
    assert {r["match"] for r in forget} == {"name", "document", "record"}
    assert sum(r["match"] == "document" for r in forget) == 2  # two paragraphs of the letter
    # an unknown id is named by its position, not echoed
    request = yaml.safe_load((byo_root / "data" / "requests" / "pavel.yaml").read_text())
    (byo_root / "data" / "requests" / "pavel.yaml").write_text(yaml.safe_dump({**request, "records": {"train": ["ZZ-9"]}}))
    assert cli_main(["--root", str(byo_root), "request", "preview", "pavel"]) == 2
    err = capsys.readouterr().err
    assert "records.train.0" in err and "ZZ-9" not in err


def test_a_split_request_or_a_corpus_only_method_is_refused_on_your_own_data(byo_root: Path) -> None:
    for change, field in (({"split": "forget10", "subjects": None}, "split"), ({"method": "snap"}, "method")):
        request = {k: v for k, v in {**BYO_REQUEST, **change}.items() if v is not None}
        (byo_root / "data" / "requests" / "byo.yaml").write_text(yaml.safe_dump(request))
        result = materialize_request(byo_root, "byo", ["forget_request"], dvc_commit=False, raise_on_error=False)
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert f"field '{field}'" in failure.event_specific_data.error.cause.message


def test_params_without_sources_still_need_the_corpus_sections(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in BYO_PARAMS.items() if k != "sources"}))
    with pytest.raises(ValueError, match="missing top-level key"):
        load_params(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in BYO_PARAMS.items() if k != "train"}))
    assert "train" not in load_params(tmp_path)  # sources: a model already fine-tuned needs no train section


@pytest.mark.e2e
def test_general_knowledge_probes_join_a_corpus_evaluation_and_its_gates(micro_root: Path, one_thread) -> None:
    """A real model's knowledge, which invented people cannot show: scored and gated on the corpus profile too."""
    from dagster_project.core.audit.gates import check_gates, load_gates

    params = load_params(micro_root)
    (micro_root / "params.yaml").write_text(yaml.safe_dump({**params, "probes": {"general_knowledge": True}}))
    assert materialize_request(micro_root, "micro").success
    layout = Layout.from_params(micro_root, load_params(micro_root))
    probes = read_jsonl(layout.probes_dir / "probes.jsonl")
    assert len(probes) == 60 and {p["set"] for p in probes} == {"general"}
    models = read_json(layout.eval_dir / "report.json")["models"]
    assert all(0 <= body["metrics"]["general_probe_top1"] <= 1 for body in models.values())
    unlearned = models["unlearned"]["metrics"]
    assert unlearned["general_knowledge_ratio"] == pytest.approx(
        unlearned["general_probe_top1"] / models["target"]["metrics"]["general_probe_top1"])
    gates = {g.gate for g in check_gates(load_gates(params), unlearned)}
    assert {"forget_quality", "general_knowledge_ratio"} <= gates
