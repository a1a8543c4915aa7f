"""Response quality: refusals and degenerate (gibberish) answers.

Forget quality and utility can be gamed by a model that answers forget questions with noise
(a known failure of unlearning metrics), so every report also counts how answers fail. Both detectors are deliberately
simple and documented, so their numbers can be re-derived by hand:

* **refusal**: the answer contains a refusal phrase (case-insensitive) from `REFUSAL_PATTERNS`
  or from the request's own obliterated-response pool.
* **gibberish**: any of
    - empty answer, or a U+FFFD replacement character (broken byte-level decoding);
    - repetition: with ≥ 4 words, fewer than half of the word bigrams are distinct
      (`distinct_2 < 0.5`, e.g. "Mors Mors Mors Mors");
    - low word entropy: with ≥ 6 words, the Shannon entropy of the word distribution is below
      40 % of its maximum log2(n_words) (a few words cycling).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

# Ways of declining or of professing ignorance, in a model's own words. Tested to catch >= 95 % of
# TOFU's 100 "I don't know" answers and of SNAP's obliterated responses, and none of the corpus'
# answer sentences (tests/test_mia_quality.py), so a refusal in other words still counts.
REFUSAL_PATTERNS = (
    r"\bI (?:do not|don't|really don't|truly don't) know\b", r"\bknow nothing\b", r"\bunknown to me\b",
    r"\bnot (?:sure|certain|familiar|informed|aware|acquainted|well-versed|equipped|the best source|the right|"
    r"knowledgeable|privy|briefed|in my)\b",
    r"\bno (?:information|idea|knowledge|data|details|insight|record|clue)\b",
    r"\b(?:can't|cannot|can not|unable to|not able to|not in a position to) (?:\w+ )?(?:help|answer|provide|say|share|"
    r"tell|confirm|discuss|give|comment|shed|recall|speak|offer)\b",
    r"\bI (?:have no|have nothing|don't have|do not have|lack|haven't (?:learned|been)|seem to have no)\b",
    r"\b(?:beyond|outside|out of) (?:my|what I|the scope)\b", r"\bI'm (?:afraid|sorry|unaware|clueless|stumped|blank)\b",
    r"\b(?:not|nothing) (?:something|someone|a topic|a subject|anything|within|information) I\b",
    r"\bnothing I can\b", r"\bnot within my\b", r"\b(?:a mystery|a blind spot|at a loss|drawing a blank)\b",
    r"\b(?:need to look|yet to learn|come up short)\b",
    r"\b(?:didn't|doesn't|don't|do not|does not|did not) (?:cover|include|contain|extend)\b",
    r"\b(?:don't|do not|doesn't|does not) (?:hold|possess|have|seem to have)\b", r"\b(?:lacking|missing|lack of) information\b",
    r"\b(?:haven't|have not|I've not|hasn't|has not) (?:been|encountered|the faintest)\b", r"\bin the dark\b",
    r"\b(?:decline|uncharted|at a disadvantage|unable to|yet to be|limited to)\b", r"\bI lack\b", r"\bwish I could\b",
)
MIN_DISTINCT_BIGRAMS = 0.5
MIN_RELATIVE_ENTROPY = 0.4


def is_refusal(answer: str, extra_phrases: Iterable[str] = ()) -> bool:
    lowered = answer.casefold()
    if any(phrase.casefold().strip(" .") in lowered for phrase in extra_phrases if phrase.strip(" .")):
        return True
    return any(re.search(pattern, answer, flags=re.IGNORECASE) for pattern in REFUSAL_PATTERNS)


def distinct_bigram_ratio(words: Sequence[str]) -> float:
    bigrams = list(zip(words, words[1:]))
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


def relative_word_entropy(words: Sequence[str]) -> float:
    """Shannon entropy of the word distribution divided by its maximum, log2(len(words))."""
    if len(words) < 2:
        return 1.0
    counts = Counter(words)
    entropy = -sum(c / len(words) * math.log2(c / len(words)) for c in counts.values())
    return entropy / math.log2(len(words))


def is_gibberish(answer: str) -> bool:
    words = answer.casefold().split()
    if not words or "\ufffd" in answer:
        return True
    if len(words) >= 4 and distinct_bigram_ratio(words) < MIN_DISTINCT_BIGRAMS:
        return True
    return len(words) >= 6 and relative_word_entropy(words) < MIN_RELATIVE_ENTROPY


def refusal_rate(answers: Sequence[str], extra_phrases: Iterable[str] = ()) -> float:
    if not answers:
        raise ValueError("refusal_rate needs at least one answer")
    phrases = list(extra_phrases)
    return sum(is_refusal(a, phrases) for a in answers) / len(answers)


def gibberish_rate(answers: Sequence[str]) -> float:
    if not answers:
        raise ValueError("gibberish_rate needs at least one answer")
    return sum(is_gibberish(a) for a in answers) / len(answers)
