"""Does a text mention a subject? Exact matching of names and aliases, normalised the way people write.

    subject = Subject("Zoë O'Brien", aliases=("Zoe", "zoe.obrien@example.org", "CUS-40217"))
    patterns = subject_patterns([subject])
    mentioned(patterns, "Ticket from ZOE O’BRIEN's account")      # -> {0}

Both sides are normalised before comparing: Unicode compatibility forms folded (NFKD), diacritics dropped
(Zoë = Zoe), case folded, typographic apostrophes and dashes made plain, runs of whitespace made one space.
A match must stand alone: no letter, digit, `_` or `-` may touch it on either side, so "Ann" is not found in
"Anne", "Joanna" or "Ann-Marie", an e-mail address is not found inside a longer one, and a possessive
("O'Brien's") still matches, because the apostrophe is not a word character.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "\u2010": "-", "\u2011": "-",
                              "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u00a0": " "})
# a match may not touch a word character, a hyphen, or (for addresses and codes) a dot followed by more text
_LEFT, _RIGHT = r"(?<![\w\-@.+])", r"(?![\w\-@]|\.\w)"


@dataclass(frozen=True)
class Subject:
    name: str
    aliases: tuple[str, ...] = ()

    @property
    def forms(self) -> tuple[str, ...]:
        """The name and every alias, each once."""
        return tuple(dict.fromkeys((self.name, *self.aliases)))


def normalise(text: str) -> str:
    """Case-, accent-, apostrophe- and whitespace-insensitive form of a text (see the module docstring).

    Dropping combining marks after NFKD keeps offsets close to the original's but not equal; callers compare
    normalised texts with each other and never index the original with a normalised offset."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def alias_pattern(alias: str) -> re.Pattern[str]:
    """A regex finding `alias` (normalised) as a stand-alone mention in a normalised text."""
    form = normalise(alias)
    if not form:
        raise ValueError("an empty name or alias cannot be matched")
    body = r"\s+".join(re.escape(part) for part in form.split(" "))
    return re.compile(_LEFT + body + _RIGHT)


def subject_patterns(subjects: Sequence[Subject]) -> list[list[re.Pattern[str]]]:
    """One list of patterns per subject: its name and aliases."""
    return [[alias_pattern(form) for form in subject.forms] for subject in subjects]


def mentioned(patterns: Sequence[Sequence[re.Pattern[str]]], text: str) -> set[int]:
    """Indexes of the subjects `text` mentions by name or alias."""
    normal = normalise(text)
    return {index for index, forms in enumerate(patterns) if any(p.search(normal) for p in forms)}


def match_kinds(subject: Subject, text: str) -> list[str]:
    """How `text` mentions `subject`: 'name' if by its name, 'alias' if only by an alias; [] if not at all."""
    normal = normalise(text)
    if alias_pattern(subject.name).search(normal):
        return ["name"]
    return ["alias"] if any(alias_pattern(a).search(normal) for a in subject.aliases) else []
