"""Deterministic synthetic Brazilian resting-ECG exam PDFs with planted identifiers.

Every exam is a pure function of its seed: page 1 is an A4 portrait report ("ECG de Repouso")
with "Label: value" fields and a conclusion, page 2 an A4 landscape 12-lead tracing with the
physician's signature and CRM stamp inside two fixed rectangles. Optional hiding places plant
extra copies of the patient's name and/or CPF in places other than the visible page-1 text.
All people, documents and clinics are fictional.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import tempfile
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pymupdf
from pydantic import BaseModel, ConfigDict, Field

HidingPlace = Literal[
    "metadata",
    "xmp",
    "annotation",
    "file_attachment",
    "form_field",
    "embedded_file",
    "javascript",
    "outline",
    "page_label",
    "hidden_layer",
    "outside_crop_box",
    "invisible_text",
    "white_text",
    "thumbnail",
    "old_revision",
]
HIDING_PLACES: tuple[HidingPlace, ...] = get_args(HidingPlace)

TITLE = "ECG de Repouso"
# True A4 in points; pymupdf.paper_rect("a4") rounds it to 595 x 842.
PAGE_ONE_SIZE: tuple[float, float] = (595.28, 841.89)
PAGE_TWO_SIZE: tuple[float, float] = (841.89, 595.28)
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in points, top-left origin
PAGE_TWO_TRACING_RECT: Box = (20.0, 30.0, 822.0, 480.0)
PAGE_TWO_SIGNATURE_RECT: Box = (430.0, 500.0, 620.0, 585.0)
PAGE_TWO_STAMP_RECT: Box = (630.0, 495.0, 830.0, 585.0)
PAGE_TWO_FOOTER = "25 mm/s  10 mm/mV"  # the scale line, drawn inside the tracing

Layout = Literal["standard", "table", "stacked"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
# Identifier kinds the anonymiser of issue 18 must find beyond the labelled fields.
Vector = Literal[
    "report_name",
    "cns",
    "phone",
    "email",
    "address",
    "birth_date_form",
    "cpf_spaced",
    "record_number",
    "outlined_text",
    "image_text",
    "scrambled_font",
    "page_two_header",
]
VECTORS: tuple[Vector, ...] = get_args(Vector)

_MM = 72.0 / 25.4
_PT_PER_S = 25.0 * _MM  # 25 mm/s paper speed
_PT_PER_MV = 10.0 * _MM  # 10 mm/mV gain
_BOLD = {"helv": "hebo", "tiro": "tibo", "cour": "cobo"}

# --- value pools (fictional people, clinics and plans) -------------------------------------------

_MALE_FIRST = (
    "João", "José", "Antônio", "Francisco", "Carlos", "Paulo", "Pedro", "Lucas", "Luís",
    "Marcos", "Sebastião", "Raimundo", "Vinícius", "Flávio", "Sérgio", "Márcio", "Thiago",
    "Rafael", "Gustavo", "Otávio", "Caio", "Benedito", "Joaquim", "Fábio", "André", "Rogério",
    "Cícero", "Anísio", "Wellington", "Edson",
)  # fmt: skip
_FEMALE_FIRST = (
    "Maria", "Ana", "Francisca", "Antônia", "Adriana", "Juliana", "Márcia", "Fernanda",
    "Patrícia", "Aline", "Cláudia", "Lúcia", "Fátima", "Inês", "Sônia", "Tânia", "Vitória",
    "Letícia", "Débora", "Luíza", "Gabriela", "Beatriz", "Helena", "Conceição", "Aparecida",
    "Rosângela", "Cecília", "Mônica", "Irene", "Jéssica",
)  # fmt: skip
# Surname -> connector it usually takes ("" = none).
_SURNAMES: dict[str, str] = {
    "Silva": "da", "Santos": "dos", "Oliveira": "de", "Souza": "de", "Rodrigues": "",
    "Ferreira": "", "Alves": "", "Pereira": "", "Lima": "de", "Gomes": "", "Ribeiro": "",
    "Carvalho": "de", "Araújo": "de", "Gonçalves": "", "Conceição": "da", "Nascimento": "do",
    "Magalhães": "de", "Simões": "", "Brandão": "", "Falcão": "", "Guimarães": "",
    "Assunção": "da", "Loureiro": "", "Barros": "de", "Cavalcanti": "", "Albuquerque": "de",
    "Moraes": "de", "Freitas": "de", "Peixoto": "", "Teixeira": "", "Monteiro": "",
    "Mendonça": "", "Nogueira": "", "Camargo": "", "Prado": "do", "Anjos": "dos",
    "Rocha": "da", "Cruz": "da", "Fonseca": "da", "Queiroz": "de", "Sampaio": "",
    "Batista": "", "Figueiredo": "", "Castro": "de", "Reis": "dos", "Paixão": "da",
}  # fmt: skip
_INSURERS = (
    "Unimed", "Bradesco Saúde", "SulAmérica", "Amil", "Particular", "Hapvida",
    "NotreDame Intermédica", "Porto Seguro Saúde", "Cassi", "Geap", "Prevent Senior",
    "Golden Cross", "Unimed Seguros", "Mediservice",
)  # fmt: skip
_UFS = (
    "SP", "RJ", "MG", "RS", "PR", "SC", "BA", "PE", "CE", "GO", "DF", "ES", "PA", "AM", "MA",
    "PB", "RN", "AL", "SE", "PI", "MT", "MS",
)  # fmt: skip
# Fictional clinics; their words never occur in the name or insurer pools.
_CLINICS = (
    "Clínica CardioVita - Diagnóstico Cardiológico",
    "Centro de Diagnóstico Vale Verde",
    "Instituto do Coração Horizonte",
    "Policlínica Jardim das Acácias - Cardiologia",
    "Clínica Pulsar de Cardiologia e Ergometria",
    "Hospital Dia Bela Vista - Setor de Métodos Gráficos",
)
_EXTRA_FINDINGS = (
    "Eixo elétrico normal.",
    "Eixo elétrico desviado para a esquerda.",
    "Sobrecarga ventricular esquerda.",
    "Sobrecarga atrial esquerda.",
    "Bloqueio de ramo direito.",
    "Bloqueio incompleto do ramo direito.",
    "Bloqueio divisional ântero-superior esquerdo.",
    "Alterações inespecíficas da repolarização ventricular.",
    "Intervalo PR dentro dos limites da normalidade.",
    "Extrassístoles ventriculares isoladas.",
    "Área eletricamente inativa em parede inferior.",
    "QTc dentro dos limites da normalidade.",
    "Baixa voltagem do QRS no plano frontal.",
    "Eletrocardiograma dentro dos limites da normalidade.",
)

_STREETS = (
    "Rua das Acácias", "Rua Augusta", "Rua XV de Novembro", "Avenida Barão de Itapura",
    "Rua dos Andradas", "Av. Sete de Setembro", "Rua Marechal Deodoro", "Alameda Santos",
    "Travessa José Bonifácio", "Rua das Palmeiras", "Avenida Treze de Maio",
)  # fmt: skip
_NEIGHBOURHOODS = ("Centro", "Jardim América", "Vila Mariana", "Boa Vista", "Santa Cecília")
_EMAIL_DOMAINS = ("gmail.com", "hotmail.com", "uol.com.br", "yahoo.com.br", "bol.com.br")
_DRUGS = ("betabloqueador", "amiodarona", "digoxina", "enalapril", "losartana", "anlodipino")
_MONTHS_PT = (
    "janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro",
    "outubro", "novembro", "dezembro",
)  # fmt: skip
_VECTOR_LABELS: dict[str, tuple[str, ...]] = {
    "cns": ("CNS", "Cartão SUS"),
    "phone": ("Telefone", "Celular", "Fone"),
    "email": ("E-mail", "Email"),
    "address": ("Endereço",),
    "record_number": ("Prontuário", "Registro"),
}

# Label variants (case and accents) of every field; the anonymiser must match all of them.
_LABELS: dict[str, tuple[str, ...]] = {
    "name": ("Nome", "NOME"),
    "cpf": ("CPF",),
    "rg": ("RG",),
    "birth_date": ("Data de Nascimento", "Data de nascimento", "Nascimento", "DATA DE NASCIMENTO"),
    "sex": ("Sexo", "SEXO"),
    "insurer": ("Convênio", "Convenio", "CONVÊNIO"),
    "exam_number": ("Exame", "EXAME"),
    "exam_date": ("Data", "DATA"),
    "exam_time": ("Hora", "HORA"),
    "requester": ("Solicitante", "SOLICITANTE"),
    "responsible": ("Responsável", "Responsavel", "RESPONSÁVEL"),
    "crm": ("CRM",),
    "crm_state": ("CRM-SP",),  # replaced by the exam's own "CRM-<UF>"
}

# Per-lead Gaussian amplitudes (mV) of P, Q, R, S, T waves in a normal-looking tracing.
_LEAD_WAVES: dict[str, tuple[float, float, float, float, float]] = {
    "I": (0.10, -0.05, 0.70, -0.10, 0.20),
    "II": (0.15, -0.08, 1.10, -0.20, 0.30),
    "III": (0.06, -0.05, 0.50, -0.15, 0.12),
    "aVR": (-0.12, 0.05, -0.80, 0.12, -0.22),
    "aVL": (0.05, -0.03, 0.40, -0.15, 0.08),
    "aVF": (0.10, -0.06, 0.80, -0.18, 0.22),
    "V1": (0.06, 0.00, 0.25, -1.10, -0.05),
    "V2": (0.08, 0.00, 0.45, -1.20, 0.35),
    "V3": (0.08, -0.03, 0.85, -0.75, 0.40),
    "V4": (0.09, -0.05, 1.35, -0.40, 0.38),
    "V5": (0.09, -0.07, 1.25, -0.20, 0.30),
    "V6": (0.08, -0.06, 1.00, -0.10, 0.22),
}
_LEAD_GRID = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))


# --- public data ---------------------------------------------------------------------------------


class PlantedIdentifiers(BaseModel):
    """Identifying values of one exam, exactly as written on page 1."""

    model_config = ConfigDict(frozen=True)

    name: str
    cpf: str
    rg: str
    birth_date: str
    insurer: str
    responsible: str  # physician's full name, without the "Dr." title
    requester: str  # requesting physician's full name, without title
    crm: str  # the CRM field's value: "12345/SP" or "CRM-SP 12345"
    exam_number: str  # an accession number: identifying, not kept
    extra: list[str] = Field(default_factory=list)  # other planted strings (old name, CRM forms)

    def values(self) -> list[str]:
        """Every identifying string planted anywhere in the exam, without duplicates."""
        fields = [self.name, self.cpf, self.rg, self.birth_date, self.insurer]
        fields += [self.responsible, self.requester, self.crm, self.exam_number, *self.extra]
        return list(dict.fromkeys(fields))


class KeptFields(BaseModel):
    """Non-identifying content the anonymiser must keep."""

    model_config = ConfigDict(frozen=True)

    sex: str
    exam_date: str
    exam_time: str
    report_lines: list[str]  # clinical conclusion lines (never a line naming someone)
    measurements: list[str] = Field(default_factory=list)  # FC, PR, QRS... (table, stacked)


class SyntheticExam(BaseModel):
    """One generated exam: its PDF bytes and what was planted where."""

    model_config = ConfigDict(frozen=True)

    seed: int
    pdf: bytes = Field(repr=False)
    layout: Layout = "standard"
    identifiers: PlantedIdentifiers
    kept: KeptFields
    hiding_places: list[HidingPlace]
    vectors: list[Vector] = Field(default_factory=list)
    # Per vector, the identifying strings it planted (also in `extra_identifiers`).
    vector_values: dict[str, list[str]] = Field(default_factory=dict)
    extra_identifiers: list[str]
    report_signature_line: str | None = None  # the report line naming the physician, if any


# --- identities ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Person:
    name: str
    female: bool


@dataclass(frozen=True)
class _Identity:
    patient: _Person
    cpf: str
    rg: str
    birth_date: str
    insurer: str
    responsible: _Person
    requester: _Person
    crm_number: str
    uf: str
    crm_field: str
    sex: str
    exam_number: str
    exam_date: date
    exam_time: str
    heart_rate: int
    report_lines: tuple[str, ...]
    signature_line: str | None
    report_crm: str | None


def _person(rng: random.Random) -> _Person:
    female = rng.random() < 0.5
    pool = _FEMALE_FIRST if female else _MALE_FIRST
    first = rng.choice(pool)
    parts = [first]
    if first == "Maria" and rng.random() < 0.4:
        parts += ["da", rng.choice(("Conceição", "Glória", "Penha", "Luz"))]
    elif rng.random() < 0.25:
        parts.append(rng.choice([n for n in pool if n != first]))
    surnames = [s for s in _SURNAMES if s not in parts]
    for surname in rng.sample(surnames, rng.randint(1, 3)):
        connector = _SURNAMES[surname]
        if connector and rng.random() < 0.45:
            parts.append(connector)
        parts.append(surname)
    name = " ".join(parts)
    # Some systems print names in capitals; the anonymiser sees both.
    return _Person(name.upper() if rng.random() < 0.2 else name, female)


def _distinct_people(rng: random.Random, count: int, taken: Sequence[str] = ()) -> list[_Person]:
    """People whose names are pairwise distinct and never contain one another."""
    people: list[_Person] = []
    names = [n.casefold() for n in taken]
    while len(people) < count:
        person = _person(rng)
        key = person.name.casefold()
        if any(key in other or other in key for other in names):
            continue
        names.append(key)
        people.append(person)
    return people


def _cpf_check_digits(digits: list[int]) -> list[int]:
    """Append both mod-11 CPF check digits to nine base digits."""
    out = list(digits)
    for weight_start in (10, 11):
        total = sum(d * w for d, w in zip(out, range(weight_start, 1, -1), strict=True))
        out.append((total * 10) % 11 % 10)
    return out


def _cpf(rng: random.Random, formatted: bool) -> str:
    while True:
        base = [rng.randint(0, 9) for _ in range(9)]
        if len(set(base)) > 1:  # 111.111.111-11 style numbers are invalid
            break
    s = "".join(map(str, _cpf_check_digits(base)))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}" if formatted else s


def cpf_is_valid(cpf: str) -> bool:
    """Whether `cpf` (formatted or not) has valid check digits."""
    digits = [int(c) for c in cpf if c.isdigit()]
    if len(digits) != 11 or len(set(digits)) == 1:
        return False
    return _cpf_check_digits(digits[:9]) == digits


def _rg(rng: random.Random) -> str:
    base = [rng.randint(0, 9) for _ in range(8)]
    # São Paulo rule: weights 2..9, remainder 10 is written as X.
    rest = sum(d * w for d, w in zip(base, range(2, 10), strict=True)) % 11
    check = "X" if rest == 10 else str(rest)
    s = "".join(map(str, base))
    return f"{s[:2]}.{s[2:5]}.{s[5:8]}-{check}"


def _random_date(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randint(0, (last - first).days))


def _title(person: _Person, rng: random.Random) -> str:
    if rng.random() < 0.25:
        return "Dr(a)."
    return "Dra." if person.female else "Dr."


def _report(rng: random.Random, heart_rate: int) -> list[str]:
    if heart_rate < 60:
        rhythm = "Bradicardia sinusal."
    elif heart_rate > 100:
        rhythm = "Taquicardia sinusal."
    else:
        rhythm = rng.choice(("Ritmo sinusal.", "Ritmo sinusal regular.", "Ritmo sinusal."))
    lines = [rhythm, f"Frequência cardíaca de {heart_rate} bpm."]
    lines += rng.sample(_EXTRA_FINDINGS, rng.randint(0, 3))
    return lines


def _exam_number(rng: random.Random, secrets: Sequence[str]) -> str:
    """6-8 digits sharing no digit run with any identifier, in either direction."""
    while True:
        digits = rng.randint(6, 8)
        number = str(rng.randint(10 ** (digits - 1), 10**digits - 1))
        if not any(number in secret or secret in number for secret in secrets):
            return number


def _identity(rng: random.Random) -> _Identity:
    patient, responsible, requester = _distinct_people(rng, 3)
    exam_date = _random_date(rng, date(2019, 1, 2), date(2025, 12, 30))
    birth = _random_date(rng, date(1930, 1, 1), date(2005, 12, 31))
    cpf = _cpf(rng, formatted=rng.random() >= 0.2)
    rg = _rg(rng)
    while True:
        # A 4-digit CRM such as 2021 would otherwise be found inside the (kept) exam date.
        crm_number = str(rng.randint(1000, 999999))
        if crm_number not in exam_date.strftime("%d%m%Y"):
            break
    uf = rng.choice(_UFS)
    crm_field = f"{crm_number}/{uf}" if rng.random() < 0.6 else f"CRM-{uf} {crm_number}"
    secrets = (crm_number, re.sub(r"\D", "", cpf), re.sub(r"\D", "", rg))
    heart_rate = rng.randint(48, 112)
    signature_line = report_crm = None
    if rng.random() < 0.2:
        title = _title(responsible, rng)
        if rng.random() < 0.5:
            report_crm = f"CRM {crm_number}/{uf}"
            signature_line = f"Laudado por {title} {responsible.name} - {report_crm}"
        else:
            report_crm = f"CRM-{uf} {crm_number}"
            signature_line = f"Laudo emitido por {title} {responsible.name} ({report_crm})"
    sex = ("Feminino", "F") if patient.female else ("Masculino", "M")
    return _Identity(
        patient=patient,
        cpf=cpf,
        rg=rg,
        birth_date=birth.strftime("%d/%m/%Y"),
        insurer=rng.choice(_INSURERS),
        responsible=responsible,
        requester=requester,
        crm_number=crm_number,
        uf=uf,
        crm_field=crm_field,
        sex=sex[0] if rng.random() < 0.3 else sex[1],
        exam_number=_exam_number(rng, secrets),
        exam_date=exam_date,
        exam_time=f"{rng.randint(7, 18):02d}:{rng.randint(0, 59):02d}",
        heart_rate=heart_rate,
        report_lines=tuple(_report(rng, heart_rate)),
        signature_line=signature_line,
        report_crm=report_crm,
    )


# --- page 1 --------------------------------------------------------------------------------------


@dataclass
class _Style:
    font: str
    size: float
    bold_labels: bool
    margin: float
    right_x: float
    line_height: float
    pair_probability: float
    headings: bool
    title_size: float
    centred_title: bool
    top: float


@dataclass
class _PageOne:
    """What the hiding places and vectors need to know about page 1."""

    bottom: float = 0.0  # baseline of the last report line
    spare_row: tuple[float, float] = (40.0, 0.0)  # an empty row among the patient data
    measurements: list[str] = field(default_factory=list)  # as printed


def _style(rng: random.Random) -> _Style:
    size = rng.choice((9.0, 9.5, 10.0, 10.5, 11.0))
    return _Style(
        font=rng.choice(("helv", "tiro", "cour")),
        size=size,
        bold_labels=rng.random() < 0.5,
        margin=rng.uniform(36, 56),
        right_x=rng.uniform(300, 340),
        line_height=size * rng.uniform(1.45, 1.8),
        pair_probability=rng.choice((0.0, 0.5, 0.9)),
        headings=rng.random() < 0.5,
        title_size=rng.uniform(15, 18),
        centred_title=rng.random() < 0.6,
        top=rng.uniform(48, 68),
    )


@functools.cache
def _char_width(char: str, font: str) -> float:
    return pymupdf.get_text_length(char, fontname=font, fontsize=1.0)


def _text_width(text: str, font: str, size: float) -> float:
    """Width as pymupdf.get_text_length gives it (unkerned base-14), with memoised glyphs."""
    return size * sum(_char_width(char, font) for char in text)


def _fit_size(text: str, font: str, width: float, size: float) -> float:
    """Largest font size <= `size` at which `text` fits in `width`."""
    return min(size, size * width / max(_text_width(text, font, size), 1e-6))


def _field(shape: pymupdf.Shape, x: float, y: float, label: str, value: str, st: _Style) -> None:
    """Write "Label: value" on one text line at (x, y), shrunk if it would pass the margin."""
    room = shape.width - st.margin - x
    if not st.bold_labels:
        text = f"{label}: {value}"
        size = _fit_size(text, st.font, room, st.size)
        shape.insert_text((x, y), text, fontname=st.font, fontsize=size)
        return
    bold = _BOLD[st.font]
    size = _fit_size(f"{label}: {value}", bold, room, st.size)
    shape.insert_text((x, y), f"{label}:", fontname=bold, fontsize=size)
    value_x = x + _text_width(f"{label}: ", bold, size)
    shape.insert_text((value_x, y), value, fontname=st.font, fontsize=size)


def _fields(
    ident: _Identity, rng: random.Random, labels: dict[str, str], visible_name: str
) -> list[list[tuple[str, str]]]:
    """(key, value) of the patient block and the exam block, in print order."""
    requester = ident.requester.name
    if rng.random() < 0.6:
        requester = f"{_title(ident.requester, rng)} {requester}"
    patient = [
        ("name", visible_name),
        ("cpf", ident.cpf),
        ("rg", ident.rg),
        ("birth_date", ident.birth_date),
        ("sex", ident.sex),
        ("insurer", ident.insurer),
    ]
    if rng.random() < 0.5:  # some systems print RG before CPF
        patient[1], patient[2] = patient[2], patient[1]
    exam = [
        ("exam_number", ident.exam_number),
        ("exam_date", ident.exam_date.strftime("%d/%m/%Y")),
        ("exam_time", ident.exam_time),
        ("requester", requester),
        ("responsible", f"{_title(ident.responsible, rng)} {ident.responsible.name}"),
    ]
    if ident.crm_field.startswith("CRM-"):
        # "CRM-SP 12345" has no colon: the label carries the state.
        labels["crm_state"], number = ident.crm_field.split(" ")
        exam.append(("crm_state", number))
    else:
        exam.append(("crm", ident.crm_field))
    return [patient, exam]


def _draw_block(
    shape: pymupdf.Shape,
    y: float,
    block: list[tuple[str, str]],
    labels: dict[str, str],
    st: _Style,
    rng: random.Random,
    names: Sequence[str],
) -> float:
    """Write a block of fields, one or two per line; returns the next baseline."""
    bold = _BOLD[st.font]
    i = 0
    while i < len(block):
        x = st.margin + rng.uniform(0, 3)
        key, value = block[i]
        if key == "crm_state":
            text = f"{labels[key]} {value}"
            shape.insert_text((x, y), text, fontname=st.font, fontsize=st.size)
        else:
            _field(shape, x, y, labels[key], value, st)
        # The name's room is sized for every name it may show (old and new revision).
        values = names if key == "name" else [value]
        left_width = max(_text_width(f"{labels[key]}: {v}", bold, st.size) for v in values)
        pair = i + 1 < len(block) and rng.random() < st.pair_probability
        if pair and x + left_width + 12 < st.right_x and block[i + 1][0] != "crm_state":
            right_key, right_value = block[i + 1]
            right_width = _text_width(f"{labels[right_key]}: {right_value}", bold, st.size)
            if st.right_x + right_width < shape.width - st.margin:
                _field(shape, st.right_x, y, labels[right_key], right_value, st)
                i += 1
        i += 1
        y += st.line_height + rng.uniform(-0.5, 0.5)
    return y


@dataclass
class _Draw:
    """What a page-1 drawer gets: the page, the exam, its style and random stream, the name to
    show and every name the layout must fit (old and new revision), the vectors."""

    page: pymupdf.Page
    ident: _Identity
    style: _Style
    rng: random.Random
    visible_name: str
    names: Sequence[str]
    extras: _Extras


def _draw_page_one(d: _Draw) -> _PageOne:
    """Draw the standard page 1 showing `visible_name`; the layout fits any of `names`."""
    page, ident, st, rng, extras = d.page, d.ident, d.style, d.rng, d.extras
    visible_name, names = d.visible_name, d.names
    width = page.rect.width
    shape = page.new_shape()
    bold = _BOLD[st.font]
    y = st.top
    title_x = st.margin
    if st.centred_title:
        title_x = (width - _text_width(TITLE, bold, st.title_size)) / 2
    shape.insert_text((title_x, y), TITLE, fontname=bold, fontsize=st.title_size)
    y += st.title_size + 4
    shape.insert_text((st.margin, y), rng.choice(_CLINICS), fontname=st.font, fontsize=st.size)
    y += 10
    shape.draw_line((st.margin, y), (width - st.margin, y))
    y += st.line_height + 8

    labels = {key: rng.choice(options) for key, options in _LABELS.items()}
    labels |= extras.labels
    blocks = _fields(ident, rng, labels, visible_name)
    printed = {"cpf": extras.cpf, "birth_date": extras.birth_date}
    blocks[0] = [(key, printed.get(key, value)) for key, value in blocks[0]] + extras.fields
    headings = rng.choice((("Dados do paciente", "Dados do exame"), ("Paciente", "Exame")))
    spare = (st.margin, y)
    for index, (block, heading) in enumerate(zip(blocks, headings, strict=True)):
        if st.headings:  # no colon: a heading is not a field
            shape.insert_text((st.margin, y), heading, fontname=bold, fontsize=st.size + 1)
            y += st.line_height + 2
        y = _draw_block(shape, y, block, labels, st, rng, names)
        if index == 0 and extras.spare_row:
            spare = (st.margin, y)
            y += st.line_height
        rule_y = y + st.line_height * 0.1
        shape.draw_line((st.margin, rule_y), (width - st.margin, rule_y))
        y += st.line_height

    shape.insert_text((st.margin, y), "Laudo:", fontname=bold, fontsize=st.size + 1)
    y += st.line_height * 1.3
    shape.insert_text((st.margin, y), "CONCLUSÃO:", fontname=bold, fontsize=st.size)
    y += st.line_height
    for line in _report_lines(ident, extras):
        size = _fit_size(line, st.font, width - 2 * st.margin - 10, st.size)
        shape.insert_text((st.margin + 10, y), line, fontname=st.font, fontsize=size)
        y += st.line_height
    if ident.signature_line:
        y += st.line_height * 0.5
        line = ident.signature_line
        size = _fit_size(line, st.font, width - 2 * st.margin, st.size)
        shape.insert_text((st.margin, y), line, fontname=st.font, fontsize=size)
        y += st.line_height
    footer = "Página 1 de 2"
    footer_x = width - st.margin - _text_width(footer, st.font, 8)
    shape.insert_text((footer_x, 815), footer, fontname=st.font, fontsize=8)
    shape.finish(color=(0.3, 0.3, 0.3), width=0.6)
    shape.commit()
    return _PageOne(bottom=y, spare_row=spare)


# --- issue-18 vectors and the other layouts -----------------------------------------------------


@dataclass
class _Extras:
    """The vectors' values of one exam and how the page-1 drawers show them."""

    vectors: frozenset[Vector]
    values: dict[str, list[str]]  # vector -> identifying strings planted
    fields: list[tuple[str, str]]  # (label key, value) rows added to the patient data
    labels: dict[str, str]  # label key -> label text
    report_line: str | None  # a report line naming the patient (not a kept line)
    birth_date: str  # the birth date as printed (its vector may change the form)
    cpf: str  # the CPF as printed
    spare_row: bool  # leave an empty patient-data row (the scrambled-font line goes there)


