"""The identifier recognisers shared by the redactor and the verifier: what each kind finds, what
clinical text it leaves alone, check digits, linear time on hostile input, and properties."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medserve.anonymize.recognisers import KINDS, Recognisers, fold, name_lists, unaccent
from medserve.anonymize.synthetic import cpf_is_valid, generate_exam

RECOGNISERS = Recognisers()

# (kind, text, identifier inside it)
FOUND = [
    ("cpf", "CPF: 529.982.247-25", "529.982.247-25"),
    ("cpf", "cpf 529 982 247 25 anotado", "529 982 247 25"),
    ("cpf", "documento 52998224725", "52998224725"),
    ("cnpj", "CNPJ 11.222.333/0001-81", "11.222.333/0001-81"),
    ("cns", "Cartão SUS: 898 0014 0010 9998", "898 0014 0010 9998"),
    ("cns", "anotado 711 5244 9390 9264", "711 5244 9390 9264"),
    ("cns", "cns 700000000000005", "700000000000005"),
    ("rg", "RG: 27.346.468-X", "27.346.468-X"),
    ("crm", "Laudado por Dr. X - CRM 12345/SP", "CRM 12345/SP"),
    ("crm", "CRM-SP 104729", "CRM-SP 104729"),
    ("crm", "COREN-RJ 123456", "COREN-RJ 123456"),
    ("crm", "assinado 874964/PA", "874964/PA"),
    ("phone", "contato (11) 98765-4321", "(11) 98765-4321"),
    ("phone", "tel 11 3456-7890", "11 3456-7890"),
    ("phone", "ligar 3456-7890", "3456-7890"),
    ("phone", "celular +55 11 98765 4321", "+55 11 98765 4321"),
    ("phone", "(21)999887766", "(21)999887766"),
    ("email", "escreva para maria.souza12@uol.com.br hoje", "maria.souza12@uol.com.br"),
    ("cep", "CEP 01310-100", "01310-100"),
    ("address", "mora na Rua das Acácias, 123", "Rua das Acácias, 123"),
    ("address", "Av. Paulista 1578", "Av. Paulista 1578"),
    ("date", "nascido em 1982-07-14", "1982-07-14"),
    ("date", "nascido em 14.07.1982", "14.07.1982"),
    ("date", "nascido em 14 de julho de 1982", "14 de julho de 1982"),
    ("date", "em 14/07/82", "14/07/82"),
    ("record_number", "Prontuário: 1234567", "1234567"),
    ("name", "Paciente João da Silva em uso de betabloqueador.", "João da Silva"),
    ("name", "PACIENTE JOSÉ DOS SANTOS EM USO DE", "JOSÉ DOS SANTOS"),
    ("name", "Laudado por Dr(a). Xavier Quintella - CRM", "Xavier Quintella"),
    ("name", "Sra. Tânia Brandão refere palpitações", "Tânia Brandão"),
    ("name", "Sr(a). Tânia Falcão Guimarães Teixeira refere palpitações", "Tânia Falcão"),
    ("name", "Prof(a). Anísio Loureiro", "Anísio Loureiro"),
    ("name", "conferido com Maria Souza", "Maria Souza"),
]
# Clinical text, kept fields and layout words: no recogniser may fire on any of it.
CLEAN = [
    "ECG de Repouso",
    "Sexo: Masculino",
    "Hora: 07:23",
    "Laudo: CONCLUSÃO:",
    "Ritmo sinusal regular. Frequência cardíaca de 71 bpm.",
    "Bloqueio divisional ântero-superior esquerdo. QRS largo.",
    "Alterações inespecíficas da repolarização ventricular.",
    "QTc dentro dos limites da normalidade. Eixo elétrico desviado para a esquerda.",
    "FC: 72 bpm   PR: 160 ms   QRS: 92 ms",
    "QT/QTc: 380/412 ms   Eixo: +45°",
    "25 mm/s  10 mm/mV",
    "Página 1 de 2",
    "paciente em uso de betabloqueador",
    "Laudado por Dr(a).  - ",
    "Relatório de Eletrocardiograma  Parâmetros  Conclusão  Responsável técnico",
]


@pytest.mark.parametrize(("kind", "text", "value"), FOUND)
def test_each_kind_finds_its_identifier(kind: str, text: str, value: str) -> None:
    hits = [h for h in RECOGNISERS.find(text) if h.kind == kind]
    assert any(text[h.start : h.end].find(value) >= 0 for h in hits), (kind, text)


@pytest.mark.parametrize("text", CLEAN)
def test_clinical_text_and_kept_fields_are_left_alone(text: str) -> None:
    assert RECOGNISERS.find(text) == []


def test_the_exam_date_is_a_date_like_any_other() -> None:
    """Only the layout says a date is the exam's: the recogniser finds every date."""
    assert RECOGNISERS.kinds_in("Data: 16/05/2023") == ["date"]


