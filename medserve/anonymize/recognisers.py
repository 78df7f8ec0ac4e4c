"""What counts as an identifier in Brazilian exam text: one recogniser per kind, used alike by the
redactor (inside the kept zones of page 1) and by the verifier (on everything an output holds).

Every pattern is linear-time: each quantifier is bounded or cannot overlap its neighbour, so no
input (e.g. "crm" followed by thousands of spaces) makes the regex engine backtrack without end.
Matching runs on `fold(text)` (accents off, lower case) or `unaccent(text)` (accents off, case
kept, for names); both keep one character per character, so a hit's offsets index the original.
Check digits come from `validate-docbr` where the document has them (CPF, CNPJ, CNS).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Literal, get_args

from validate_docbr import CNPJ, CNS, CPF

Kind = Literal[
    "cpf",
    "cnpj",
    "cns",
    "rg",
    "crm",
    "phone",
    "email",
    "cep",
    "address",
    "date",
    "record_number",
    "name",
]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True)
class Hit:
    """One identifier found in a text: its kind and character span (never kept past a check)."""

    kind: Kind
    start: int
    end: int


@cache
def fold_char(char: str) -> str:
    """One character without accents, lower-cased; always exactly one character."""
    base = unicodedata.normalize("NFKD", char)[:1] or char
    lowered = base.lower()
    return lowered if len(lowered) == 1 else base


def fold(text: str) -> str:
    """Accent- and case-insensitive form of `text`, the same length as `text`."""
    return "".join(fold_char(c) for c in text)


def unaccent(text: str) -> str:
    """`text` without accents, case kept, the same length (names are found by their capitals)."""
    return "".join((unicodedata.normalize("NFKD", c)[:1] or c) for c in text)


def squash(text: str) -> str:
    """`fold` plus collapsed whitespace: the form labels and markers are compared in."""
    return " ".join(fold(text).split())


# --- documents with check digits --------------------------------------------------------------

_CPF, _CNPJ, _CNS = CPF(), CNPJ(), CNS()
_SEP = r"[ .]?"  # one optional separator inside a number: a space or a dot, never a run
# A CPF in its printed form counts whatever its check digits (a typo is still a CPF); written
# as bare or space-separated digits, only with valid check digits (exam numbers are left alone).
_CPF_PRINTED = re.compile(r"(?<![\d.])\d{3}\.\d{3}\.\d{3} ?[-.] ?\d{2}(?![\d])")
_CPF_LOOSE = re.compile(r"(?<![\d.])\d{3}" + _SEP + r"\d{3}" + _SEP + r"\d{3} ?[-. ]? ?\d{2}(?!\d)")
_CNPJ_PRINTED = re.compile(r"(?<!\d)\d{2}\.?\d{3}\.?\d{3} ?/ ?\d{4} ?-? ?\d{2}(?!\d)")
_CNPJ_BARE = re.compile(r"(?<![\d.])\d{14}(?!\d)")
_CNS_ANY = re.compile(r"(?<![\d.])[1-9]\d{2} ?\d{4} ?\d{4} ?\d{4}(?!\d)")
_CNS_LABELLED = re.compile(
    r"(?<![a-z])(?:cns|cartao sus|cartao nacional de saude)\s{0,2}[:.nº°o]{0,3}\s{0,3}"
    r"\d[\d .]{13,20}\d"
)


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _cpf(folded: str) -> Iterator[tuple[int, int]]:
    for match in _CPF_PRINTED.finditer(folded):
        yield match.span()
    for match in _CPF_LOOSE.finditer(folded):
        if _CPF.validate(_digits(match.group())):
            yield match.span()


def _cnpj(folded: str) -> Iterator[tuple[int, int]]:
    for match in _CNPJ_PRINTED.finditer(folded):
        if "/" in match.group() or _CNPJ.validate(_digits(match.group())):
            yield match.span()
    for match in _CNPJ_BARE.finditer(folded):
        if _CNPJ.validate(match.group()):
            yield match.span()


def _cns(folded: str) -> Iterator[tuple[int, int]]:
    for match in _CNS_ANY.finditer(folded):
        if _CNS.validate(_digits(match.group())):
            yield match.span()
    yield from (m.span() for m in _CNS_LABELLED.finditer(folded))


# --- documents without check digits, recognised by form or label ------------------------------

_RG = re.compile(
    r"(?<![\d.])\d{1,2}\.\d{3}\.\d{3} ?-? ?[\dx](?![\d])"
    r"|(?<![a-z])rg\s{0,2}[:.nº°o]{0,3}\s{0,3}[\dx][\dx .\-]{4,14}[\dx]"
)
_UFS = "ac|al|ap|am|ba|ce|df|es|go|ma|mt|ms|mg|pa|pb|pr|pe|pi|rj|rn|rs|ro|rr|sc|sp|se|to"
_CRM = re.compile(
    r"(?<![a-z])(?:crm|coren|cro|crf|crefito)\s{0,2}[-/:.]?\s{0,2}(?:(?:" + _UFS + r")\s{0,2}"
    r"[-/:]?\s{0,2})?(?:n[º°o.]\s{0,2})?\d{3,7}(?:\s{0,2}[-/]\s{0,2}(?:" + _UFS + r")(?![a-z]))?"
    r"|(?<![\d/])\d{4,7} ?[-/] ?(?:" + _UFS + r")(?![a-z])"
)
_PHONE = re.compile(
    # (11) 98765-4321, (11)3456 7890, +55 (11) ...
    r"(?:\+ ?55 ?)?\( ?\d{2} ?\) ?(?:9 ?)?\d{4}[ .\-]?\d{4}(?!\d)"
    # 11 98765-4321, 11-3456-7890, +55 11 98765 4321
    r"|(?<![\d/.])(?:\+ ?55 ?)?\d{2}[ .\-](?:9 ?)?\d{4}[ .\-]\d{4}(?!\d)"
    # 98765-4321, 3456-7890
    r"|(?<![\d/.\-])9?\d{4}-\d{4}(?![\d\-])"
    # after a label, any form of 8-13 digits
    r"|(?<![a-z])(?:tel|telefone|fone|celular|cel|whatsapp|contato)\s{0,2}[:.]?\s{0,3}"
    r"[+(]?\d[\d ()\-.]{6,16}\d"
)
_EMAIL = re.compile(r"[a-z0-9._%+\-]{1,64} ?@ ?[a-z0-9\-]{1,63}(?:\.[a-z0-9\-]{1,63}){1,4}")
_CEP = re.compile(
    r"(?<![\d.])\d{5}-\d{3}(?!\d)|(?<![\d.])\d{2}\.\d{3}-\d{3}(?!\d)"
    r"|(?<![a-z])cep\s{0,2}[:.]?\s{0,3}\d[\d.\- ]{6,9}\d"
)
_ADDRESS = re.compile(
    r"(?<![a-z])(?:rua|r\.|avenida|av\.|alameda|al\.|travessa|tv\.|estrada|rodovia|praca"
    r"|qd\.|viela|beco|endereco|logradouro|residente)\s{1,3}[a-z][a-z .']{0,59}[a-z.]"
    r"(?:,\s{0,2}(?:n[º°o.]\s{0,2})?\d{1,5}|\s{1,2}n[º°o.]\s{0,2}\d{1,5}|\s{1,2}\d{1,5}(?![\d/]))?"
)
_MONTHS = "janeiro|fevereiro|marco|abril|maio|junho|julho|agosto|setembro|outubro|novembro|dezembro"
_MONTHS_SHORT = "jan|fev|mar|abr|mai|jun|jul|ago|set|out|nov|dez"
_DATE = re.compile(
    r"(?<![\d/.\-])\d{1,2} ?[/.\-] ?\d{1,2} ?[/.\-] ?(?:\d{4}|\d{2})(?![\d/.\-]?\d)"
    r"|(?<![\d/.\-])\d{4}-\d{1,2}-\d{1,2}(?!\d)"
    r"|(?<!\d)\d{1,2}(?:º|o)?\s{1,2}de\s{1,2}(?:" + _MONTHS + r")(?:\s{1,2}de\s{1,2}\d{4})?"
    r"|(?<!\d)\d{1,2}[ /\-](?:" + _MONTHS_SHORT + r")[a-z]{0,7}[ /\-]\d{2,4}(?!\d)"
)
_RECORD = re.compile(
    r"(?<![a-z])(?:prontuario|pront\.|registro|reg\.|matricula|atendimento|carteirinha|cartao"
    r"|n[º°o.] ?do paciente|id do paciente|codigo do paciente|ficha|passagem|guia)"
    r"\s{0,2}[:.nº°o]{0,3}\s{0,3}[a-z]{0,3}[\d][\d./\- ]{2,20}\d"
)

# --- person names -----------------------------------------------------------------------------

# Words that open a person's name: titles, roles and the words Brazilian reports put before one.
_NAME_TRIGGERS = (
    # Titles with their feminine and "(a)" forms: dr, dra., dr(a)., sr(a)., sra., prof(a)...
    r"paciente|pcte|pct\.|(?:dr|sr|prof|enf)a?\.?(?:\(a\))?\.?|srta\.?"
    r"|doutora?|nome|responsavel|solicitante|medico|medica"
    r"|laudado por|assinado por|emitido por|realizado por|conferido por|acompanhante|mae|pai"
    r"|esposa|esposo|filha|filho|conjuge"
)
_TRIGGER = re.compile(r"(?<![a-z])(?:" + _NAME_TRIGGERS + r")(?![a-z])\s{0,2}:?\s{1,3}")
_WORD = re.compile(r"[A-Za-z][A-Za-z']{0,30}")
_CONNECTORS = frozenset({"da", "de", "do", "das", "dos", "e"})
_TITLES = frozenset({"dr", "dra", "sr", "sra", "srta", "prof", "profa", "enf", "enfa", "a"})
_MAX_NAME_WORDS = 8


@cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, surnames), folded, from Faker's pt_BR and pt_PT person providers.

    Faker is maintained and ships these lists inside its wheel (nothing is fetched at run time).
    """
    from faker.providers.person.pt_BR import Provider as Brazil
    from faker.providers.person.pt_PT import Provider as Portugal

    def words(names: object) -> set[str]:
        return {w for n in names for w in fold(str(n)).split() if len(w) > 2}  # type: ignore[attr-defined]

    first = words(Brazil.first_names) | words(Portugal.first_names)
    last = words(Brazil.last_names) | words(Portugal.last_names)
    return frozenset(first - _CONNECTORS), frozenset(last - first - _CONNECTORS)


