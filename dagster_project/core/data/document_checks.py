"""Great Expectations suites on the datasets of the user's own data: sources, forget collection, retain set,
knowledge probes. Each failure names the expectation, how many rows, the first row numbers and source files,
never a value (the text is personal data).

Every suite turns the per-row rules into 0/1 flag columns and expects each flag to be 0, so a failure can say
which rows broke which rule; the schema and row count are GX's own table expectations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dagster_project.core.collection.match import mentioned, normalise, subject_patterns
from dagster_project.core.data.validation import CheckOutcome, gx_expectations, run_suite

DOCUMENT_COLUMNS = ("id", "source", "file", "record", "prompt", "completion")
MAX_SHOWN_ROWS = 5


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def _suite(kind: str, name: str, records: Sequence[dict[str, Any]], columns: Sequence[str], min_rows: int,
           flags: dict[str, tuple[Callable[[int, dict[str, Any]], bool], str]]) -> CheckOutcome:
    """Schema (`columns` exactly), at least `min_rows` rows, and every flag 0: flag name -> (row index, record ->
    broken?, what it means)."""
    import pandas as pd

    E = gx_expectations()
    rows = []
    for index, record in enumerate(records):
        row = {column: str(record.get(column)) for column in record}  # values stay out of the outcome
        row.update({flag: int(rule(index, record)) for flag, (rule, _) in flags.items()})
        rows.append(row)
    present = list(dict.fromkeys([*columns, *(k for r in records for k in r)]))
    df = pd.DataFrame(rows, columns=[*present, *flags]).astype({flag: "int64" for flag in flags})
    details: dict[tuple[str, str | None], str] = {
        ("expect_table_columns_to_match_set", None): f"columns must be exactly {', '.join(columns)}",
        ("expect_table_row_count_to_be_between", None): f"{len(df)} rows, need at least {min_rows}",
    }
    for flag, (_rule, meaning) in flags.items():
        bad = [i for i, row in enumerate(rows) if row[flag]]
        files = sorted({str(records[i].get("file") or records[i].get("set") or "") for i in bad} - {""})
        shown = ", ".join(str(i + 1) for i in bad[:MAX_SHOWN_ROWS]) + (", ..." if len(bad) > MAX_SHOWN_ROWS else "")
        details[("expect_column_values_to_be_in_set", flag)] = (
            f"{meaning} (rows {shown}" + (f"; from {', '.join(files)}" if files else "") + ")")
    suite = [E.ExpectTableColumnsToMatchSet(column_set=[*columns, *flags], exact_match=True),
             E.ExpectTableRowCountToBeBetween(min_value=min_rows),
             *(E.ExpectColumnValuesToBeInSet(column=flag, value_set=[0]) for flag in flags)]
    return run_suite(kind, f"{kind}:{name}", suite, df, name, details)


def _duplicates(records: Sequence[dict[str, Any]]) -> Callable[[int, dict[str, Any]], bool]:
    first: dict[Any, int] = {}
    for index, record in enumerate(records):
        first.setdefault(record.get("id"), index)
    return lambda index, record: first.get(record.get("id")) != index


def document_flags(records: Sequence[dict[str, Any]], max_chars: int) -> dict[str, tuple[Callable, str]]:
    return {
        "duplicate_id": (_duplicates(records), "an id seen on an earlier row"),
        "blank_completion": (lambda i, r: _blank(r.get("completion")), "empty or whitespace-only text"),
        "prompt_not_text": (lambda i, r: not isinstance(r.get("prompt"), str), "a prompt that is not text"),
        "too_long": (lambda i, r: len(str(r.get("prompt", ""))) + len(str(r.get("completion", ""))) > max_chars,
                     f"longer than {max_chars} characters"),
    }


def validate_source_records(records: Sequence[dict[str, Any]], role: str, max_chars: int = 20_000) -> CheckOutcome:
    """A source role's normalised records: schema, non-empty, unique ids, no blank text, size bounds."""
    return _suite("documents", f"{role}_source", records, DOCUMENT_COLUMNS, 1, document_flags(records, max_chars))


MATCHES = ("name", "retrieved", "record", "document")


def validate_collection(records: Sequence[dict[str, Any]], threshold: float, min_rows: int,
                        max_chars: int = 20_000) -> CheckOutcome:
    """The collected forget set: document rules, at least `min_rows` rows, every retrieved record at or above
    the threshold and about a subject, and a known way of having been collected."""
    flags = {
        **document_flags(records, max_chars),
        "below_threshold": (lambda i, r: not isinstance(r.get("score"), (int, float)) or not threshold <= r["score"] <= 1,
                            f"a score outside [{threshold}, 1]"),
        "no_subject": (lambda i, r: r.get("match") in ("name", "retrieved") and not r.get("subjects"),
                       "matched records about no subject"),
        "unknown_match": (lambda i, r: r.get("match") not in MATCHES, f"a match other than {', '.join(MATCHES)}"),
    }
    columns = (*DOCUMENT_COLUMNS, "subjects", "score", "match")
    return _suite("documents", "forget_collection", records, columns, min_rows, flags)


def validate_retain_documents(retain: Sequence[dict[str, Any]], forget: Sequence[dict[str, Any]],
                              subjects: Sequence[Any], max_chars: int = 20_000) -> CheckOutcome:
    """The retain set: document rules, non-empty, no forget record, no mention of a subject."""
    forget_ids, patterns = {r.get("id") for r in forget}, subject_patterns(subjects)
    flags = {
        **document_flags(retain, max_chars),
        "in_forget_set": (lambda i, r: r.get("id") in forget_ids, "records of the forget set"),
        "mentions_subject": (lambda i, r: bool(mentioned(patterns, f"{r.get('prompt', '')}\n{r.get('completion', '')}")),
                             "records that name a subject"),
        "unknown_kind": (lambda i, r: r.get("kind") not in ("hard_positive", "sample"), "a kind other than "
                         "hard_positive or sample"),
    }
    return _suite("documents", "retain_documents", retain, (*DOCUMENT_COLUMNS, "kind", "similarity"), 1, flags)


PROBE_COLUMNS = ("id", "set", "record_id", "prompt", "context", "separator", "answer", "distractors", "kind",
                 "subjects")


def validate_probes(probes: Sequence[dict[str, Any]], sets: Sequence[str]) -> CheckOutcome:
    """Knowledge probes: unique ids, known sets, a non-blank answer, distinct distractors none of which is the
    answer, and something for the model to read before the span."""
    def bad_distractors(i: int, probe: dict[str, Any]) -> bool:
        options = [normalise(str(o)) for o in [probe.get("answer"), *(probe.get("distractors") or [])]]
        return not probe.get("distractors") or len(set(options)) != len(options)

    flags = {
        "duplicate_id": (_duplicates(probes), "an id seen on an earlier row"),
        "unknown_set": (lambda i, p: p.get("set") not in sets, f"a set other than {', '.join(sets)}"),
        "blank_answer": (lambda i, p: _blank(p.get("answer")), "an empty answer"),
        "bad_distractors": (bad_distractors, "no distractors, or a distractor equal to the answer or another"),
        "blank_context": (lambda i, p: _blank(p.get("context")) and _blank(p.get("prompt")), "nothing before the span"),
    }
    columns = [*PROBE_COLUMNS, *(["span_start"] if any("span_start" in p for p in probes) else [])]
    return _suite("probes", "knowledge_probes", probes, columns, 1, flags)