def test_check_digits_decide_for_bare_numbers() -> None:
    assert RECOGNISERS.kinds_in("52998224725") == ["cpf"]
    assert RECOGNISERS.kinds_in("52998224726") == []  # wrong check digit: an exam number
    assert RECOGNISERS.kinds_in("791417776317068") == ["cns"]
    assert RECOGNISERS.kinds_in("791417776317069") == []


def test_generated_documents_are_found_with_valid_check_digits() -> None:
    for seed in range(20):
        exam = generate_exam(seed, vectors=["cns"])
        assert cpf_is_valid(exam.identifiers.cpf)
        assert "cpf" in RECOGNISERS.kinds_in(exam.identifiers.cpf)
        assert "cns" in RECOGNISERS.kinds_in(exam.vector_values["cns"][0])


def test_one_recogniser_can_be_disabled_and_unknown_ones_are_refused() -> None:
    without = Recognisers(frozenset({"phone"}))
    assert "phone" not in without.kinds and len(without.kinds) == len(KINDS) - 1
    assert without.find("ligar 3456-7890") == []
    with pytest.raises(ValueError, match="unknown recognisers"):
        Recognisers(frozenset({"shoe_size"}))  # type: ignore[arg-type]


def test_ocr_text_needs_a_known_name_after_a_title() -> None:
    """OCR of a tracing reads capitals into noise ("SR ERA DR DA"); in OCR text a name must
    hold a word of the name lists, in extracted text any capitalised run after a title counts."""
    noise = "PESAR AS PAR NARA A SR ERA DR PESOS"
    assert "name" in RECOGNISERS.kinds_in(noise)
    assert RECOGNISERS.kinds_in(noise, ocr=True) == []
    assert RECOGNISERS.kinds_in("Paciente Maria Quintella", ocr=True) == ["name"]


def test_name_lists_ship_inside_faker() -> None:
    first, last = name_lists()
    assert len(first) > 250 and len(last) > 100
    assert {"maria", "joao", "jose"} <= first and {"silva", "santos", "oliveira"} <= last


PATHOLOGICAL = [
    "crm" + " " * 2000 + "ab" + " " * 2000,
    "paciente " + "A " * 3000,
    "Paciente " + "Ab " * 3000,
    "1" * 6000,
    "1 " * 4000,
    "1." * 4000,
    "a.a" * 3000 + "@",
    "@" + "a." * 3000,
    "rua " + "a " * 3000,
    "12/" * 3000,
    "(11) " * 2000,
    "cep " + "1-" * 3000,
    "prontuario " + "1 " * 3000,
    "\n" * 5000 + "dr. " * 1000,
]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_hostile_inputs_finish_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    RECOGNISERS.find(text)
    assert time.perf_counter() - started < 0.5


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gives_hits_inside_it(text: str) -> None:
    assert len(fold(text)) == len(unaccent(text)) == len(text)
    for hit in RECOGNISERS.find(text):
        assert 0 <= hit.start < hit.end <= len(text) and hit.kind in KINDS


WORDS = st.sampled_from(
    ["ritmo", "sinusal", "de", "em", "uso", "frequência", "normal", "eixo", "bpm", "72", "ms"]
)


def _cpf(base: list[int], form: int) -> str:
    """A CPF with valid check digits (the Receita Federal's mod-11 rule), in one of 3 forms."""
    digits = list(base)
    for weight in (10, 11):
        digits.append(
            sum(d * w for d, w in zip(digits, range(weight, 1, -1), strict=False)) * 10 % 11 % 10
        )
    s = "".join(map(str, digits))
    return (f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}", f"{s[:3]} {s[3:6]} {s[6:9]} {s[9:]}", s)[form]


@settings(max_examples=100, deadline=None)
@given(
    before=st.lists(WORDS, max_size=8),
    after=st.lists(WORDS, max_size=8),
    base=st.lists(st.integers(0, 9), min_size=9, max_size=9).filter(lambda b: len(set(b)) > 1),
    form=st.integers(0, 2),
)
def test_a_planted_cpf_is_found_in_any_clinical_sentence(
    before: list[str], after: list[str], base: list[int], form: int
) -> None:
    cpf = _cpf(base, form)
    text = " ".join([*before, cpf, *after])
    assert any(h.kind == "cpf" and text[h.start : h.end] == cpf for h in RECOGNISERS.find(text))