def _cns(rng: random.Random) -> str:
    """A CNS of the 7/8/9 series: weighted sum (weights 15..1) divisible by 11."""
    while True:
        digits = [rng.choice((7, 8, 9))] + [rng.randint(0, 9) for _ in range(13)]
        last = -sum(d * w for d, w in zip(digits, range(15, 1, -1), strict=True)) % 11
        if last < 10:
            number = "".join(map(str, [*digits, last]))
            return f"{number[:3]} {number[3:7]} {number[7:11]} {number[11:]}"


def _phone(rng: random.Random) -> str:
    ddd = rng.choice((11, 19, 21, 31, 41, 48, 51, 61, 71, 81, 85, 92))
    mobile = rng.random() < 0.6
    first = f"9{rng.randint(6000, 9999)}" if mobile else str(rng.randint(2000, 5999))
    last = f"{rng.randint(0, 9999):04d}"
    return rng.choice(
        (f"({ddd}) {first}-{last}", f"{ddd} {first}-{last}", f"({ddd}){first}{last}",
         f"+55 {ddd} {first} {last}", f"{first}-{last}")
    )  # fmt: skip


def _ascii_word(text: str) -> str:
    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", text).lower())


def _written_date(rng: random.Random, day: date) -> str:
    return rng.choice(
        (day.isoformat(), day.strftime("%d.%m.%Y"),
         f"{day.day} de {_MONTHS_PT[day.month - 1]} de {day.year}")
    )  # fmt: skip


