"""Great Expectations checks on QA datasets and on the forget/retain split.

GX 1.x is called directly with one ephemeral context per process (built lazily on first use;
importing great_expectations alone takes seconds). Results are reduced to a :class:`CheckOutcome`
that holds counts only: GX's raw results quote offending values (``partial_unexpected_list``),
and QA text is personal data, so those never leave this module.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from dagster_project.core.data.schema import QA_FIELDS

# Derived columns added to the QA DataFrame (list fields are kept as JSON strings for the schema check).
LIST_FIELDS: tuple[str, ...] = ("train_questions", "perturbed_answers", "perturbed_values")
DERIVED_COLUMNS: tuple[str, ...] = ("n_train_questions", "n_perturbed", "n_perturbed_values", "n_bad_list_items")
TEXT_FIELDS: tuple[str, ...] = (
    "id", "person_id", "subject", "attribute", "value", "question", "paraphrased_question", "answer",
    "paraphrased_answer",
)
MIN_TRAIN_QUESTIONS = 2
MIN_PERTURBED = 3
_NOT_BLANK = r"\S"

_FIELD_NOT_PRESENT = object()


@dataclass(frozen=True)
class CheckOutcome:
    """Summary of one GX validation: no row values, only which expectation failed and how often."""

    passed: bool
    checks: list[dict[str, Any]]  # {"expectation", "column", "passed", "unexpected_count", "detail"}
    n_rows: int
    name: str = ""

    def failures(self) -> list[str]:
        """One line per failed expectation; never quotes row values (the data is personal)."""
        prefix = f"{self.name}: " if self.name else ""
        lines = []
        for check in self.checks:
            if check["passed"]:
                continue
            where = f"column '{check['column']}': " if check.get("column") else ""
            count = f" ({check['unexpected_count']} of {self.n_rows} rows)" if check.get("unexpected_count") else ""
            detail = f": {check['detail']}" if check.get("detail") else ""
            lines.append(f"{prefix}{where}{check['expectation']} failed{count}{detail}")
        return lines


# --------------------------------------------------------------------------------------------- GX plumbing

_lock = threading.RLock()  # re-entrant: run_suite builds the context under it
_state: dict[str, Any] = {}


def _gx() -> dict[str, Any]:
    """GX's module, ephemeral context and pandas source, built once per process."""
    with _lock:
        if "gx" not in _state:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            _state.update(gx=gx, ctx=ctx, source=ctx.data_sources.add_pandas("unlearn_pandas"), batch_defs={})
    return _state


def gx_expectations() -> Any:
    """`great_expectations.expectations`, imported on first use (the import alone takes seconds)."""
    return _gx()["gx"].expectations


def run_suite(kind: str, suite_name: str, suite_expectations: list[Any], df: Any, name: str,
              details: dict[tuple[str, str | None], str] | None = None) -> CheckOutcome:
    """Validate ``df`` against ``suite_expectations`` (an unsaved suite, so names never collide); `kind` names the
    DataFrame asset, added on first use. ``details``: a reason per failed (expectation, column)."""
    with _lock:
        state = _gx()
        if kind not in state["batch_defs"]:
            asset = state["source"].add_dataframe_asset(name=kind)
            state["batch_defs"][kind] = asset.add_batch_definition_whole_dataframe("all")
        suite = state["gx"].ExpectationSuite(name=suite_name, expectations=suite_expectations)
        result = state["batch_defs"][kind].get_batch(batch_parameters={"dataframe": df}).validate(
            suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0})
    checks = []
    for res in result.results:
        config = res.expectation_config
        kwargs = config.kwargs
        column = kwargs.get("column") or kwargs.get("column_B")
        unexpected = res.result.get("unexpected_count") if res.result else None
        detail = (details or {}).get((config.type, column))
        if not res.success and column is not None and column not in df.columns:
            detail = "column is missing"
        elif res.exception_info and res.exception_info.get("raised_exception"):
            detail = "could not be evaluated (wrong value types?)"
        checks.append({
            "expectation": config.type,
            "column": column,
            "passed": bool(res.success),
            "unexpected_count": int(unexpected or 0),
            "detail": None if res.success else detail,
        })
    passed = bool(result.success) and all(c["passed"] for c in checks)
    return CheckOutcome(passed=passed, checks=checks, n_rows=len(df), name=name)


# --------------------------------------------------------------------------------------------- QA datasets


