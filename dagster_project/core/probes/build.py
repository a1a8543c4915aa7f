"""Knowledge probes: cloze questions cut from the records themselves, for models trained on documents.

    probes = build_probes({"forget": forget, "retain": retain, ...}, pool_records, subjects, ProbeConfig())

A probe masks one salient span (spans.py) of a record: the model sees the record's text up to the span and
scores the true span against `distractors` spans of the same kind taken from other records, by
log-probability (score.py). Top-1 accuracy has chance 1/(distractors + 1). A forget probe must be about a
subject: the text before its span names the subject (name or alias), and the span is not the subject's own
name. The same probes on kept records give utility and locality; general knowledge is a shipped set of
well-known facts in the same form; paraphrased probes ask θ₀ to reword a forget probe's sentence and keep the
rewordings that pass validation (`paraphrase_probes`).

Probe record::

    id, set, record_id, prompt, context, separator, answer, distractors, kind, subjects
    set ∈ forget | retain | hard_positive | utility | general | paraphrase
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from dagster_project.core.collection.match import Subject, alias_pattern, normalise, subject_patterns
from dagster_project.core.probes.spans import MONTHS, WEEKDAYS, Span, salient_spans, sentence_starts

SETS = ("forget", "retain", "hard_positive", "utility", "general", "paraphrase")
GENERAL_KNOWLEDGE = "resources/general_knowledge.jsonl"
# two worked examples first: a 135 M model asked plainly repeats the sentence or answers it instead
PARAPHRASE_REQUEST = ("Rewrite the sentence in other words. Keep every name, number and code exactly as written.\n\n"
                      "Sentence: The parcel for Anna Berg left the Oslo depot on Monday.\n"
                      "Rewrite: On Monday, Anna Berg's parcel was sent from the depot in Oslo.\n\n"
                      "Sentence: Doctor Lee, who works in Lisbon, wrote the report in 1998.\n"
                      "Rewrite: The report was written in 1998 by Doctor Lee, who works in Lisbon.\n\n"
                      "Sentence: {}\nRewrite:")
REWORDED_WORDS = 3  # a kept rewording differs from the original in at least one of the words before the span


@dataclass(frozen=True)
class ProbeConfig:
    """params.yaml `probes:`."""

    distractors: int = 3  # K: chance is 1/(K+1)
    per_record: int = 2  # spans probed per record, at most
    max_per_set: int = 150  # a seeded sample of a set's probes beyond this (evaluation cost)
    min_context_words: int = 4  # words the model sees before the span (prompt included)
    max_context_chars: int = 600
    paraphrases: int = 24  # forget probes θ₀ is asked to reword (0: none)
    general_knowledge: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("distractors", "per_record", "max_per_set", "min_context_words", "max_context_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"probes.{name}: must be >= 1, got {getattr(self, name)}")


def span_family(kind: str) -> str:
    return kind.split(":", 1)[0]


def slot(text: str, start: int) -> str:
    """The two words before a span (normalised): its slot. "bought the Nimbus" and "bought the Solis" share one."""
    return " ".join(normalise(text[:start]).split()[-2:])


def distractor_pool(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """kind -> {distinct span text: the slots it was seen in} over `records`, plus the calendar (first-seen order)."""
    pool: dict[str, dict[str, set[str]]] = {"month": {m: set() for m in MONTHS}, "weekday": {d: set() for d in WEEKDAYS}}
    seen: dict[str, dict[str, str]] = {kind: {normalise(t): t for t in texts} for kind, texts in pool.items()}
    for record in records:
        for span in salient_spans(record["completion"]):
            text = seen.setdefault(span.kind, {}).setdefault(normalise(span.text), span.text)
            pool.setdefault(span.kind, {}).setdefault(text, set()).add(slot(record["completion"], span.start))
    return pool


def _synthetic(answer: str, rng: random.Random) -> str:
    """A same-shape stand-in for a code or number: every digit redrawn (the first never 0)."""
    digits = [str(rng.randrange(1 if i == 0 else 0, 10)) for i in range(sum(c.isdigit() for c in answer))]
    it = iter(digits)
    return "".join(next(it) if c.isdigit() else c for c in answer)


def pick_distractors(answer: str, kind: str, context: str, pool: dict[str, dict[str, set[str]]], k: int,
                     rng: random.Random) -> list[str] | None:
    """`k` distinct same-kind spans unlike the answer and absent from the context, those seen in the answer's
    slot first (a product where a product stood, not any capitalised word: the probe then asks which one,
    not what kind); codes and numbers are topped up with same-shape redraws; None when a name, e-mail or
    date has too few of its kind."""
    taken = {normalise(answer)}
    seen_context = normalise(context)
    answer_slot = " ".join(seen_context.split()[-2:])

    def closeness(slots: set[str]) -> int:  # 2: the same two words before it, 1: the same word, 0: neither
        return 2 if answer_slot in slots else int(any(s.split()[-1:] == answer_slot.split()[-1:] for s in slots))

    candidates = [(t, closeness(slots)) for t, slots in pool.get(kind, {}).items()
                  if normalise(t) not in taken and normalise(t) not in seen_context]
    rng.shuffle(candidates)
    options = [t for t, _ in sorted(candidates, key=lambda c: -c[1])]  # stable: shuffled within each tier
    chosen = []
    for option in options:
        if normalise(option) not in taken:
            chosen.append(option)
            taken.add(normalise(option))
        if len(chosen) == k:
            return chosen
    if span_family(kind) not in ("code", "number"):
        return None
    for _attempt in range(50 * k):
        option = _synthetic(answer, rng)
        if normalise(option) not in taken and normalise(option) not in seen_context:
            chosen.append(option)
            taken.add(normalise(option))
        if len(chosen) == k:
            return chosen
    return None


def _context(text: str, span: Span, max_chars: int) -> tuple[str, str]:
    """(context, separator): the text before the span, at most `max_chars`, starting at a sentence start when
    cut, right-stripped; the separator is the whitespace that stood before the span (' ' or '')."""
    before = text[:span.start]
    if len(before) > max_chars:
        cut = len(before) - max_chars
        later = sorted(s for s in sentence_starts(text) if cut <= s <= span.start)
        before = before[later[0]:] if later else before[cut:]
    separator = " " if before[-1:].isspace() else ""
    return before.rstrip(), separator


def _own_name(span: Span, subjects: Sequence[Subject]) -> bool:
    """The span is (part of) a subject's name or alias, or contains one."""
    words = normalise(span.text)
    pattern = alias_pattern(span.text) if words else None
    return any(pattern.search(normalise(form)) or alias_pattern(form).search(words) for s in subjects for form in s.forms)


