"""Salient spans of a text: what a knowledge probe masks and asks the model to fill in.

    salient_spans("Marta's order 58123 shipped to Gdańsk on 12 March.")
    # -> 58123 (number:99999), Gdańsk (name:1), March (month)

A span is a fact a model can know about the text's subject: an e-mail address, a code or id mixing letters
and digits, a number, a month or weekday, or a capitalised name that does not open its sentence (people,
places, products, organisations). Its *kind* decides which other spans may stand in as distractors: the
same shape of code or number (digits count, letters and separators in place), the same number of words
for a name. Hand-written rules rather than a tagger: a named-entity model (spaCy's) would have to be
downloaded, and these five kinds are what the probes need; rules also behave the same on every text,
invented names included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# capitalised words that are not names, or open a clause (a probe on them tests grammar, not knowledge)
NOT_NAMES = frozenset({"I", "I'm", "I've", "I'd", "I'll", "A", "An", "The", "This", "That", "These", "Those", "He",
                       "She", "It", "We", "They", "His", "Her", "Their", "Our", "My", "Your", "Mr", "Mrs", "Ms", "Dr",
                       "Mr.", "Mrs.", "Ms.", "Dr.", "St", "St.", "Hi", "Hello", "Dear", "Thanks", "Thank", "Yes", "No",
                       "OK", "Ok", "Please", "If", "When", "After", "Before", "And", "But", "Or", "So", "In", "On",
                       "At", "For", "From", "To", "With", "As", "By", "Of", "User", "Assistant", "System", "Professor",
                       "Prof", "Sir", "Lady", "Lord", "Captain", "Inspector", "Doctor", "Miss", "Madam"})
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+(?<!\.)")
_CODE = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w-])")
_NUMBER = re.compile(r"(?<![\w.,-])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w-])|(?<![\w.,-])\d+(?:\.\d+)?(?![\w-]|[.,]\d)")
_NAME_WORD = r"[A-Z][\w'’-]*"
_NAME = re.compile(_NAME_WORD + r"(?:\s+(?:(?:of|de|da|van|von|der|du|la|le|del)\s+)?" + _NAME_WORD + r")*")
# a full stop ends a sentence unless it ends an abbreviation or an initial ("Dr. Watson", "J. Smith")
_SENTENCE_END = re.compile(r"(?<!\bDr)(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bSt)(?<!\bProf)(?<!\b[A-Z])[.!?]\s+|\n+")
_CALENDAR = {w: "month" for w in MONTHS} | {w: "weekday" for w in WEEKDAYS}


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    kind: str


def shape(text: str) -> str:
    """A code's or number's shape: letters as A, digits as 9, the rest as it is ('CUS-40217' -> 'AAA-99999')."""
    return re.sub(r"[A-Za-z]", "A", re.sub(r"\d", "9", text))


def sentence_starts(text: str) -> set[int]:
    """Offsets where a sentence, a line or the text begins."""
    return {0} | {m.end() for m in _SENTENCE_END.finditer(text)}


def salient_spans(text: str) -> list[Span]:
    """Every salient span of `text`, non-overlapping, in text order (see the module docstring)."""
    taken: list[tuple[int, int]] = []
    spans: list[Span] = []

    def add(start: int, end: int, kind: str) -> None:
        if all(end <= s or start >= e for s, e in taken):
            taken.append((start, end))
            spans.append(Span(start, end, text[start:end], kind))

    for m in _EMAIL.finditer(text):
        add(m.start(), m.end(), "email")
    for m in _CODE.finditer(text):
        add(m.start(), m.end(), f"code:{shape(m.group())}")
    for m in _NUMBER.finditer(text):
        add(m.start(), m.end(), f"number:{shape(m.group())}")
    starts = sentence_starts(text)
    for m in _NAME.finditer(text):
        words = [(m.start() + w.start(), m.start() + w.end()) for w in re.finditer(r"\S+", m.group())]
        # a sentence's first word is capitalised anyway, and particles cannot open a name: keep the rest of the run
        while words and (words[0][0] in starts or text[words[0][0]].islower()
                         or text[words[0][0]:words[0][1]].rstrip(".'’") in NOT_NAMES):
            words.pop(0)
        if not words:
            continue
        start = words[0][0]
        span_text = re.sub(r"(?:['’]s?|[.,])$", "", text[start:words[-1][1]])  # "Holmes's" -> "Holmes"
        if span_text in _CALENDAR:
            add(start, start + len(span_text), _CALENDAR[span_text])
        elif len(span_text) > 1:
            add(start, start + len(span_text), f"name:{len(span_text.split())}")
    return sorted(spans, key=lambda s: s.start)
