"""What counts as an identifier on an exam: labels, number formats and the values found.

Matching is accent- and case-insensitive and keeps a 1:1 character mapping with the original text,
so a match maps straight back to the characters (and their boxes) PyMuPDF extracted.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Formatted document numbers anywhere on the page. Unformatted 11-digit runs count as a CPF only
# when their check digits are valid, so exam numbers and dates are left alone.
CPF_FORMATTED = re.compile(r"(?<!\d)\d{3}\.\d{3}\.\d{3}\s?-\s?\d{2}(?!\d)")
CPF_DIGITS = re.compile(r"(?<!\d)\d{11}(?!\d)")
RG_FORMATTED = re.compile(r"(?<![\d.])\d{1,2}\.\d{3}\.\d{3}\s?-\s?[\dxX](?![\d])")
CRM_NUMBER = re.compile(
    r"crm\s*[-/:.]?\s*(?:[a-z]{2}\s*[-/:]?\s*)?\d{4,7}(?:\s*[-/]\s*[a-z]{2}(?![a-z]))?"
)
# Words of a person's name too common to identify anyone on their own.
NAME_STOPWORDS = frozenset({"dr", "dra", "sr", "sra", "da", "de", "do", "das", "dos", "e", "del"})
MIN_NAME_TOKEN = 3


def fold_char(char: str) -> str:
    """One character without accents, lower-cased; always exactly one character."""
    base = unicodedata.normalize("NFKD", char)[:1] or char
    lowered = base.lower()
    return lowered if len(lowered) == 1 else base


def fold(text: str) -> str:
    """Accent- and case-insensitive form of `text`, the same length as `text`."""
    return "".join(fold_char(c) for c in text)


def squash(text: str) -> str:
    """`fold` plus collapsed whitespace: the form values are compared in."""
    return " ".join(fold(text).split())


def cpf_is_valid(digits: str) -> bool:
    """True when the 11 digits carry valid CPF check digits (and are not one repeated digit)."""
    if len(digits) != 11 or not digits.isdigit() or len(set(digits)) == 1:
        return False
    numbers = [int(d) for d in digits]
    for position in (9, 10):
        total = sum(
            n * w for n, w in zip(numbers[:position], range(position + 1, 1, -1), strict=True)
        )
        if (total * 10) % 11 % 10 != numbers[position]:
            return False
    return True


def pattern_spans(folded: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of every CPF, RG or CRM number in an already folded text."""
    for kind, pattern in (("cpf", CPF_FORMATTED), ("rg", RG_FORMATTED), ("crm", CRM_NUMBER)):
        for match in pattern.finditer(folded):
            yield match.start(), match.end(), kind
    for match in CPF_DIGITS.finditer(folded):
        if cpf_is_valid(match.group()):
            yield match.start(), match.end(), "cpf"


def label_pattern(labels: Iterable[str]) -> re.Pattern[str]:
    """A regex matching `Label:` for any of `labels` in folded text, longest label first."""
    alternatives = sorted({re.escape(squash(label)).replace(r"\ ", r"\s+") for label in labels})
    alternatives.sort(key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(" + "|".join(alternatives) + r")\s*:")


def name_tokens(value: str) -> set[str]:
    """The words of a name that identify on their own (folded), e.g. {'joao', 'conceicao'}."""
    words = re.findall(r"[^\W\d_]+", fold(value))
    return {w for w in words if len(w) >= MIN_NAME_TOKEN and w not in NAME_STOPWORDS}


@dataclass
class Identifiers:
    """The identifying values read from one exam before redaction; what verification hunts for.

    `values` are compared as whole phrases, `names` word by word (a surname alone identifies);
    only their count ever leaves the process, never the values.
    """

    values: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)

    def add_value(self, value: str, *, is_name: bool) -> None:
        squashed = squash(value).strip(" .,;:-")
        if len(squashed) >= 3:
            self.values.add(squashed)
            digits = re.sub(r"\D", "", squashed)
            if len(digits) >= 7 and len(digits) == len(re.sub(r"[\s.\-/]", "", squashed)):
                self.values.add(digits)  # the same document number written without separators
        if is_name:
            self.names |= name_tokens(value)

    def __len__(self) -> int:
        return len(self.values) + len(self.names)

    def found_in(self, text: str) -> list[str]:
        """Kinds of identifier in `text` (value, name, cpf, rg, crm), never the values."""
        squashed = squash(text)
        found = [kind for _, _, kind in pattern_spans(squashed)]
        if any(value in squashed for value in self.values):
            found.append("value")
        words = set(re.findall(r"[^\W\d_]+", squashed))
        if words & self.names:
            found.append("name")
        return sorted(set(found))
