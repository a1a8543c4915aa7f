"""The blocking data checks of a pipeline root and a request: one list of Great Expectations outcomes per Dagster
asset check. The Dagster checks (defs/validation.py) and the audit manifest (re-run at registration) call the
same functions, so what blocked a run and what an auditor reads are the same rules.
"""

from __future__ import annotations

from typing import Any

from dagster_project.core.data.document_checks import (
    validate_collection,
    validate_probes,
    validate_retain_documents,
    validate_source_records,
)
from dagster_project.core.data.io import read_json, read_jsonl
from dagster_project.core.data.request import ForgetRequest
from dagster_project.core.data.validation import CheckOutcome, validate_no_overlap, validate_qa_dataset
from dagster_project.core.layout import Layout, uses_sources
from dagster_project.core.sources.load import MANIFEST_FILE, read_role


def source_checks(layout: Layout, params: dict[str, Any], role: str) -> list[CheckOutcome] | None:
    """A declared source's records; None when the role is not declared (nothing to check; on the embedded
    corpus no source is)."""
    if not uses_sources(params) or not read_json(layout.source_dir(role) / MANIFEST_FILE)["declared"]:
        return None
    return [validate_source_records(read_role(layout.source_dir(role)), role)]


def forget_set_checks(layout: Layout, params: dict[str, Any]) -> list[CheckOutcome]:
    forget = read_jsonl(layout.forget_set)
    if not uses_sources(params):
        return [validate_qa_dataset(forget, "forget_set")]
    request = ForgetRequest.model_validate(read_json(layout.request_json))
    threshold = (params.get("collection") or {}).get("threshold", 0.5)
    # a reveal request may collect nothing: the model's own responses are its forget data
    return [validate_collection(forget, threshold, min_rows=int(request.forget_data == "given"))]


def retain_set_checks(layout: Layout, params: dict[str, Any]) -> list[CheckOutcome]:
    forget, retain = read_jsonl(layout.forget_set), read_jsonl(layout.retain_set)
    if not uses_sources(params):
        return [validate_qa_dataset(retain, "retain_set"), validate_no_overlap(forget, retain)]
    request = ForgetRequest.model_validate(read_json(layout.request_json))
    return [validate_retain_documents(retain, forget, request.subject_entries)]


def probe_checks(layout: Layout) -> list[CheckOutcome] | None:
    """The request's knowledge probes; None when it has none (the embedded corpus without `probes:`)."""
    from dagster_project.core.probes.build import SETS

    probes = read_jsonl(layout.probes_dir / "probes.jsonl")
    return [validate_probes(probes, SETS)] if probes else None


def request_checks(layout: Layout, params: dict[str, Any]) -> dict[str, list[CheckOutcome]]:
    """Every blocking check of the request's datasets, by Dagster check name."""
    checks = {"forget_set_is_valid": forget_set_checks(layout, params),
              "retain_set_is_valid_and_disjoint": retain_set_checks(layout, params)}
    probes = probe_checks(layout)
    return checks | ({"knowledge_probes_are_valid": probes} if probes else {})


def summarise(groups: dict[str, list[CheckOutcome]]) -> dict[str, dict[str, Any]]:
    """Outcome and expectation counts per check, failures by expectation and count: no values."""
    return {name: {"passed": all(o.passed for o in group), "expectations": sum(len(o.checks) for o in group),
                   "failed": [f for o in group for f in o.failures()]} for name, group in groups.items()}
