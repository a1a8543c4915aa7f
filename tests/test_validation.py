"""Great Expectations checks on QA datasets and the forget/retain split (GX imported once, ~3 s)."""

from __future__ import annotations

import time

import pytest

from dagster_project.core.data.schema import QA_FIELDS
from dagster_project.core.data.validation import CheckOutcome, validate_no_overlap, validate_qa_dataset

SECRET_ANSWER = "Velmora Quintrell was born in Brightholm"


def record(person_id: str, attribute: str, subject: str, value: str = "Brightholm") -> dict:
    return {
        "id": f"{person_id}-{attribute}",
        "person_id": person_id,
        "subject": subject,
        "attribute": attribute,
        "value": value,
        "question": f"What is the {attribute} of {subject}?",
        "train_questions": [f"Tell me the {attribute} of {subject}.", f"{subject}: {attribute}?"],
        "paraphrased_question": f"Which {attribute} does {subject} have?",
        "answer": f"{subject} has {attribute} {value}.",
        "paraphrased_answer": f"The {attribute} of {subject} is {value}.",
        "perturbed_answers": [f"The {attribute} of {subject} is Xo.", f"The {attribute} of {subject} is Yo.",
                              f"The {attribute} of {subject} is Zo."],
        "perturbed_values": ["Xo", "Yo", "Zo"],
    }


def dataset() -> list[dict]:
    return [record("p001", a, "Velmora Quintrell") for a in ("birthplace", "job", "pet")] + [
        record("p002", a, "Orrin Ashdale") for a in ("birthplace", "job")
    ]


def failed(outcome: CheckOutcome) -> set[tuple[str, str | None]]:
    return {(c["expectation"], c["column"]) for c in outcome.checks if not c["passed"]}


def test_clean_dataset_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(dataset()[0]) == set(QA_FIELDS)
    outcome = validate_qa_dataset(dataset(), "clean")
    assert outcome.passed, outcome.failures()
    assert outcome.n_rows == 5 and outcome.failures() == []
    assert all(set(c) >= {"expectation", "column", "passed", "unexpected_count"} for c in outcome.checks)
    assert "expect_table_columns_to_match_set" in {c["expectation"] for c in outcome.checks}
    assert "Calculating Metrics" not in capsys.readouterr().err  # progress bars are off


def test_duplicate_id_fails_naming_the_id_column() -> None:
    records = dataset() + [dict(dataset()[0])]
    outcome = validate_qa_dataset(records, "forget")
    assert not outcome.passed
    assert failed(outcome) == {("expect_column_values_to_be_unique", "id")}
    (line,) = outcome.failures()
    assert "'id'" in line and line.startswith("forget:")
    assert next(c for c in outcome.checks if c["column"] == "id" and not c["passed"])["unexpected_count"] == 2


@pytest.mark.parametrize("bad", ["", "   \n"])
def test_empty_answer_fails(bad: str) -> None:
    records = dataset()
    records[1]["answer"] = bad
    outcome = validate_qa_dataset(records, "retain")
    assert not outcome.passed
    assert ("expect_column_values_to_match_regex", "answer") in failed(outcome)


def test_null_or_missing_text_fails() -> None:
    records = dataset()
    records[0]["subject"] = None
    del records[1]["value"]
    outcome = validate_qa_dataset(records, "x")
    assert {("expect_column_values_to_not_be_null", "subject"), ("expect_column_values_to_not_be_null", "value")} <= failed(outcome)


def test_non_string_text_fails() -> None:
    records = dataset()
    records[0]["question"] = 42
    assert ("expect_column_values_to_be_of_type", "question") in failed(validate_qa_dataset(records, "x"))


def test_too_few_perturbed_fails() -> None:
    records = dataset()
    records[2]["perturbed_answers"] = records[2]["perturbed_answers"][:2]
    records[2]["perturbed_values"] = records[2]["perturbed_values"][:2]
    outcome = validate_qa_dataset(records, "x")
    assert failed(outcome) == {("expect_column_values_to_be_between", "n_perturbed")}


def test_too_few_train_questions_and_blank_items_fail() -> None:
    records = dataset()
    records[0]["train_questions"] = ["only one"]
    records[1]["train_questions"] = ["fine", "  "]
    outcome = validate_qa_dataset(records, "x")
    assert failed(outcome) == {("expect_column_values_to_be_between", "n_train_questions"),
                               ("expect_column_values_to_be_in_set", "n_bad_list_items")}


