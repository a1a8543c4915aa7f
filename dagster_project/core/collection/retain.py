"""The retain set of a request on the user's own data: what unlearning must keep, and the hardest of it.

    retain = build_retain_set(candidates, forget, subjects, scores, RetainConfig(), encode)

Candidates are the records of the `train` and `retain` sources that are not collected, do not mention any
subject by name or alias, and scored more than 0.1 below the collection threshold (a borderline record is
neither forgotten nor trained to be kept). Of those:
- hard positives: the `hard_positives` records closest to the forget documents (all-MiniLM-L6-v2 cosine to
  the nearest forget record; to the subjects' names when nothing was collected). They read like the
  forgotten records without being about the subjects: the knowledge most at risk of going with them. SNAP
  builds its hard positives the same way on the embedded corpus (data/snap.py).
- a seeded sample of `sample` of the rest.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dagster_project.core.collection.collect import EMBED_CHARS, Encoder, record_text, subject_query
from dagster_project.core.collection.match import Subject, mentioned, subject_patterns

NEAR_THRESHOLD = 0.1


@dataclass(frozen=True)
class RetainConfig:
    """params.yaml `retain:`."""

    sample: int = 200  # non-matching records kept in the retain term
    hard_positives: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample < 0 or self.hard_positives < 0 or self.sample + self.hard_positives == 0:
            raise ValueError("retain.sample and retain.hard_positives: each >= 0, not both 0")


def build_retain_set(candidates: Sequence[dict[str, Any]], forget: Sequence[dict[str, Any]],
                     subjects: Sequence[Subject], scores: dict[str, float], threshold: float, config: RetainConfig,
                     encode: Encoder) -> list[dict[str, Any]]:
    """Hard positives, then the sample, each record with its `kind` and `similarity` to the forget documents."""
    patterns = subject_patterns(subjects)
    forget_ids = {r["id"] for r in forget}
    pool = [r for r in candidates if r["id"] not in forget_ids and not mentioned(patterns, record_text(r))
            and scores.get(r["id"], 0.0) < threshold - NEAR_THRESHOLD]
    if not pool:
        return []
    queries = [record_text(r)[:EMBED_CHARS] for r in forget] or [subject_query(s) for s in subjects]
    if queries:
        similarity = (encode([record_text(r)[:EMBED_CHARS] for r in pool]) @ encode(queries).T).max(axis=1)
    else:
        similarity = np.zeros(len(pool))
    order = sorted(range(len(pool)), key=lambda i: (-similarity[i], pool[i]["id"]))
    hard = order[:config.hard_positives]
    rest = sorted(order[config.hard_positives:], key=lambda i: pool[i]["id"])
    sample = sorted(random.Random(config.seed).sample(rest, min(config.sample, len(rest))), key=lambda i: pool[i]["id"])
    return ([{**pool[i], "kind": "hard_positive", "similarity": round(float(similarity[i]), 6)} for i in hard]
            + [{**pool[i], "kind": "sample", "similarity": round(float(similarity[i]), 6)} for i in sample])