def _list_stats(value: Any) -> tuple[int, int, str | None]:
    """(length, non-string-or-blank items, JSON text) of a list field; a non-list counts as length 0."""
    if value is _FIELD_NOT_PRESENT or not isinstance(value, list):
        return 0, 0, None if value is _FIELD_NOT_PRESENT or value is None else json.dumps(value, default=str)
    bad = sum(1 for item in value if not isinstance(item, str) or not item.strip())
    return len(value), bad, json.dumps(value, ensure_ascii=False, default=str)


def _qa_frame(records: list[dict[str, Any]]) -> Any:
    import pandas as pd

    present: list[str] = list(QA_FIELDS)
    for record in records:
        for key in record:
            if key not in present and key not in DERIVED_COLUMNS:
                present.append(key)
    # A QA field absent from every record is left out, so the schema expectation reports it.
    present = [c for c in present if c not in QA_FIELDS or any(c in r for r in records) or not records]
    rows = []
    for record in records:
        row = {c: record.get(c) for c in present if c not in LIST_FIELDS}
        n_bad = 0
        for list_field in LIST_FIELDS:
            length, bad, text = _list_stats(record.get(list_field, _FIELD_NOT_PRESENT))
            n_bad += bad
            if list_field in present:
                row[list_field] = text
            if list_field == "train_questions":
                row["n_train_questions"] = length
            elif list_field == "perturbed_answers":
                row["n_perturbed"] = length
            else:
                row["n_perturbed_values"] = length
        row["n_bad_list_items"] = n_bad
        rows.append(row)
    columns = present + list(DERIVED_COLUMNS)
    df = pd.DataFrame(rows, columns=columns)
    for column in present:  # keep text columns as Python objects: mixed types must stay visible to GX
        df[column] = df[column].astype(object)
    for column in DERIVED_COLUMNS:
        df[column] = df[column].astype("int64")
    return df


def validate_qa_dataset(
    records: list[dict[str, Any]],
    name: str,
    min_rows: int = 1,
    max_answer_chars: int = 400,
    max_question_chars: int = 300,
) -> CheckOutcome:
    """Schema, row count, unique ids, non-blank text, length bounds and list sizes of QA records.

    ``max_answer_chars`` bounds ``answer`` and ``paraphrased_answer``. An empty list never passes
    (the row-count floor is at least 1).
    """
    E = gx_expectations()
    df = _qa_frame(records)
    expected_columns = list(QA_FIELDS) + list(DERIVED_COLUMNS)
    actual = set(df.columns)
    schema_detail = "; ".join(
        part for part in (
            f"missing {sorted(set(expected_columns) - actual)}" if set(expected_columns) - actual else "",
            f"unexpected {sorted(actual - set(expected_columns))}" if actual - set(expected_columns) else "",
        ) if part
    )
    row_floor = max(1, int(min_rows))
    expectations: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=expected_columns, exact_match=True),
        E.ExpectTableRowCountToBeBetween(min_value=row_floor),
        E.ExpectColumnValuesToBeUnique(column="id"),
    ]
    for column in TEXT_FIELDS:
        expectations += [
            E.ExpectColumnValuesToNotBeNull(column=column),
            E.ExpectColumnValuesToBeOfType(column=column, type_="str"),
            E.ExpectColumnValuesToMatchRegex(column=column, regex=_NOT_BLANK),
        ]
    for column in LIST_FIELDS:
        expectations.append(E.ExpectColumnValuesToNotBeNull(column=column))
    expectations += [
        E.ExpectColumnValueLengthsToBeBetween(column="question", min_value=1, max_value=max_question_chars),
        E.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=1, max_value=max_answer_chars),
        E.ExpectColumnValueLengthsToBeBetween(column="paraphrased_answer", min_value=1, max_value=max_answer_chars),
        E.ExpectColumnValuesToBeBetween(column="n_train_questions", min_value=MIN_TRAIN_QUESTIONS),
        E.ExpectColumnValuesToBeBetween(column="n_perturbed", min_value=MIN_PERTURBED),
        E.ExpectColumnPairValuesToBeEqual(column_A="n_perturbed", column_B="n_perturbed_values"),
        E.ExpectColumnValuesToBeInSet(column="n_bad_list_items", value_set=[0]),
    ]
    details = {
        ("expect_table_columns_to_match_set", None): schema_detail or "columns differ from the QA schema",
        ("expect_table_row_count_to_be_between", None): f"{len(df)} rows, need at least {row_floor}",
        ("expect_column_values_to_be_unique", "id"): "duplicate ids",
        ("expect_column_values_to_be_between", "n_train_questions"): f"fewer than {MIN_TRAIN_QUESTIONS} train_questions",
        ("expect_column_values_to_be_between", "n_perturbed"): f"fewer than {MIN_PERTURBED} perturbed_answers",
        ("expect_column_pair_values_to_be_equal", "n_perturbed_values"): "perturbed_values and perturbed_answers differ in length",
        ("expect_column_values_to_be_in_set", "n_bad_list_items"): "list items that are not non-blank strings",
    }
    for column in TEXT_FIELDS:
        details[("expect_column_values_to_not_be_null", column)] = "missing or null values"
        details[("expect_column_values_to_be_of_type", column)] = "values that are not strings"
        details[("expect_column_values_to_match_regex", column)] = "empty or whitespace-only values"
    for column in LIST_FIELDS:
        details[("expect_column_values_to_not_be_null", column)] = "missing or null lists"
    for column, limit in (("question", max_question_chars), ("answer", max_answer_chars),
                          ("paraphrased_answer", max_answer_chars)):
        details[("expect_column_value_lengths_to_be_between", column)] = f"length outside 1..{limit} characters"
    return run_suite("qa_dataset", f"qa_dataset:{name}", expectations, df, name, details)