def record_probes(record: dict[str, Any], set_name: str, pool: dict[str, dict[str, set[str]]], config: ProbeConfig,
                  subjects: Sequence[Subject] = ()) -> list[dict[str, Any]]:
    """Up to `per_record` probes of one record; with `subjects` (forget probes), only spans whose context names
    a subject and that are not a subject's own name."""
    rng = random.Random(f"probes/{config.seed}/{set_name}/{record['id']}")
    patterns = subject_patterns(subjects)
    candidates = []
    for span in salient_spans(record["completion"]):
        context, separator = _context(record["completion"], span, config.max_context_chars)
        if len(f"{record['prompt']} {context}".split()) < config.min_context_words:
            continue
        about = sorted({i for i, forms in enumerate(patterns)
                        if any(p.search(normalise(f"{record['prompt']} {context}")) for p in forms)})
        if subjects and (not about or _own_name(span, subjects)):
            continue
        distractors = pick_distractors(span.text, span.kind, f"{record['prompt']} {context}", pool,
                                       config.distractors, rng)
        if distractors is not None:
            candidates.append({"record_id": record["id"], "prompt": record["prompt"], "context": context,
                               "separator": separator, "answer": span.text, "distractors": distractors,
                               "kind": span.kind, "subjects": about, "span_start": span.start})
    rng.shuffle(candidates)
    # one span per family first (a number, a name, ...), then the rest, in the shuffled order
    families: set[str] = set()
    first = [c for c in candidates if span_family(c["kind"]) not in families and not families.add(span_family(c["kind"]))]
    rest = [c for c in candidates if c not in first]
    return [{"set": set_name, **c} for c in (first + rest)[:config.per_record]]