def _capitalised(word: str, listed: frozenset[str]) -> bool:
    """A word that can be part of a name: Title-case, or capitals (long, or a known name)."""
    if word[0].isupper() and word[1:].islower() and len(word) > 1:
        return True
    return word.isupper() and (len(word) > 3 or word.lower() in listed)


def _runs(plain: str, listed: frozenset[str]) -> Iterator[list[re.Match[str]]]:
    """Maximal runs of name words (connectors inside), separated by one or two spaces."""
    run: list[re.Match[str]] = []
    for word in _WORD.finditer(plain):
        joined = not run or (plain[run[-1].end() : word.start()] in (" ", "  "))
        if not joined:
            yield from _trimmed(run)
            run = []
        if _capitalised(word.group(), listed) or (run and word.group().lower() in _CONNECTORS):
            run.append(word)
        else:
            yield from _trimmed(run)
            run = []
    yield from _trimmed(run)


def _trimmed(run: list[re.Match[str]]) -> Iterator[list[re.Match[str]]]:
    while run and run[-1].group().lower() in _CONNECTORS:
        run = run[:-1]
    if run:
        yield run


def _names(text: str, ocr: bool) -> Iterator[tuple[int, int]]:
    """Person names: a run of name words right after a title or role ("paciente", "Dr.",
    "Sr(a)."), or a run of two or more that starts with a known first name or holds two known
    names, or of three or more holding one. In OCR text a run must hold a known name: OCR of a
    tracing reads capitals into noise."""
    plain = unaccent(text)
    folded = plain.lower()
    first, last = name_lists()
    listed = first | last
    runs = list(_runs(plain, listed))
    # Where each word of a run starts: a name may follow a capitalised "Paciente" in one run.
    positions = {word.start(): (run, i) for run in runs for i, word in enumerate(run)}
    chain_end = -1
    for trigger in _TRIGGER.finditer(folded):
        # Chained triggers ("laudado por Dr(a). ...", "paciente Sra. ...") name one person; each
        # chain is walked once (a trigger inside it shares its end), so time stays linear.
        if trigger.start() >= chain_end:
            chain_end = trigger.end()
            while (chained := _TRIGGER.match(folded, chain_end)) is not None:
                chain_end = chained.end()
        start = chain_end
        if start not in positions:
            continue
        run, index = positions[start]
        named_run = run[index : index + _MAX_NAME_WORDS]
        words = [w.group().lower() for w in named_run]
        named = [w for w in words if w not in _CONNECTORS and w not in _TITLES]
        if named and (not ocr or any(w in listed for w in named)):
            yield trigger.start(), named_run[-1].end()
    for run in runs:
        words = [w.group().lower() for w in run if w.group().lower() not in _CONNECTORS]
        known = sum(w in listed for w in words)
        # Two words starting with a first name, two known names, or three with one known.
        if len(words) >= 2 and (words[0] in first or known >= 2 or (len(words) >= 3 and known)):
            yield run[0].start(), run[-1].end()