def _extras(rng: random.Random, ident: _Identity, vectors: frozenset[Vector]) -> _Extras:
    """Values for every vector (drawn whatever is asked, so an exam is the same with or without
    any one of them), and what the asked ones add to page 1."""
    name_words = [w for w in ident.patient.name.split() if len(w) > 3]
    email = (
        f"{_ascii_word(name_words[0])}.{_ascii_word(name_words[-1])}{rng.randint(1, 99)}"
        f"@{rng.choice(_EMAIL_DOMAINS)}"
    )
    street = f"{rng.choice(_STREETS)}, {rng.randint(10, 2999)}"
    cep = f"{rng.randint(1000, 99999):05d}-{rng.randint(0, 999):03d}"
    birth = date(*map(int, reversed(ident.birth_date.split("/"))))
    candidates = {
        "cns": _cns(rng),
        "phone": _phone(rng),
        "email": email,
        "address": f"{street} - {rng.choice(_NEIGHBOURHOODS)} - CEP {cep}",
        "record_number": str(rng.randint(100000, 99999999)),
    }
    written_birth = _written_date(rng, birth)
    spaced_cpf = re.sub(r"\D", "", ident.cpf)
    spaced_cpf = f"{spaced_cpf[:3]} {spaced_cpf[3:6]} {spaced_cpf[6:9]} {spaced_cpf[9:]}"
    drug = rng.choice(_DRUGS)
    name = ident.patient.name
    report_line, report_values = rng.choice(
        (
            (f"Paciente {name} em uso de {drug}.", [name]),
            (f"Paciente {name}, nascido(a) em {written_birth}, em uso de {drug}.",
             [name, written_birth]),
            (f"Sr(a). {name} refere palpitações; contato {candidates['phone']}.",
             [name, candidates["phone"]]),
        )
    )  # fmt: skip
    labels = {key: rng.choice(options) for key, options in _VECTOR_LABELS.items()}
    values: dict[str, list[str]] = {}
    fields: list[tuple[str, str]] = []
    for key, value in candidates.items():
        if key in vectors:
            fields.append((key, value))
            values[key] = [street, cep] if key == "address" else [value]
    birth_printed, cpf_printed = ident.birth_date, ident.cpf
    if "birth_date_form" in vectors:
        birth_printed = written_birth
        values["birth_date_form"] = [written_birth]
    if "cpf_spaced" in vectors:
        cpf_printed = spaced_cpf
        values["cpf_spaced"] = [spaced_cpf]
    if "report_name" in vectors:
        values["report_name"] = report_values
    for vector in ("outlined_text", "image_text", "scrambled_font", "page_two_header"):
        if vector in vectors:
            values[vector] = [name] if vector != "image_text" else [ident.cpf, ident.birth_date]
    if "page_two_header" in vectors:
        values["page_two_header"] = [name, ident.birth_date, ident.cpf]
    return _Extras(
        vectors=vectors,
        values=values,
        fields=fields,
        labels=labels,
        report_line=report_line if "report_name" in vectors else None,
        birth_date=birth_printed,
        cpf=cpf_printed,
        spare_row="scrambled_font" in vectors,
    )


