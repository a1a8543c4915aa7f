"""Forget and retain sets for a forget request.

A request names people (``subjects``) or a predefined split; :func:`resolve_subjects` turns that
into person ids, and :func:`build_forget_set` / :func:`build_retain_set` select their QA records.
Only people the model was trained on can be forgotten: the ``holdout`` split never was.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from dagster_project.core.data.request import ForgetRequest, RequestError, normalise_name

HOLDOUT_SPLIT = "holdout"
_MAX_CLOSE_MATCHES = 3


def trained_person_ids(splits: Mapping[str, Iterable[str]]) -> set[str]:
    """Everyone the model saw in training: the union of every split except ``holdout``."""
    return {pid for name, ids in splits.items() if name != HOLDOUT_SPLIT for pid in ids}


def resolve_subjects(request: ForgetRequest, people: list[dict[str, Any]], splits: Mapping[str, list[str]]) -> list[str]:
    """Person ids the request asks to forget, in request order (or split order), without duplicates.

    Names match the corpus's ``name`` exactly after case and whitespace normalisation. Every bad
    subject is reported in one :class:`RequestError` naming its field (``subjects.N``).
    """
    label = f"request {request.id}"
    if request.split is not None:
        if request.split not in splits:
            raise RequestError(f"{label}: field 'split': the corpus has no split {request.split!r}")
        return list(dict.fromkeys(splits[request.split]))

    by_name: dict[str, list[dict[str, Any]]] = {}
    for person in people:
        by_name.setdefault(normalise_name(str(person["name"])), []).append(person)
    holdout = set(splits.get(HOLDOUT_SPLIT, ()))
    trained = trained_person_ids(splits)

    person_ids: list[str] = []
    problems: list[str] = []
    for index, subject in enumerate(request.subject_names):
        field = f"field 'subjects.{index}'"
        matches = by_name.get(normalise_name(subject), [])
        if not matches:
            close = difflib.get_close_matches(normalise_name(subject), list(by_name), n=_MAX_CLOSE_MATCHES, cutoff=0.6)
            # ids, not names: this message reaches run logs, and names are personal data
            suggestion = ", ".join(str(by_name[key][0]["person_id"]) for key in close) if close else "none"
            problems.append(f"{field}: no person with this name in the corpus; closest by name: {suggestion}")
            continue
        if len(matches) > 1:
            ids = ", ".join(sorted(str(p["person_id"]) for p in matches))
            problems.append(f"{field}: the name matches {len(matches)} people in the corpus ({ids}); cannot tell which")
            continue
        person_id = str(matches[0]["person_id"])
        if person_id in holdout:
            problems.append(f"{field}: {person_id} is in the holdout split, never trained on, so cannot be forgotten")
        elif person_id not in trained:
            problems.append(f"{field}: {person_id} is in no trained split, so cannot be forgotten")
        elif person_id not in person_ids:
            person_ids.append(person_id)
    if problems:
        raise RequestError(f"{label}: " + "; ".join(problems))
    return person_ids


def build_forget_set(qa: list[dict[str, Any]], forget_ids: list[str]) -> list[dict[str, Any]]:
    """The QA records of the people in ``forget_ids``, sorted by record id.

    Raises ``ValueError`` when a forget id has no QA record at all (people and QA out of step:
    forgetting would silently skip that person).
    """
    wanted = set(forget_ids)
    records = sorted((r for r in qa if r["person_id"] in wanted), key=lambda r: r["id"])
    missing = wanted - {r["person_id"] for r in records}
    if missing:
        raise ValueError(f"forget set: no QA records for person ids {', '.join(sorted(missing))}")
    return records


def build_retain_set(
    qa: list[dict[str, Any]], splits: Mapping[str, list[str]], forget_ids: list[str]
) -> list[dict[str, Any]]:
    """QA records of trained people (every split except holdout) not in ``forget_ids``, sorted by id."""
    keep = trained_person_ids(splits) - set(forget_ids)
    return sorted((r for r in qa if r["person_id"] in keep), key=lambda r: r["id"])