def _pattern(pattern: re.Pattern[str]) -> Callable[[str], Iterator[tuple[int, int]]]:
    return lambda folded: (m.span() for m in pattern.finditer(folded))


# Kind -> finder over folded text ("name" works on case-kept text, see `_names`).
_FINDERS: dict[Kind, Callable[[str], Iterator[tuple[int, int]]]] = {
    "cpf": _cpf,
    "cnpj": _cnpj,
    "cns": _cns,
    "rg": _pattern(_RG),
    "crm": _pattern(_CRM),
    "phone": _pattern(_PHONE),
    "email": _pattern(_EMAIL),
    "cep": _pattern(_CEP),
    "address": _pattern(_ADDRESS),
    "date": _pattern(_DATE),
    "record_number": _pattern(_RECORD),
}


class Recognisers:
    """Every recogniser, or all but `disabled` (a test disables one in the redactor only)."""

    def __init__(self, disabled: frozenset[Kind] = frozenset()) -> None:
        unknown = set(disabled) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown recognisers: {sorted(unknown)}")
        self.kinds: tuple[Kind, ...] = tuple(k for k in KINDS if k not in disabled)
        if "name" in self.kinds:
            name_lists()  # importing Faker's lists takes ~0.5 s: once, here, not in an exam

    def find(self, text: str, *, ocr: bool = False) -> list[Hit]:
        """Every identifier in `text`, as (kind, start, end) over `text` itself; `ocr`: the text
        was read by OCR (names are held to a stricter rule, see `_names`)."""
        if not text.strip():
            return []
        folded = fold(text)
        hits: list[Hit] = []
        for kind in self.kinds:
            spans = _names(text, ocr) if kind == "name" else _FINDERS[kind](folded)
            hits += [Hit(kind, start, end) for start, end in spans if end > start]
        return hits

    def kinds_in(self, text: str, *, ocr: bool = False) -> list[str]:
        """The kinds of identifier in `text`, sorted, never the values."""
        return sorted({hit.kind for hit in self.find(text, ocr=ocr)})