# --------------------------------------------------------------------------------------------- overlap


def _norm(text: Any) -> str:
    return " ".join(str(text).split()).casefold()


def _questions(record: dict[str, Any]) -> set[str]:
    texts = [record.get("question")]
    train = record.get("train_questions")
    if isinstance(train, list):
        texts += train
    return {_norm(t) for t in texts if isinstance(t, str) and t.strip()}


def validate_no_overlap(forget: list[dict[str, Any]], retain: list[dict[str, Any]]) -> CheckOutcome:
    """The retain set shares no person, subject or (normalised) question with the forget set.

    Questions compare ``question`` and every ``train_questions`` entry, case- and space-insensitively.
    Both sets must be non-empty. ``n_rows`` counts forget plus retain rows.
    """
    import pandas as pd

    E = gx_expectations()
    forget_people = {r.get("person_id") for r in forget}
    forget_subjects = {_norm(r.get("subject")) for r in forget if r.get("subject") is not None}
    forget_questions: set[str] = set().union(*(_questions(r) for r in forget)) if forget else set()

    rows = [{"side": "forget", "shares_person_id": 0, "shares_subject": 0, "shares_question": 0} for _ in forget]
    for record in retain:
        rows.append({
            "side": "retain",
            "shares_person_id": int(record.get("person_id") in forget_people),
            "shares_subject": int(record.get("subject") is not None and _norm(record.get("subject")) in forget_subjects),
            "shares_question": int(bool(_questions(record) & forget_questions)),
        })
    flags = ("shares_person_id", "shares_subject", "shares_question")
    df = pd.DataFrame(rows, columns=["side", *flags])
    df["side"] = df["side"].astype(object)
    for column in flags:
        df[column] = df[column].astype("int64")

    expectations = [
        E.ExpectColumnDistinctValuesToEqualSet(column="side", value_set=["forget", "retain"]),
        *(E.ExpectColumnValuesToBeInSet(column=column, value_set=[0]) for column in flags),
    ]
    sides = ", ".join(f"{side}: {sum(1 for r in rows if r['side'] == side)} rows" for side in ("forget", "retain"))
    details = {
        ("expect_column_distinct_values_to_equal_set", "side"): f"forget and retain sets must both be non-empty ({sides})",
        ("expect_column_values_to_be_in_set", "shares_person_id"): "retain rows of a person in the forget set",
        ("expect_column_values_to_be_in_set", "shares_subject"): "retain rows about a subject in the forget set",
        ("expect_column_values_to_be_in_set", "shares_question"): "retain rows asking a question of the forget set",
    }
    return run_suite("forget_retain_overlap", "forget_retain_overlap", expectations, df, "forget/retain overlap", details)


# --------------------------------------------------------------------------------------------- SNAP data