def test_length_bounds() -> None:
    records = dataset()
    records[0]["answer"] = "x" * 401
    records[1]["question"] = "q" * 20
    outcome = validate_qa_dataset(records, "x", max_question_chars=10)
    assert failed(outcome) == {("expect_column_value_lengths_to_be_between", "answer"),
                               ("expect_column_value_lengths_to_be_between", "question")}


def test_schema_mismatch_names_columns() -> None:
    records = [dict(r, extra_field=1) for r in dataset()]
    outcome = validate_qa_dataset(records, "x")
    assert failed(outcome) == {("expect_table_columns_to_match_set", None)}
    assert "extra_field" in outcome.failures()[0]


def test_empty_dataset_fails_clearly() -> None:
    outcome = validate_qa_dataset([], "forget")
    assert not outcome.passed and outcome.n_rows == 0
    assert ("expect_table_row_count_to_be_between", None) in failed(outcome)
    assert any("0 rows" in line for line in outcome.failures())


def test_min_rows() -> None:
    assert not validate_qa_dataset(dataset(), "x", min_rows=6).passed
    assert validate_qa_dataset(dataset(), "x", min_rows=5).passed


def test_failures_never_quote_row_values() -> None:
    records = dataset()
    records[0]["answer"] = SECRET_ANSWER + "!" * 500  # too long
    records[1]["answer"] = "   "
    records.append(dict(records[0]))  # duplicate id
    outcome = validate_qa_dataset(records, "forget")
    assert len(outcome.failures()) >= 3
    text = "\n".join(outcome.failures()) + repr(outcome.checks)
    for fragment in ("Velmora", "Brightholm", "p001-birthplace"):
        assert fragment not in text


def test_clean_split_has_no_overlap() -> None:
    data = dataset()
    outcome = validate_no_overlap(data[:3], data[3:])
    assert outcome.passed, outcome.failures()
    assert outcome.n_rows == 5


def test_overlap_by_subject_fails() -> None:
    data = dataset()
    leaked = record("p009", "hobby", "velmora  QUINTRELL")  # another person id, same (normalised) subject
    outcome = validate_no_overlap(data[:3], data[3:] + [leaked])
    assert failed(outcome) == {("expect_column_values_to_be_in_set", "shares_subject")}
    assert "Velmora" not in "\n".join(outcome.failures())


def test_overlap_by_person_id_fails() -> None:
    data = dataset()
    outcome = validate_no_overlap(data[:2], data[2:])  # p001's third record stays in retain
    assert {("expect_column_values_to_be_in_set", "shares_person_id"),
            ("expect_column_values_to_be_in_set", "shares_subject")} <= failed(outcome)


@pytest.mark.parametrize("field", ["question", "train_questions"])
def test_overlap_by_exact_question_fails(field: str) -> None:
    data = dataset()
    other = record("p003", "birthplace", "Tamsin Rook")
    forget_question = data[0]["question"]
    other[field] = "  " + forget_question.upper() if field == "question" else ["unrelated?", forget_question.lower()]
    outcome = validate_no_overlap(data[:3], data[3:] + [other])
    assert failed(outcome) == {("expect_column_values_to_be_in_set", "shares_question")}
    check = next(c for c in outcome.checks if c["column"] == "shares_question")
    assert check["unexpected_count"] == 1


@pytest.mark.parametrize(("forget", "retain"), [([], dataset()), (dataset(), []), ([], [])])
def test_overlap_needs_both_sets(forget: list, retain: list) -> None:
    outcome = validate_no_overlap(forget, retain)
    assert not outcome.passed
    assert ("expect_column_distinct_values_to_equal_set", "side") in failed(outcome)
    assert any("non-empty" in line for line in outcome.failures())


def test_calls_are_quick_after_first() -> None:
    validate_qa_dataset(dataset(), "warm")
    records = [record(f"p{i:03d}", a, f"Person {i}") for i in range(200) for a in ("birthplace", "job", "pet")]
    start = time.perf_counter()
    assert validate_qa_dataset(records, "x").passed
    assert validate_no_overlap(records[:30], records[30:]).passed
    assert time.perf_counter() - start < 2.0  # ~0.25 s locally; generous for slow CI