def _report_lines(ident: _Identity, extras: _Extras) -> list[str]:
    """The clinical lines, with the line naming the patient second if that vector is on."""
    lines = list(ident.report_lines)
    if extras.report_line:
        lines.insert(1, extras.report_line)
    return lines


def _measurements(ident: _Identity, rng: random.Random) -> list[str]:
    pr, qrs = rng.randint(120, 200), rng.randint(80, 118)
    qt = rng.randint(340, 420)
    qtc = round(qt / ((60 / ident.heart_rate) ** 0.5))
    axis = rng.randint(-30, 90)
    return [
        f"FC: {ident.heart_rate} bpm   PR: {pr} ms   QRS: {qrs} ms",
        f"QT/QTc: {qt}/{qtc} ms   Eixo: {axis:+d}°",
    ]


def _patient_rows(
    ident: _Identity, extras: _Extras, visible_name: str, labels: dict[str, str]
) -> list[tuple[str, str]]:
    """(label, value) of the patient data in the table and stacked layouts."""
    rows = [
        ("Paciente", visible_name),
        ("CPF", extras.cpf),
        ("RG", ident.rg),
        ("Data de nascimento", extras.birth_date),
        ("Sexo", ident.sex),
        ("Convênio", ident.insurer),
    ]
    return rows + [(labels[key], value) for key, value in extras.fields]


def _exam_rows(ident: _Identity, rng: random.Random) -> list[tuple[str, str]]:
    responsible = f"{_title(ident.responsible, rng)} {ident.responsible.name}"
    return [
        ("Data do exame", ident.exam_date.strftime("%d/%m/%Y")),
        ("Hora do exame", ident.exam_time),
        ("Nº do exame", ident.exam_number),
        ("Solicitante", f"{_title(ident.requester, rng)} {ident.requester.name}"),
        ("Responsável", f"{responsible} - CRM {ident.crm_number}/{ident.uf}"),
    ]


def _draw_page_one_table(d: _Draw) -> _PageOne:
    """A two-column table: labels at x=44, values in a column at x=190 (one row per field:
    a longer old name fits the same row)."""
    page, ident, st, rng, extras = d.page, d.ident, d.style, d.rng, d.extras
    width, font = page.rect.width, st.font
    bold, size, pitch = _BOLD[font], 9.0, 17.0
    label_x, value_x, right = 44.0, 190.0, width - 40
    shape = page.new_shape()
    shape.insert_text((40, 72), "ELETROCARDIOGRAMA", fontname=bold, fontsize=16)
    shape.insert_text((40, 90), rng.choice(_CLINICS), fontname=font, fontsize=9)
    shape.draw_line((40, 100), (right, 100))
    y = 122.0
    spare = (value_x, y)
    patient = _patient_rows(ident, extras, d.visible_name, extras.labels)
    sections = (("Identificação do paciente", patient), ("Dados do exame", _exam_rows(ident, rng)))
    for index, (heading, rows) in enumerate(sections):
        shape.insert_text((40, y), heading, fontname=bold, fontsize=10.5)
        y += pitch
        top = y - pitch + 5
        for label, value in rows:
            shape.insert_text((label_x, y), label, fontname=bold, fontsize=size)
            fitted = _fit_size(value, font, right - value_x - 4, size + 0.5)
            shape.insert_text((value_x, y), value, fontname=font, fontsize=fitted)
            shape.draw_line((40, y + 5), (right, y + 5))
            y += pitch
        if index == 0 and extras.spare_row:
            spare = (label_x, y)
            y += pitch
        shape.draw_line((value_x - 8, top), (value_x - 8, y - pitch + 5))
        y += 8
    measurements = _measurements(ident, rng)
    shape.insert_text((label_x, y), "Medidas", fontname=bold, fontsize=size)
    for line in measurements:
        shape.insert_text((value_x, y), line, fontname=font, fontsize=size)
        y += pitch
    y += 10
    shape.insert_text((40, y), "Laudo eletrocardiográfico", fontname=bold, fontsize=11)
    y += pitch + 2
    for line in _report_lines(ident, extras):
        fitted = _fit_size(line, font, right - 52, 10)
        shape.insert_text((52, y), line, fontname=font, fontsize=fitted)
        y += pitch
    if ident.signature_line:
        y += 6
        fitted = _fit_size(ident.signature_line, font, right - 40, 9.5)
        shape.insert_text((40, y), ident.signature_line, fontname=font, fontsize=fitted)
        y += pitch
    shape.insert_text((right - 60, 815), "Página 1 de 2", fontname=font, fontsize=8)
    shape.finish(color=(0.35, 0.35, 0.35), width=0.5)
    shape.commit()
    return _PageOne(bottom=y, spare_row=spare, measurements=measurements)


def _draw_page_one_stacked(d: _Draw) -> _PageOne:
    """Small grey labels with their values on the line below, three cells per row."""
    page, ident, st, rng, extras = d.page, d.ident, d.style, d.rng, d.extras
    width, font = page.rect.width, st.font
    bold, grey = _BOLD[font], (0.35, 0.35, 0.35)
    columns, pitch = (40.0, 220.0, 400.0), 30.0
    shape = page.new_shape()
    title = "Relatório de Eletrocardiograma"
    title_x = (width - _text_width(title, bold, 15)) / 2
    shape.insert_text((title_x, 70), title, fontname=bold, fontsize=15)
    clinic = rng.choice(_CLINICS)
    shape.insert_text(((width - _text_width(clinic, font, 9)) / 2, 86), clinic, fontsize=9,
                      fontname=font)  # fmt: skip
    shape.draw_line((40, 96), (width - 40, 96))
    patient = _patient_rows(ident, extras, d.visible_name, extras.labels)
    exam = _exam_rows(ident, rng)
    exam[2] = ("Horário", exam[1][1])
    exam[1] = ("Nº do exame", ident.exam_number)
    cells = [patient[0], None, None, *patient[1:], *exam]
    y = 118.0
    spare = (columns[0], y)
    for start in range(0, len(cells), 3):
        for column, cell in zip(columns, cells[start : start + 3], strict=False):
            if cell is None:
                continue
            label, value = cell
            room = width - 40 - column if cell is patient[0] else 170
            shape.insert_text((column, y), label, fontname=font, fontsize=7.5, color=grey)
            fitted = _fit_size(value, font, room, 10)
            shape.insert_text((column, y + 12), value, fontname=font, fontsize=fitted)
        y += pitch
    if extras.spare_row:
        spare = (columns[0], y + 6)
        y += pitch
    shape.draw_line((40, y - 10), (width - 40, y - 10))
    y += 6
    shape.insert_text((40, y), "Parâmetros", fontname=bold, fontsize=10)
    measurements = [m.replace(":", "").replace("   ", "  ·  ") for m in _measurements(ident, rng)]
    for line in measurements:
        shape.insert_text((130, y), line, fontname=font, fontsize=9.5)
        y += 15
    y += 14
    shape.insert_text((40, y), "Conclusão", fontname=bold, fontsize=11)
    y += 18
    for line in _report_lines(ident, extras):
        fitted = _fit_size(line, font, width - 100, 10)
        shape.insert_text((52, y), line, fontname=font, fontsize=fitted)
        y += 16
    responsible = f"{_title(ident.responsible, rng)} {ident.responsible.name}"
    shape.insert_text((40, 770), "Responsável técnico", fontname=font, fontsize=7.5, color=grey)
    shape.insert_text((40, 782), f"{responsible} - CRM-{ident.uf} {ident.crm_number}",
                      fontname=font, fontsize=10)  # fmt: skip
    shape.insert_text((width - 100, 815), "Página 1 de 2", fontname=font, fontsize=8)
    shape.finish(color=(0.4, 0.4, 0.4), width=0.5)
    shape.commit()
    return _PageOne(bottom=y, spare_row=spare, measurements=measurements)