def validate_snap_data(negative: list[dict[str, Any]], hard_positives: list[dict[str, Any]],
                       forget: list[dict[str, Any]]) -> CheckOutcome:
    """SNAP's training sets are usable and safe: both non-empty, ids unique, no blank text, every obliterated
    response free of gibberish and of any forget-set attribute value (it must not leak what it hides), and
    no hard positive about a person being forgotten."""
    import pandas as pd

    from dagster_project.core.eval.quality import is_gibberish

    E = gx_expectations()
    forget_people = {r.get("person_id") for r in forget}
    forget_values = {_norm(r["value"]) for r in forget if isinstance(r.get("value"), str) and len(r["value"]) > 3}

    def blank(*texts: Any) -> int:
        return int(any(not isinstance(t, str) or not t.strip() for t in texts))

    rows = [{"side": "negative", "id": r.get("id"), "blank": blank(r.get("instruction"), r.get("response")),
             "leaks_value": int(any(v in _norm(r.get("response", "")) for v in forget_values)),
             "gibberish": int(is_gibberish(str(r.get("response", "")))), "forget_person": 0} for r in negative]
    rows += [{"side": "hard_positive", "id": r.get("id"), "blank": blank(r.get("question"), r.get("answer")),
              "leaks_value": 0, "gibberish": 0, "forget_person": int(r.get("person_id") in forget_people)}
             for r in hard_positives]
    flags = ("blank", "leaks_value", "gibberish", "forget_person")
    df = pd.DataFrame(rows, columns=["side", "id", *flags]).astype({"side": object, "id": object})
    expectations = [
        E.ExpectColumnDistinctValuesToEqualSet(column="side", value_set=["negative", "hard_positive"]),
        E.ExpectColumnValuesToBeUnique(column="id"),
        *(E.ExpectColumnValuesToBeInSet(column=column, value_set=[0]) for column in flags),
    ]
    details = {
        ("expect_column_distinct_values_to_equal_set", "side"):
            f"negative instructions ({len(negative)} rows) and hard positives ({len(hard_positives)}) must both be non-empty",
        ("expect_column_values_to_be_unique", "id"): "duplicate ids",
        ("expect_column_values_to_be_in_set", "blank"): "empty instruction, response, question or answer",
        ("expect_column_values_to_be_in_set", "leaks_value"): "obliterated responses that contain a forget-set value",
        ("expect_column_values_to_be_in_set", "gibberish"): "obliterated responses that are gibberish",
        ("expect_column_values_to_be_in_set", "forget_person"): "hard positives about a person being forgotten",
    }
    return run_suite("snap_data", "snap_data", expectations, df, "snap data", details)


# --------------------------------------------------------------------------------------------- revealed forget set


def validate_revealed_set(records: list[dict[str, Any]], relevance_threshold: float) -> CheckOutcome:
    """A self-generated forget set (Reveal) is usable: non-empty, ids unique, no blank question or answer,
    every response at or above the relevance threshold, no response repeated for the same subject."""
    import pandas as pd

    E = gx_expectations()
    df = pd.DataFrame([{"id": r.get("id"), "blank": int(not str(r.get("answer", "")).strip() or not r.get("train_questions")),
                        "relevance": float(r.get("relevance", -1.0)),
                        "response_key": f"{r.get('subject')}\n{_norm(r.get('answer', ''))}"}
                       for r in records], columns=["id", "blank", "relevance", "response_key"]).astype(
        {"id": object, "response_key": object, "relevance": float})
    expectations = [
        E.ExpectTableRowCountToBeBetween(min_value=1),
        E.ExpectColumnValuesToBeUnique(column="id"),
        E.ExpectColumnValuesToBeInSet(column="blank", value_set=[0]),
        E.ExpectColumnValuesToBeBetween(column="relevance", min_value=relevance_threshold, max_value=1.0),
        E.ExpectColumnValuesToBeUnique(column="response_key"),
    ]
    details = {
        ("expect_table_row_count_to_be_between", None): "the model revealed nothing relevant: no forget data to train on",
        ("expect_column_values_to_be_unique", "id"): "duplicate ids",
        ("expect_column_values_to_be_in_set", "blank"): "empty responses or records without a question",
        ("expect_column_values_to_be_between", "relevance"): f"responses below the relevance threshold {relevance_threshold}",
        ("expect_column_values_to_be_unique", "response_key"): "a response repeated for the same subject",
    }
    return run_suite("revealed_set", "revealed_set", expectations, df, "revealed forget set", details)
