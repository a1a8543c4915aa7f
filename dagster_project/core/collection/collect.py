"""Forget-set collection: find every record of the user's sources that is about the request's subjects.

    collection = collect(records, subjects, CollectionConfig(threshold=0.5), encode)
    collection.records     # the forget set: records scored at or above the threshold, plus given ids and documents
    collection.report()    # counts per subject and source, score histogram, hashed ids: safe for logs and MLflow

Each record gets one score per subject, the highest of:
- 1.0 when it names the subject or one of its aliases (match.py: normalised, stand-alone mentions);
- lexical_weight · BM25 + semantic_weight · cosine: BM25 (the `bm25s` package) of the record for the
  subject's name and aliases as the query, divided by the best BM25 score any record got for that query, and the
  cosine similarity of all-MiniLM-L6-v2 embeddings of the record and of "name (aliases)". These catch what
  exact matching misses (a surname alone, a misspelling) and rank the borderline records a reviewer should see
  in `unlearn request preview`.
A record joins the forget set when its best score reaches `threshold`. Records the request names by id, and
the documents it attaches, join with score 1.0.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dagster_project.core.collection.match import Subject, normalise, subject_patterns

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> unit-norm rows (reveal/scoring.load_encoder)
HISTOGRAM_BINS = 20
EMBED_CHARS = 2000  # MiniLM reads 256 word pieces; the head of a long record is what it can embed


@dataclass(frozen=True)
class CollectionConfig:
    """params.yaml `collection:`."""

    threshold: float = 0.5  # a record at or above this score (for any subject) is collected
    lexical_weight: float = 0.5
    semantic_weight: float = 0.5
    passage_chars: int = 1200  # attached documents are cut into passages of at most this many characters

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"collection.threshold: must be in (0, 1], got {self.threshold}")
        if self.lexical_weight < 0 or self.semantic_weight < 0 or self.lexical_weight + self.semantic_weight > 1:
            raise ValueError("collection.lexical_weight and semantic_weight: each >= 0, their sum <= 1 (a retrieved "
                             "record must never outscore an exact mention)")
        if self.passage_chars < 100:
            raise ValueError(f"collection.passage_chars: must be >= 100, got {self.passage_chars}")


@dataclass
class Collection:
    records: list[dict[str, Any]]  # the forget set (personal data: a versioned dataset, never a log)
    scored: list[dict[str, Any]]  # every searched record with its best score and why (for review), best first
    threshold: float
    n_subjects: int
    searched: dict[str, int] = field(default_factory=dict)  # source -> records searched

    def report(self) -> dict[str, Any]:
        """Counts, a score histogram and hashed record ids: no names, no text."""
        per_subject = Counter(i for r in self.records for i in r["subjects"])
        scores = [r["score"] for r in self.scored]
        histogram, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
        below = [s for s in scores if s < self.threshold]
        return {
            "threshold": self.threshold, "records": len(self.records), "searched": self.searched,
            "per_subject": {f"subjects.{i}": per_subject.get(i, 0) for i in range(self.n_subjects)},
            "per_source": dict(sorted(Counter(r["source"] for r in self.records).items())),
            "per_match": dict(sorted(Counter(r["match"] for r in self.records).items())),
            "near_threshold": sum(1 for s in below if s >= self.threshold - 0.1),
            "score_histogram": {"counts": histogram.tolist(), "edges": [round(e, 3) for e in edges.tolist()]},
            "record_ids_sha256": sorted(hashlib.sha256(r["id"].encode()).hexdigest() for r in self.records),
        }


def record_text(record: dict[str, Any]) -> str:
    return f"{record['prompt']}\n{record['completion']}".strip()


def lexical_scores(texts: Sequence[str], queries: Sequence[str]) -> np.ndarray:
    """(queries × texts) BM25 scores, each row divided by its best score (0 where no text shares a term)."""
    import bm25s

    tokenize = dict(stopwords="en", show_progress=False)
    index = bm25s.BM25()
    index.index(bm25s.tokenize([normalise(t) for t in texts], **tokenize), show_progress=False)
    rows = []
    for query in bm25s.tokenize([normalise(q) for q in queries], return_ids=False, **tokenize):
        scores = index.get_scores(query) if query else np.zeros(len(texts))
        rows.append(scores / scores.max() if scores.max() > 0 else scores)
    return np.asarray(rows, dtype=float).reshape(len(queries), len(texts))


def subject_query(subject: Subject) -> str:
    return subject.name + (f" ({', '.join(subject.aliases)})" if subject.aliases else "")


def collect(records: Sequence[dict[str, Any]], subjects: Sequence[Subject], config: CollectionConfig,
            encode: Encoder, given: Sequence[dict[str, Any]] = ()) -> Collection:
    """Score `records` for `subjects` and collect the forget set; `given` (records named by id, passages of
    attached documents: each with its `match`) join it whatever their score."""
    patterns = subject_patterns(subjects)
    texts = [record_text(r) for r in records]
    normal = [normalise(t) for t in texts]
    exact = np.array([[float(any(p.search(n) for p in forms)) for n in normal] for forms in patterns]).reshape(
        len(subjects), len(records))
    if records and subjects:
        queries = [subject_query(s) for s in subjects]
        lexical = lexical_scores(texts, queries)
        semantic = np.clip(encode(queries) @ encode([t[:EMBED_CHARS] for t in texts]).T, 0.0, 1.0)
        retrieved = config.lexical_weight * lexical + config.semantic_weight * semantic
    else:
        retrieved = np.zeros_like(exact)
    scores = np.maximum(exact, retrieved)  # (subjects, records)
    given_ids = {g["id"] for g in given}
    collected, scored = [dict(g, score=1.0) for g in given], []
    for column, record in enumerate(records):
        best = float(scores[:, column].max()) if subjects else 0.0
        about = [i for i in range(len(subjects)) if scores[i, column] >= config.threshold]
        match = ("name" if exact[:, column].any() else "retrieved") if about else "none"
        entry = {**record, "subjects": about, "score": round(best, 6), "match": match}
        scored.append(entry)
        if about and record["id"] not in given_ids:
            collected.append(entry)
    scored.sort(key=lambda r: (-r["score"], r["id"]))
    searched = dict(sorted(Counter(r["source"] for r in records).items()))
    return Collection(sorted(collected, key=lambda r: r["id"]), scored, config.threshold, len(subjects), searched)


def split_passages(text: str, max_chars: int) -> list[str]:
    """Paragraphs (blank-line separated) of a document, each cut at sentence ends into pieces of at most
    `max_chars` characters (a sentence longer than that is cut at a space)."""
    passages = []
    for paragraph in re.split(r"\n\s*\n", text):
        piece = ""
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
            for part in _cut(sentence, max_chars):
                if piece and len(piece) + 1 + len(part) > max_chars:
                    passages.append(piece)
                    piece = ""
                piece = f"{piece} {part}".strip()
        if piece:
            passages.append(piece)
    return passages


def _cut(sentence: str, max_chars: int) -> list[str]:
    parts = []
    while len(sentence) > max_chars:
        cut = sentence.rfind(" ", 0, max_chars)
        cut = cut if cut > 0 else max_chars
        parts.append(sentence[:cut])
        sentence = sentence[cut:].strip()
    return [*parts, sentence] if sentence else parts