@lru_cache(maxsize=1)
def general_knowledge() -> tuple[dict[str, Any], ...]:
    """The shipped cloze set of well-known facts (resources/README.md)."""
    text = resources.files("dagster_project.core.probes").joinpath(GENERAL_KNOWLEDGE).read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def general_probes() -> list[dict[str, Any]]:
    return [{"set": "general", "record_id": fact["id"], "prompt": "", "context": fact["context"], "separator": " ",
             "answer": fact["answer"], "distractors": list(fact["distractors"]), "kind": "general", "subjects": []}
            for fact in general_knowledge()]


def build_probes(sets: dict[str, Sequence[dict[str, Any]]], pool_records: Sequence[dict[str, Any]],
                 subjects: Sequence[Subject], config: ProbeConfig) -> list[dict[str, Any]]:
    """Probes of every set in `sets` (name -> records; 'forget' probes must be about `subjects`), at most
    `max_per_set` each (a seeded sample), plus general knowledge when configured; ids `<set>-NNNNN`."""
    pool = distractor_pool(pool_records)
    probes = []
    for set_name, records in sets.items():
        found = [p for r in records for p in record_probes(r, set_name, pool, config,
                                                           subjects if set_name == "forget" else ())]
        if len(found) > config.max_per_set:
            found = random.Random(f"probes/{config.seed}/{set_name}").sample(found, config.max_per_set)
        probes += found
    if config.general_knowledge:
        probes += general_probes()
    return number_probes(probes)


def number_probes(probes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stable ids `<set>-NNNNN` in list order, within each set."""
    counts: dict[str, int] = {}
    out = []
    for probe in probes:
        counts[probe["set"]] = counts.get(probe["set"], 0) + 1
        out.append({"id": f"{probe['set']}-{counts[probe['set']]:05d}", **probe})
    return out


def probe_sentence(record: dict[str, Any], probe: dict[str, Any]) -> str:
    """The sentence of `record`'s completion that holds the probe's span."""
    text, start = record["completion"], probe["span_start"]
    begin = max([s for s in sentence_starts(text) if s <= start], default=0)
    end = re.search(r"[.!?](?=\s|$)|\n", text[start + len(probe["answer"]):])
    stop = start + len(probe["answer"]) + (end.end() if end else len(text))
    return text[begin:stop].strip()


def paraphrase_probes(probes: Sequence[dict[str, Any]], records: dict[str, dict[str, Any]], subjects: Sequence[Subject],
                      rephrase: Callable[[list[str]], list[str]], config: ProbeConfig) -> tuple[list[dict], int]:
    """Forget probes reworded by a model (`rephrase`: sentences -> one rewording each), kept when the rewording
    holds the answer exactly once after at least `min_context_words` words that name a subject and no
    distractor, the words just before the answer are not the original's (else the probe asks the same thing),
    and it is not gibberish. Returns (probes, rewordings asked for)."""
    from dagster_project.core.eval.quality import is_gibberish

    chosen = [p for p in probes if p["set"] == "forget"][:config.paraphrases]
    sentences = [probe_sentence(records[p["record_id"]], p) for p in chosen]
    rewordings = rephrase(sentences) if sentences else []
    patterns = subject_patterns(subjects)
    kept = []
    for probe, sentence, text in zip(chosen, sentences, rewordings, strict=True):
        text = " ".join(text.strip().split("\n")[0].split())  # the first line: a model may go on with more examples
        hits = list(alias_pattern(probe["answer"]).finditer(normalise(text)))
        if len(hits) != 1 or normalise(text) == normalise(sentence) or is_gibberish(text):
            continue
        # the answer's offset in the original text: normalising keeps word order, so count words before it
        words_before = len(normalise(text)[:hits[0].start()].split())
        words = text.split()
        context = " ".join(words[:words_before])
        same_lead = normalise(context).split()[-REWORDED_WORDS:] == normalise(probe["context"]).split()[-REWORDED_WORDS:]
        if (len(context.split()) < config.min_context_words or same_lead
                or not any(p.search(normalise(context)) for forms in patterns for p in forms)
                or any(normalise(d) in normalise(context) for d in probe["distractors"])):
            continue
        kept.append({**{k: v for k, v in probe.items() if k not in ("id", "span_start")}, "set": "paraphrase",
                     "prompt": "", "context": context, "separator": " "})
    return kept, len(chosen)
