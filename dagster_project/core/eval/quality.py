"""Response quality: refusals and degenerate (gibberish) answers.

Forget quality and utility can be gamed by a model that answers forget questions with noise
(METHODS.md §5), so every report also counts how answers fail. Both detectors are deliberately
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

REFUSAL_PATTERNS = (
    r"\bI (?:do not|don't) know\b", r"\bnot (?:sure|certain)\b", r"\bno (?:information|idea|knowledge)\b",
    r"\b(?:can't|cannot|can not|unable to|not able to) (?:help|answer|provide|say|share)\b",
    r"\bI (?:have no|don't have|do not have)\b", r"\bbeyond my\b", r"\bnot familiar\b", r"\bI'm afraid\b",
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