def _numbers(values: Sequence[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def _outline_ops(text: str, x: float, y: float, size: float, height: float) -> str:
    """`text` as filled glyph outlines (DejaVu Sans from matplotlib), baseline at (x, y) in page
    coordinates: no text object, no font, only paths."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path as GlyphPath
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), text, size=size, prop=FontProperties(family="DejaVu Sans"))
    ops: list[str] = ["q 0 0 0 rg\n"]
    current = (0.0, 0.0)
    vertices, codes = path.vertices, path.codes
    index = 0

    def point(vertex: np.ndarray) -> tuple[float, float]:
        return (x + float(vertex[0]), height - y + float(vertex[1]))

    while index < len(codes):
        code = codes[index]
        if code == GlyphPath.MOVETO:
            current = point(vertices[index])
            ops.append(f"{_numbers(current)} m\n")
            index += 1
        elif code == GlyphPath.LINETO:
            current = point(vertices[index])
            ops.append(f"{_numbers(current)} l\n")
            index += 1
        elif code == GlyphPath.CURVE3:  # quadratic: raised to the cubic PDF draws
            control, end = point(vertices[index]), point(vertices[index + 1])
            c1 = [current[i] + 2 / 3 * (control[i] - current[i]) for i in (0, 1)]
            c2 = [end[i] + 2 / 3 * (control[i] - end[i]) for i in (0, 1)]
            ops.append(f"{_numbers((*c1, *c2, *end))} c\n")
            current = end
            index += 2
        elif code == GlyphPath.CURVE4:
            c1, c2, end = (point(vertices[index + k]) for k in range(3))
            ops.append(f"{_numbers((*c1, *c2, *end))} c\n")
            current = end
            index += 3
        else:  # CLOSEPOLY
            ops.append("h\n")
            index += 1
    ops.append("f Q\n")
    return "".join(ops)


def _append_content(page: pymupdf.Page, content: str) -> None:
    """Add a content stream after the page's own (drawn on top)."""
    doc = page.parent
    xref = doc.get_new_xref()
    doc.update_object(xref, "<<>>")
    doc.update_stream(xref, content.encode("latin-1"))
    contents = " ".join(f"{x} 0 R" for x in [*page.get_contents(), xref])
    doc.xref_set_key(page.xref, "Contents", f"[{contents}]")


def _dejavu() -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def _plant_vectors(doc: pymupdf.Document, extras: _Extras, page_one: _PageOne, name: str,
                   cpf: str, birth: str) -> None:  # fmt: skip
    """The page-1 vectors drawn apart from the layout: outlines, an image, a lying font."""
    page = doc[0]
    width, height = page.rect.width, page.rect.height
    if "outlined_text" in extras.vectors:
        text = f"Paciente: {name}"
        from matplotlib.textpath import TextPath

        text_width = TextPath((0, 0), text, size=8).get_extents().width
        _append_content(page, _outline_ops(text, width - 40 - text_width, 24, 8, height))
    if "image_text" in extras.vectors:
        with pymupdf.open() as scratch:
            sheet = scratch.new_page(width=200, height=14)
            sheet.insert_text((2, 10), f"CPF {cpf}  Nasc. {birth}", fontsize=8)
            pixmap = sheet.get_pixmap(dpi=200)
        page.insert_image(pymupdf.Rect(40, 8, 240, 22), pixmap=pixmap)
    if "scrambled_font" in extras.vectors:
        page.insert_font(fontname="F9", fontfile=_dejavu())
        x, y = page_one.spare_row
        page.insert_text((x, y), f"Paciente: {name}", fontname="F9", fontsize=9)


# The last hex string of a bfchar (<code> <unicode>) or bfrange (<lo> <hi> <unicode>) line.
_CMAP_TARGET = re.compile(rb"^((?:<[0-9A-Fa-f]+>[ \t]*){1,2})<([0-9A-Fa-f]{4})>[ \t]*$", re.M)


def _scramble_to_unicode(doc: pymupdf.Document) -> None:
    """Shift every target of the DejaVu font's ToUnicode map by one code point ("Paciente"
    extracts as "Qbdjfouf"); the glyphs drawn on the page do not change."""
    for xref in range(1, doc.xref_length()):
        kind, value = doc.xref_get_key(xref, "ToUnicode")
        if kind != "xref" or "DejaVu" not in doc.xref_get_key(xref, "BaseFont")[1]:
            continue
        cmap_xref = int(value.split()[0])

        def shift(match: re.Match[bytes]) -> bytes:
            return match.group(1) + b"<%04X>" % ((int(match.group(2), 16) + 1) % 0x10000)

        doc.update_stream(cmap_xref, _CMAP_TARGET.sub(shift, doc.xref_stream(cmap_xref)))


_PAGE_ONE_DRAWERS: dict[Layout, Callable[[_Draw], _PageOne]] = {
    "standard": _draw_page_one,
    "table": _draw_page_one_table,
    "stacked": _draw_page_one_stacked,
}
# --- page 2 --------------------------------------------------------------------------------------


def _beat_times(rng: np.random.Generator, heart_rate: int, duration: float) -> np.ndarray:
    rr = 60.0 / heart_rate
    times = [float(rng.uniform(0.1, rr))]
    while times[-1] < duration + rr:
        times.append(times[-1] + rr * float(rng.normal(1.0, 0.03)))
    return np.array(times)


_WAVE_CENTRES = np.array([-0.16, -0.025, 0.0, 0.025, 0.26])  # s from the R peak
_WAVE_WIDTHS = np.array([0.022, 0.008, 0.010, 0.010, 0.045])
_SAMPLE_RATE = 500  # Hz; one polyline point per sample, as ECG carts export


def _wave_basis(t: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """P, Q, R, S, T Gaussians of every beat on the time axis `t`, one column per wave."""
    basis = np.zeros((len(t), len(_WAVE_CENTRES)))
    for beat in beats:
        # Each wave is negligible 0.6 s away from its beat: evaluate only that window.
        lo, hi = np.searchsorted(t, (beat - 0.6, beat + 0.6))
        dt = t[lo:hi, None] - beat - _WAVE_CENTRES
        basis[lo:hi] += np.exp(-0.5 * (dt / _WAVE_WIDTHS) ** 2)
    return basis


def _path(points: np.ndarray, height: float) -> str:
    """Moveto + linetos of a page-coordinate polyline, in PDF hundredths of a point.

    Shape.draw_polyline costs tens of microseconds per point; a 500 Hz 12-lead page has ~20k.
    """
    pdf = np.column_stack((points[:, 0], height - points[:, 1]))
    values = np.round(pdf * 100).astype(np.int64).ravel().tolist()
    # One %-format over the whole path is ~5x faster than an f-string per point.
    ops = "%d %d m\n" + "%d %d l\n" * (len(points) - 1)
    return ops % tuple(values)


@dataclass(frozen=True)
class PageTwoGeometry:
    """Where a layout draws page 2: the tracing (its lead grid, with or without a rhythm strip),
    the signature and the CRM stamp, and the baseline of a header above the tracing."""

    size: tuple[float, float]
    tracing: Box
    signature: Box
    stamp: Box
    leads: tuple[tuple[str, ...], ...]
    rhythm_strip: bool
    header_y: float


_STACKED_LEADS = (
    ("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6"),
)  # fmt: skip
GEOMETRIES: dict[Layout, PageTwoGeometry] = {
    "standard": PageTwoGeometry(
        PAGE_TWO_SIZE, PAGE_TWO_TRACING_RECT, PAGE_TWO_SIGNATURE_RECT, PAGE_TWO_STAMP_RECT,
        _LEAD_GRID, rhythm_strip=True, header_y=20.0,
    ),
    "table": PageTwoGeometry(
        PAGE_TWO_SIZE, (30.0, 70.0, 812.0, 500.0), (300.0, 510.0, 540.0, 590.0),
        (570.0, 505.0, 812.0, 590.0), _LEAD_GRID, rhythm_strip=True, header_y=45.0,
    ),
    "stacked": PageTwoGeometry(
        PAGE_ONE_SIZE, (25.0, 100.0, 570.0, 730.0), (40.0, 745.0, 290.0, 830.0),
        (320.0, 745.0, 570.0, 830.0), _STACKED_LEADS, rhythm_strip=False, header_y=70.0,
    ),
}  # fmt: skip


def _grid_ops(height: float, area: Box) -> str:
    x0, y0, x1, y1 = area
    ops = []
    for bold in (False, True):
        step = _MM * (5 if bold else 1)
        xs = [x0 + i * step for i in range(int((x1 - x0) / step + 1e-6) + 1) if bold or i % 5]
        ys = [y0 + i * step for i in range(int((y1 - y0) / step + 1e-6) + 1) if bold or i % 5]
        colour = "0.96 0.55 0.6" if bold else "1 0.82 0.85"
        ops.append(f"{colour} RG {60 if bold else 25} w\n")
        top, bottom = round((height - y0) * 100), round((height - y1) * 100)
        left, right = round(x0 * 100), round(x1 * 100)
        ops += [f"{round(x * 100)} {top} m {round(x * 100)} {bottom} l\n" for x in xs]
        rows = [round((height - y) * 100) for y in ys]
        ops += [f"{left} {row} m {right} {row} l\n" for row in rows]
        ops.append("S\n")
    return "".join(ops)


def _lead_rows(geometry: PageTwoGeometry) -> tuple[tuple[str, ...], ...]:
    """The leads of each tracing row, the rhythm strip (lead II, whole width) last if any."""
    return (*geometry.leads, ("II",)) if geometry.rhythm_strip else geometry.leads


def _tracing_ops(
    height: float, ident: _Identity, noise: np.random.Generator, geometry: PageTwoGeometry
) -> str:
    x0, y0, x1, y1 = geometry.tracing
    lead_rows = _lead_rows(geometry)
    row_height = (y1 - y0) / len(lead_rows)
    trace_x0 = x0 + 6 * _MM  # after the 1 mV calibration pulse
    xs = np.arange(trace_x0 + 1, x1 - 1, _PT_PER_S / _SAMPLE_RATE)
    t = (xs - trace_x0) / _PT_PER_S
    basis = _wave_basis(t, _beat_times(noise, ident.heart_rate, float(t[-1])))
    scale = noise.normal(1.0, 0.08, size=(len(_LEAD_WAVES), 5)).clip(0.75, 1.25)
    lead_waves = {lead: np.array(w) * scale[i] for i, (lead, w) in enumerate(_LEAD_WAVES.items())}
    ops = ["0 0 0 RG 60 w 1 j\n"]
    for row, leads in enumerate(lead_rows):
        base = y0 + row_height * (row + 0.6)
        px = x0 + _MM
        pulse = [(px, base), (px + _MM, base), (px + _MM, base - _PT_PER_MV)]
        pulse += [(px + 3 * _MM, base - _PT_PER_MV), (px + 3 * _MM, base), (px + 4 * _MM, base)]
        ops.append(_path(np.array(pulse), height))
        span = (x1 - trace_x0) / len(leads)
        for col, lead in enumerate(leads):
            start = trace_x0 + col * span
            part = slice(*np.searchsorted(xs, (start + 1, start + span - 1)))
            mv = basis[part] @ lead_waves[lead]
            mv += 0.04 * np.sin(2 * np.pi * 0.25 * t[part] + noise.uniform(0, 2 * np.pi))
            mv += noise.normal(0.0, 0.012, mv.shape)
            ys = np.clip(base - mv * _PT_PER_MV, y0 + 2, y1 - 2)
            ops.append(_path(np.column_stack((xs[part], ys)), height))
            if col:  # lead-change tick
                tick = np.array([(start, base - 4 * _MM), (start, base - 2 * _MM)])
                ops.append(_path(tick, height))
    ops.append("S\n")
    return "".join(ops)


def _lead_label_ops(height: float, geometry: PageTwoGeometry) -> str:
    """Lead names and the scale line, inside the tracing, as text operators in the page's
    "helv" font resource (ASCII only)."""
    x0, y0, x1, y1 = geometry.tracing
    lead_rows = _lead_rows(geometry)
    row_height = (y1 - y0) / len(lead_rows)
    ops = ["0 0 0 rg\n"]
    for row, leads in enumerate(lead_rows):
        y = height - (y0 + row_height * row + 12)
        column_width = (x1 - x0 - 6 * _MM) / len(leads)
        for col, lead in enumerate(leads):
            x = x0 + 6 * _MM + col * column_width + 4
            ops.append(f"BT /helv 9 Tf 1 0 0 1 {x:.2f} {y:.2f} Tm ({lead}) Tj ET\n")
    ops.append(f"BT /helv 8 Tf 1 0 0 1 {x0 + 4:.2f} {height - y1 + 4:.2f} Tm ")
    ops.append(f"({PAGE_TWO_FOOTER}) Tj ET\n")
    return "".join(ops)


def _add_raw_content(page: pymupdf.Page, paths: str, text: str) -> None:
    """Put `paths` (in hundredths of a point) and `text` under the page's existing content."""
    doc = page.parent
    xref = doc.get_new_xref()
    doc.update_object(xref, "<<>>")
    content = f"q\n0.01 0 0 0.01 0 0 cm\n{paths}Q\nq\n{text}Q\n"
    # Python's zlib at level 1: MuPDF's own deflate takes ~0.1 s for this ~300 KB stream.
    data = zlib.compress(content.encode("latin-1"), 1)
    doc.update_stream(xref, data, compress=False)
    doc.xref_set_key(xref, "Filter", "/FlateDecode")
    contents = " ".join(f"{x} 0 R" for x in [xref, *page.get_contents()])
    doc.xref_set_key(page.xref, "Contents", f"[{contents}]")


def _draw_signature(shape: pymupdf.Shape, name: str, rng: random.Random, area: Box) -> None:
    x0, y0, x1, y1 = area
    left, right = x0 + rng.uniform(8, 20), x1 - rng.uniform(8, 20)
    top, line_y = y0 + rng.uniform(4, 8), y1 - rng.uniform(20, 24)
    # Control points stay inside the box, so the Bézier curves (inside their hull) do too.
    point = pymupdf.Point(left, rng.uniform(top + 20, line_y - 4))
    segments = rng.randint(5, 8)
    for k in range(segments):
        end_x = left + (right - left) * (k + 1) / segments
        end = pymupdf.Point(end_x, rng.uniform(top + 8, line_y - 2))
        c1 = pymupdf.Point(rng.uniform(left, right), rng.uniform(top, line_y - 2))
        c2 = pymupdf.Point(rng.uniform(left, right), rng.uniform(top, line_y - 2))
        shape.draw_bezier(point, c1, c2, end)
        point = end
    shape.finish(color=(0.05, 0.05, 0.1), width=rng.uniform(0.7, 1.1), closePath=False)
    shape.draw_line((x0 + 6, line_y + 2), (x1 - 6, line_y + 2))
    shape.finish(color=(0, 0, 0), width=0.4)
    size = _fit_size(name, "helv", x1 - x0 - 12, 7.5)
    text_x = (x0 + x1 - _text_width(name, "helv", size)) / 2
    shape.insert_text((text_x, y1 - rng.uniform(5, 8)), name, fontsize=size)


def _draw_stamp(shape: pymupdf.Shape, lines: Sequence[str], rng: random.Random, area: Box) -> None:
    x0, y0, x1, y1 = area
    box = pymupdf.Rect(
        x0 + rng.uniform(3, 12), y0 + rng.uniform(3, 10), x1 - rng.uniform(3, 12),
        y1 - rng.uniform(3, 10),
    )  # fmt: skip
    ink = (0.1, 0.2, 0.6)
    shape.draw_rect(box, radius=rng.choice((None, 0.12)))
    shape.finish(color=ink, width=1.2)
    size = min(_fit_size(line, "hebo", box.width - 14, 9.5) for line in lines)
    gap = (box.height - len(lines) * size) / (len(lines) + 1)
    y = box.y0 + gap + size * 0.8
    for line in lines:
        text_x = (box.x0 + box.x1 - _text_width(line, "hebo", size)) / 2
        shape.insert_text((text_x, y), line, fontname="hebo", fontsize=size, color=ink)
        y += size + gap


def _draw_page_two(
    page: pymupdf.Page,
    ident: _Identity,
    rng: random.Random,
    noise: np.random.Generator,
    geometry: PageTwoGeometry,
    header: str | None,
) -> list[str]:
    """Draw tracing, signature, stamp and (if given) a header line above the tracing; returns
    the extra identifier strings it wrote."""
    height = page.rect.height
    shape = page.new_shape()
    # A text outside the tracing creates the page's "helv" font resource the lead labels use:
    # the header when there is one, else the clinic's name under the stamp.
    if header:
        shape.insert_text((geometry.tracing[0], geometry.header_y), header, fontsize=8)
    else:
        shape.insert_text((geometry.stamp[0], geometry.stamp[3] + 8), "ECG", fontsize=6)
    doctor = ident.responsible.name
    title = _title(ident.responsible, rng)
    signed = doctor if rng.random() < 0.5 else f"{title} {doctor}"
    _draw_signature(shape, signed, rng, geometry.signature)
    stamp_crm = f"CRM-{ident.uf} {ident.crm_number}"
    lines = [f"{title} {doctor}", stamp_crm]
    if rng.random() < 0.7:
        lines.append("Cardiologista")
    _draw_stamp(shape, lines, rng, geometry.stamp)
    shape.commit()
    paths = _grid_ops(height, geometry.tracing) + _tracing_ops(height, ident, noise, geometry)
    _add_raw_content(page, paths, _lead_label_ops(height, geometry))
    return [stamp_crm]


# --- hiding places -------------------------------------------------------------------------------


@dataclass
class _Plant:
    """What a hiding place needs: the open document, the exam and its own random stream."""

    doc: pymupdf.Document
    ident: _Identity
    rng: random.Random
    page_one: _PageOne
    fixed_date: str

    @property
    def name(self) -> str:
        return self.ident.patient.name

    @property
    def cpf(self) -> str:
        return self.ident.cpf

    def free_point(self, slot: int) -> tuple[float, float]:
        """A point below the report, one row per hiding place so they never overlap."""
        y = max(self.page_one.bottom + 20, 660) + 14 * slot
        return (self.rng.uniform(40, 60), y)


def _plant_metadata(p: _Plant) -> None:
    p.doc.set_metadata(
        {
            "title": f"ECG de Repouso - {p.name}",
            "author": p.ident.responsible.name,
            "subject": f"Paciente {p.name} CPF {p.cpf}",
            "keywords": f"ECG; {p.name}; {p.cpf}",
            "creator": "CardioSystem ECG 3.2",
            "producer": "CardioSystem PDF Export",
            "creationDate": p.fixed_date,
            "modDate": p.fixed_date,
        }
    )


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plant_xmp(p: _Plant) -> None:
    name, cpf = _xml_escape(p.name), _xml_escape(p.cpf)
    xmp = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">ECG de Repouso - {name}</rdf:li></rdf:Alt>
   </dc:title>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">Paciente {name}, CPF {cpf}</rdf:li>
   </rdf:Alt></dc:description>
   <pdf:Keywords>ECG; {name}</pdf:Keywords>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""
    p.doc.set_xml_metadata(xmp)


def _plant_annotation(p: _Plant) -> None:
    page = p.doc[0]
    text = f"Conferir cadastro de {p.name}"
    if p.rng.random() < 0.5:
        annot = page.add_text_annot((page.rect.width - 40, p.rng.uniform(40, 90)), text)
    else:
        x, y = p.free_point(0)
        annot = page.add_freetext_annot((x, y - 10, x + 330, y + 4), text, fontsize=8)
    annot.set_info(title="recepcao", content=text)
    annot.update()


def _plant_file_attachment(p: _Plant) -> None:
    page = p.doc[0]
    filename = f"ficha {p.name}.txt"
    content = f"Ficha do paciente\nNome: {p.name}\nCPF: {p.cpf}\n".encode()
    point = (page.rect.width - 40, p.rng.uniform(110, 160))
    annot = page.add_file_annot(point, content, filename="ficha.txt")
    # add_file_annot stores a non-ASCII file name as raw UTF-8 (mojibake when read back):
    # write the file spec's strings in proper PDF text encoding instead.
    for key, value in (("FS/F", filename), ("FS/UF", filename), ("FS/Desc", f"Ficha de {p.name}")):
        p.doc.xref_set_key(annot.xref, key, pymupdf.get_pdf_str(value))
    annot.set_info(content=f"Ficha de {p.name}")
    annot.update()


def _plant_form_field(p: _Plant) -> None:
    x, y = p.free_point(1)
    widget = pymupdf.Widget()
    widget.field_type = pymupdf.PDF_WIDGET_TYPE_TEXT
    widget.field_name = "paciente"
    widget.field_value = p.name
    widget.rect = pymupdf.Rect(x, y - 10, x + 330, y + 3)
    widget.text_font = "Helv"
    widget.text_fontsize = 8
    p.doc[0].add_widget(widget)


def _plant_embedded_file(p: _Plant) -> None:
    content = f"paciente={p.name}\ncpf={p.cpf}\nnascimento={p.ident.birth_date}\n"
    xref = p.doc.embfile_add("cadastro", content.encode(), filename="cadastro.txt", desc="cadastro")
    # embfile_add stamps the wall-clock time; the exam date keeps the bytes a function of the seed.
    for key in ("Params/CreationDate", "Params/ModDate"):
        p.doc.xref_set_key(xref, key, pymupdf.get_pdf_str(p.fixed_date))


def _plant_javascript(p: _Plant) -> None:
    doc, quoted = p.doc, p.name.replace("\\", "\\\\").replace("'", "\\'")
    scripts = (
        f"var paciente = '{quoted}'; var cpf = '{p.cpf}';",
        f"app.alert('Exame de {quoted}');",
    )
    xrefs = []
    for js in scripts:
        xref = doc.get_new_xref()
        doc.update_object(xref, f"<</Type/Action/S/JavaScript/JS {pymupdf.get_pdf_str(js)}>>")
        xrefs.append(xref)
    catalog = doc.pdf_catalog()
    # A key path keeps an existing /Names/EmbeddedFiles tree intact.
    doc.xref_set_key(catalog, "Names/JavaScript", f"<</Names[(cadastro) {xrefs[0]} 0 R]>>")
    doc.xref_set_key(catalog, "OpenAction", f"{xrefs[1]} 0 R")


def _plant_outline(p: _Plant) -> None:
    p.doc.set_toc([[1, f"ECG - {p.name}", 1], [1, "Traçado", 2]])


def _plant_page_label(p: _Plant) -> None:
    # Written by hand: Document.set_page_labels stores a non-ASCII prefix as raw UTF-8 bytes
    # (mojibake in viewers); get_pdf_str gives proper PDFDocEncoding / UTF-16.
    prefix = pymupdf.get_pdf_str(f"{p.name} - ")
    p.doc.xref_set_key(p.doc.pdf_catalog(), "PageLabels", f"<</Nums[0<</S/D/P {prefix}>>]>>")


def _plant_hidden_layer(p: _Plant) -> None:
    ocg = p.doc.add_ocg("Dados internos", on=False)
    x, y = p.free_point(2)
    p.doc[0].insert_text((x, y), f"Paciente: {p.name} CPF {p.cpf}", fontsize=8, oc=ocg)


def _plant_invisible_text(p: _Plant) -> None:
    x, y = p.free_point(3)
    p.doc[0].insert_text((x, y), f"{p.name} {p.cpf}", fontsize=8, render_mode=3)


def _plant_white_text(p: _Plant) -> None:
    x, y = p.free_point(4)
    p.doc[0].insert_text((x, y), p.name, fontsize=8, color=(1, 1, 1))


def _plant_thumbnail(p: _Plant) -> None:
    doc = p.doc
    page = doc[0]
    # A readable rendering of the report header, where the name is, stored as the page's /Thumb.
    pix = page.get_pixmap(matrix=pymupdf.Matrix(0.8, 0.8), clip=(0, 0, page.rect.width, 300))
    xref = doc.get_new_xref()
    doc.update_object(
        xref,
        f"<</Type/XObject/Subtype/Image/Width {pix.width}/Height {pix.height}"
        "/ColorSpace/DeviceRGB/BitsPerComponent 8>>",
    )
    doc.update_stream(xref, pix.samples)
    doc.xref_set_key(page.xref, "Thumb", f"{xref} 0 R")


_CUT_MARGIN = 120.0  # points added to the media box and cropped away again


def _plant_outside_crop_box(p: _Plant) -> None:
    doc = p.doc
    width, height = PAGE_ONE_SIZE
    text = f"Paciente {p.name} CPF {p.cpf}"
    # Grow the media box up or right and crop back to A4: the text lives in the cut-off strip.
    # The media box keeps its (0, 0) origin: PyMuPDF's set_cropbox(page.mediabox) rejects a
    # media box reaching below y=0 ("CropBox not in MediaBox"), and the anonymiser uses it.
    if p.rng.random() < 0.5:
        point = (40.0, -p.rng.uniform(30, _CUT_MARGIN - 20))  # above the visible top
        media = f"[0 0 {width:g} {height + _CUT_MARGIN:g}]"
    else:
        point = (width + p.rng.uniform(10, 20), p.rng.uniform(100, 700))  # right of the page
        media = f"[0 0 {width + _CUT_MARGIN:g} {height:g}]"
        text = p.name  # the strip is narrow
    doc[0].insert_text(point, text, fontsize=7)
    page_xref = doc.page_xref(0)
    doc.xref_set_key(page_xref, "MediaBox", media)
    doc.xref_set_key(page_xref, "CropBox", f"[0 0 {width:g} {height:g}]")


# Applied in this order: outside_crop_box changes the page boxes, so it goes last.
_PLANTERS: dict[HidingPlace, Callable[[_Plant], None]] = {
    "metadata": _plant_metadata,
    "xmp": _plant_xmp,
    "annotation": _plant_annotation,
    "file_attachment": _plant_file_attachment,
    "form_field": _plant_form_field,
    "embedded_file": _plant_embedded_file,
    "javascript": _plant_javascript,
    "outline": _plant_outline,
    "page_label": _plant_page_label,
    "hidden_layer": _plant_hidden_layer,
    "invisible_text": _plant_invisible_text,
    "white_text": _plant_white_text,
    "thumbnail": _plant_thumbnail,
    "outside_crop_box": _plant_outside_crop_box,
}


def _page_one_content(page: pymupdf.Page) -> bytes:
    """The decoded main content stream of page 1 (the first; hiding places append theirs)."""
    return page.parent.xref_stream(page.get_contents()[0])


def _revise_page_one(data: bytes, before: bytes, after: bytes) -> bytes:
    """Swap page 1's main content `before` for `after` in an incremental update.

    The earlier revision (with the old name) stays in the file, before the first %%EOF.
    """
    # saveIncr() only writes to the file the document was opened from, never to a stream.
    with tempfile.TemporaryDirectory(prefix="synthetic-ecg-") as tmp:
        path = Path(tmp) / "exam.pdf"
        path.write_bytes(data)
        doc = pymupdf.open(path)
        page = doc[0]
        # garbage=3 renumbered the objects: find the stream by its content.
        xref = next(x for x in page.get_contents() if doc.xref_stream(x) == before)
        doc.update_stream(xref, after)
        doc.saveIncr()
        doc.close()
        return path.read_bytes()


# A trailer /ID: two hex or literal strings (MuPDF writes random bytes either way).
_PDF_STRING = rb"(?:<[0-9A-Fa-f\s]*>|\((?:\\.|[^\\)])*\))"
_ID_RE = re.compile(rb"/ID\s*\[\s*" + _PDF_STRING + rb"\s*" + _PDF_STRING + rb"\s*\]", re.DOTALL)


def _fixed_id(data: bytes, seed: int) -> bytes:
    """Replace the random /ID of the file's last trailer with one derived from the seed.

    Only the last trailer: it follows its xref table, so changing its length moves no offset.
    """
    matches = list(_ID_RE.finditer(data))
    if not matches:
        return data
    digest = hashlib.sha256(f"synthetic-ecg-{seed}".encode()).hexdigest().upper()
    last = matches[-1]
    fixed = f"/ID[<{digest[:32]}><{digest[32:]}>]".encode()
    return data[: last.start()] + fixed + data[last.end() :]


# --- public functions ----------------------------------------------------------------------------


def generate_exam(
    seed: int,
    hiding_places: Sequence[HidingPlace] = (),
    layout: Layout = "standard",
    vectors: Sequence[Vector] = (),
) -> SyntheticExam:
    """Build the exam of `seed` in `layout`, with extra identifier copies in `hiding_places`
    and the identifier `vectors` of issue 18."""
    unknown = (set(hiding_places) - set(HIDING_PLACES)) | (set(vectors) - set(VECTORS))
    if unknown or layout not in LAYOUTS:
        raise ValueError(f"unknown hiding places, vectors or layout: {sorted(unknown)} {layout}")
    places = [p for p in HIDING_PLACES if p in set(hiding_places)]
    rng = random.Random(seed)
    ident = _identity(rng)
    style = _style(rng)
    noise = np.random.default_rng(rng.getrandbits(64))
    # Hiding places and vectors draw from their own streams: they never change the exam itself.
    hide_rng = random.Random(f"hiding-{seed}")
    extras = _extras(random.Random(f"vectors-{seed}"), ident, frozenset(vectors))
    taken = [ident.patient.name, ident.responsible.name, ident.requester.name]
    old_name = _distinct_people(hide_rng, 1, taken)[0].name if "old_revision" in places else None
    draw = _PAGE_ONE_DRAWERS[layout]
    geometry = GEOMETRIES[layout]

    doc = pymupdf.open()
    page = doc.new_page(width=PAGE_ONE_SIZE[0], height=PAGE_ONE_SIZE[1])
    names = [ident.patient.name, old_name] if old_name else [ident.patient.name]
    page_one_state = rng.getstate()
    # With an old revision, the first save shows the old name; same layout either way.
    page_one = draw(_Draw(page, ident, style, rng, names[-1], names, extras))
    revision = None
    if old_name:
        scratch = pymupdf.open()
        scratch_page = scratch.new_page(width=PAGE_ONE_SIZE[0], height=PAGE_ONE_SIZE[1])
        replay = random.Random()
        replay.setstate(page_one_state)
        draw(_Draw(scratch_page, ident, style, replay, names[0], names, extras))
        revision = (_page_one_content(page), _page_one_content(scratch_page))
        scratch.close()
    header = None
    if "page_two_header" in extras.vectors:
        header = f"Paciente: {ident.patient.name}   Nasc.: {ident.birth_date}   CPF: {ident.cpf}"
    page_two = doc.new_page(width=geometry.size[0], height=geometry.size[1])
    extra = _draw_page_two(page_two, ident, rng, noise, geometry, header)
    _plant_vectors(doc, extras, page_one, ident.patient.name, ident.cpf, ident.birth_date)
    fixed_date = ident.exam_date.strftime("D:%Y%m%d") + ident.exam_time.replace(":", "") + "00"
    doc.set_metadata(
        {
            "title": TITLE,
            "author": rng.choice(_CLINICS),
            "creator": "CardioSystem ECG 3.2",
            "producer": "CardioSystem PDF Export",
            "creationDate": fixed_date,
            "modDate": fixed_date,
        }
    )
    plant = _Plant(doc, ident, hide_rng, page_one, fixed_date)
    for place in places:
        if place in _PLANTERS:
            _PLANTERS[place](plant)
    if "scrambled_font" in extras.vectors:
        doc.subset_fonts()  # an embedded subset TrueType font, as ECG carts write them
        _scramble_to_unicode(doc)
    data = _fixed_id(doc.tobytes(garbage=3, deflate=True), seed)
    doc.close()
    if old_name and revision:
        data = _fixed_id(_revise_page_one(data, *revision), seed)
        extra.insert(0, old_name)
    extra += [value for values in extras.values.values() for value in values]
    extra += [ident.crm_number, ident.report_crm or ""]
    extra = [e for e in dict.fromkeys(extra) if e and e != ident.crm_field]
    identifiers = PlantedIdentifiers(
        name=ident.patient.name,
        cpf=ident.cpf,
        rg=ident.rg,
        birth_date=ident.birth_date,
        insurer=ident.insurer,
        responsible=ident.responsible.name,
        requester=ident.requester.name,
        crm=ident.crm_field,
        exam_number=ident.exam_number,
        extra=extra,
    )
    kept = KeptFields(
        sex=ident.sex,
        exam_date=ident.exam_date.strftime("%d/%m/%Y"),
        exam_time=ident.exam_time,
        report_lines=list(ident.report_lines),
        measurements=page_one.measurements,
    )
    return SyntheticExam(
        seed=seed,
        pdf=data,
        layout=layout,
        identifiers=identifiers,
        kept=kept,
        hiding_places=places,
        vectors=[v for v in VECTORS if v in extras.vectors],
        vector_values=extras.values,
        extra_identifiers=extra,
        report_signature_line=ident.signature_line,
    )


def generate_corpus(
    folder: Path,
    count: int,
    seed: int = 0,
    hidden_fraction: float = 0.3,
    layouts: Sequence[Layout] = ("standard",),
    vector_fraction: float = 0.0,
) -> list[SyntheticExam]:
    """Write `count` exams as exam-00000.pdf, ... into `folder`; returns them in file order.

    Each exam gets 1-3 random hiding places with probability `hidden_fraction`, a layout drawn
    from `layouts`, and, with probability `vector_fraction`, 2-6 random issue-18 vectors.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"corpus-{seed}")
    exams = []
    for index in range(count):
        places: list[HidingPlace] = []
        if rng.random() < hidden_fraction:
            places = rng.sample(HIDING_PLACES, rng.randint(1, 3))
        layout = layouts[index % len(layouts)]
        vectors: list[Vector] = []
        if rng.random() < vector_fraction:
            vectors = rng.sample(VECTORS, rng.randint(2, 6))
        exam = generate_exam(rng.getrandbits(48), places, layout, vectors)
        # File names carry only the position: never an identifier.
        (folder / f"exam-{index:05d}.pdf").write_bytes(exam.pdf)
        exams.append(exam)
    return exams


def _invoice() -> bytes:
    """A two-page document (A4 portrait + landscape) that is not an ECG exam."""
    doc = pymupdf.open()
    page = doc.new_page(width=PAGE_ONE_SIZE[0], height=PAGE_ONE_SIZE[1])
    lines = [
        "FATURA DE SERVIÇOS",
        "Papelaria Horizonte Ltda.",
        "Fatura nº 004512 - emitida em 03/02/2024",
        "Descrição                         Qtde     Valor",
        "Resma de papel A4                   10    R$ 289,00",
        "Toner para impressora                2    R$ 560,00",
        "Total                                     R$ 849,00",
    ]
    page.insert_text((50, 80), lines, fontname="cour", fontsize=10, lineheight=1.8)
    landscape = doc.new_page(width=PAGE_TWO_SIZE[0], height=PAGE_TWO_SIZE[1])
    landscape.insert_text((50, 80), "Condições de pagamento: 30 dias.", fontsize=11)
    doc.set_metadata({"creationDate": "D:20240203100000", "modDate": "D:20240203100000"})
    return doc.tobytes(garbage=3, deflate=True)


def _pages(pdf: bytes, pages: Sequence[int]) -> bytes:
    """The exam `pdf` with only / repeated `pages` (0-based, in order)."""
    source = pymupdf.open("pdf", pdf)
    doc = pymupdf.open()
    for number in pages:
        doc.insert_pdf(source, from_page=number, to_page=number)
    return doc.tobytes(garbage=3, deflate=True)


def _garbled(pdf: bytes) -> bytes:
    """`pdf` with every object, xref and trailer keyword broken: MuPDF's repair finds nothing."""
    for keyword, broken in ((b"obj", b"jbo"), (b"xref", b"ferx"), (b"trailer", b"reliart")):
        pdf = pdf.replace(keyword, broken)
    return pdf


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """Write one file per kind of bad input; returns {file name: expected reason code}."""
    folder.mkdir(parents=True, exist_ok=True)
    exam = generate_exam(7).pdf
    rng = random.Random("bad-inputs")
    encrypted = pymupdf.open("pdf", exam)
    files = {
        "empty.pdf": (b"", "empty"),
        "random-bytes.pdf": (b"\x00" + rng.randbytes(4095), "not_pdf"),
        "plain-text.pdf": ("Relatório de atendimento\nSem conteúdo PDF.\n".encode(), "not_pdf"),
        "truncated.pdf": (exam[:300], "corrupt"),
        "garbled.pdf": (_garbled(exam), "corrupt"),
        "encrypted.pdf": (
            encrypted.tobytes(
                encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="ecg-leitura", owner_pw="ecg-dono"
            ),
            "encrypted",
        ),
        "one-page.pdf": (_pages(exam, [0]), "wrong_page_count"),
        "three-page.pdf": (_pages(exam, [0, 1, 1]), "wrong_page_count"),
        "invoice.pdf": (_invoice(), "unknown_layout"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}
