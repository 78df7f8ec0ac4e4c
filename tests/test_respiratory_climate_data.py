"""Climate mining data: the DATASUS TabNet and INMET BDMEP loaders on files written by hand in
those exports' layouts (and broken ones), and the synthetic generator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import mean

import pytest

from medserve.respiratory.climate.inmet import load_inmet, parse_inmet, write_inmet
from medserve.respiratory.climate.records import ClimateDataError, MonthlyCount, classify, join
from medserve.respiratory.climate.settings import ClimateRulesSettings
from medserve.respiratory.climate.sources import category, load_series
from medserve.respiratory.climate.synthetic import PROFILES, SAO_PAULO_NORMALS_C, generate
from medserve.respiratory.climate.tabnet import load_tabnet, parse_tabnet, period, write_tabnet
from medserve.respiratory.kb import get_kb

DATA = Path(__file__).parent / "data" / "climate"
HEADER = '"Categoria CID-10";"2019/Jan";"2019/Fev";"Total"'


def counts_of(rows: list[MonthlyCount]) -> dict[tuple[str, str], int]:
    return {(r.icd, r.month): r.count for r in rows}


def test_tabnet_months_in_columns() -> None:
    found = counts_of(load_tabnet(DATA / "tabnet_categoria_por_mes.csv"))
    assert found[("J18", "2019-06")] == 9871  # thousands separator
    assert found[("J11", "2019-03")] == 0  # "-" is zero
    assert ("J11", "2019-06") not in found  # "..." is not available, not zero
    assert found[("J11", "2019-05")] == 1204
    assert {icd for icd, _ in found} == {"J11", "J18", "J21"}  # no "Total" row
    assert len(found) == 17


def test_tabnet_months_in_rows_gives_the_same_cells() -> None:
    by_rows = counts_of(load_tabnet(DATA / "tabnet_mes_por_categoria.csv"))
    by_columns = counts_of(load_tabnet(DATA / "tabnet_categoria_por_mes.csv"))
    expected = {k: v for k, v in by_columns.items() if k[1] <= "2019-03" and k[0] != "J18"}
    assert by_rows == expected
    assert len(by_rows) == 6


@pytest.mark.parametrize(
    ("label", "month"),
    [("2019/Jan", "2019-01"), ("2019/Dez", "2019-12"), ("Mar/2020", "2020-03"), ("2019/Foo", None)],
)
def test_tabnet_month_labels(label: str, month: str | None) -> None:
    assert period(label) == month


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (f'{HEADER}\n"J11 Influenza";"4";"5"\n', 2, "3 fields where the header has 4"),
        (f'{HEADER}\n"J11 Influenza";"4";"5,5";"9"\n', 2, "'5,5' is not a case count"),
        (f'{HEADER}\n"J11 Influenza";"4";"-3";"9"\n', 2, "'-3' is not a case count"),
        (f'{HEADER}\n"10-072 Influenza [gripe]";"4";"5";"9"\n', 2, "Lista Morb CID-10"),
        (f'{HEADER}\n"Influenza";"4";"5";"9"\n', 2, "does not start with an ICD-10 code"),
        (
            f'T\n{HEADER}\n"J11 A";"4";"5";"9"\n"J11 B";"1";"1";"2"\n',
            4,
            "J11 2019-01 appears twice",
        ),
        (f"{HEADER}\nTotal;0;0;0\n", 1, "no data rows"),
        ("Morbidade\nPeríodo:Jan/2019\nnada;aqui\n", None, "no header line"),
    ],
)
def test_tabnet_refuses_a_bad_file_naming_line_and_reason(
    body: str, line: int | None, reason: str
) -> None:
    with pytest.raises(ClimateDataError) as caught:
        parse_tabnet(body, "export.csv")
    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith("export.csv")


def test_inmet_prefers_the_compensated_mean_and_skips_null() -> None:
    temps = {t.month: t.celsius for t in load_inmet(DATA / "inmet_83781_mensal.csv")}
    assert temps == {
        "2019-01": 25.1,
        "2019-02": 24.2,
        "2019-03": 22.9,
        "2019-04": 21.8,
        "2019-05": 19.6,
    }


INMET_HEAD = "Nome: X\nPeriodicidade da Medicao: Mensal\n\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Data Medicao;TEMPERATURA MEDIA, MENSAL (AUT)(°C);\n2020-07-31;16.4;\n", 16.4),
        ("Data Medição;TEMPERATURA MÉDIA COMPENSADA, MENSAL(°C)\n31/07/2020;16,4\n", 16.4),
    ],
)
def test_inmet_dot_or_comma_iso_or_brazilian_dates(body: str, expected: float) -> None:
    (temp,) = parse_inmet(INMET_HEAD + body)
    assert (temp.month, temp.celsius) == ("2020-07", expected)


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (
            "Periodicidade da Medicao: Diaria\nData Medicao;TEMPERATURA MEDIA, DIARIA(°C);\n",
            1,
            "a monthly export is needed",
        ),
        (f"{INMET_HEAD}Data Medicao;PRECIPITACAO TOTAL(mm);\n", 4, "no 'TEMPERATURA MEDIA"),
        (f"{INMET_HEAD}Data Medicao;TEMPERATURA MEDIA(°C);\n2020-13;16,4;\n", 5, "not YYYY-MM-DD"),
        (
            f"{INMET_HEAD}Data Medicao;TEMPERATURA MEDIA(°C);\n2020-07-31;16,4,1;\n",
            5,
            "not a number",
        ),
        (
            f"{INMET_HEAD}Data Medicao;TEMPERATURA MEDIA(°C);\n2020-07-31;164;\n",
            5,
            "less than or equal",
        ),
        (
            f"{INMET_HEAD}Data Medicao;TEMPERATURA MEDIA(°C);\n2020-07-31;16;\n2020-07-01;15;\n",
            6,
            "2020-07 appears twice",
        ),
        (f"{INMET_HEAD}Data Medicao;X;TEMPERATURA MEDIA(°C);\n2020-07-31;1\n", 5, "2 fields"),
        (f"{INMET_HEAD}Data Medicao;TEMPERATURA MEDIA(°C);\n2020-07-31;null;\n", 4, "no month"),
        ("Nome: X\n2020-07-31;16,4;\n", None, "no 'Data Medicao"),
    ],
)
def test_inmet_refuses_a_bad_file_naming_line_and_reason(
    body: str, line: int | None, reason: str
) -> None:
    with pytest.raises(ClimateDataError) as caught:
        parse_inmet(body, "83781.csv")
    assert (caught.value.line, caught.value.source) == (line, "83781.csv")
    assert reason in caught.value.reason


def test_join_keeps_months_with_both_sides_and_classes_them() -> None:
    series = join(
        load_tabnet(DATA / "tabnet_categoria_por_mes.csv"),
        load_inmet(DATA / "inmet_83781_mensal.csv"),
        "datasus+inmet",
    )
    assert [r.month for r in series.by_icd["J18"]] == [f"2019-0{m}" for m in range(1, 6)]
    assert [r.temperature_class for r in series.by_icd["J18"]] == [
        "alta",
        "alta",
        "média",
        "média",
        "média",
    ]
    assert len(series.by_icd["J11"]) == 5  # June: no temperature (null) and no count (...)


@pytest.mark.parametrize(
    ("celsius", "expected"), [(24.0, "média"), (24.1, "alta"), (18.0, "média"), (17.9, "baixa")]
)
def test_source_temperature_classes(celsius: float, expected: str) -> None:
    assert classify(celsius) == expected


def test_every_kb_disease_has_a_synthetic_profile() -> None:
    assert {category(d.icd10) for d in get_kb().diseases} <= set(PROFILES)


def test_synthetic_is_deterministic_and_has_the_source_size() -> None:
    settings = ClimateRulesSettings()
    codes = [d.icd10 for d in get_kb().diseases]
    first, second = load_series(settings, codes), load_series(settings, codes)
    assert first.sha256() == second.sha256() and first.data_source == "synthetic"
    assert {len(rows) for rows in first.by_icd.values()} == {60}
    other = load_series(ClimateRulesSettings(seed=8), codes)
    assert other.sha256() != first.sha256()


def test_synthetic_temperature_follows_sao_paulo_normals() -> None:
    _, temps = generate(["J11"], ClimateRulesSettings(months=600))
    by_month = {m: mean(t.celsius for t in temps if int(t.month[5:]) == m) for m in range(1, 13)}
    for month, normal in enumerate(SAO_PAULO_NORMALS_C, start=1):
        assert abs(by_month[month] - normal) < 0.75, month  # 50 years each
    classes = Counter(classify(t.celsius) for t in temps)
    assert classes["média"] > classes["baixa"] > classes["alta"] > 0  # a mild city


@pytest.mark.parametrize(("code", "winter"), [("J11", True), ("J21", True), ("A37", False)])
def test_synthetic_seasons(code: str, winter: bool) -> None:
    counts, _ = generate([code], ClimateRulesSettings(months=120))
    season = {m: mean(c.count for c in counts if int(c.month[5:]) == m) for m in range(1, 13)}
    autumn_winter = mean(season[m] for m in (4, 5, 6, 7, 8))
    spring_summer = mean(season[m] for m in (10, 11, 12, 1, 2))
    assert (autumn_winter > 1.3 * spring_summer) == winter


def test_written_exports_load_back_exactly(tmp_path: Path) -> None:
    """Synthetic data written in the export layouts and read by the loaders is unchanged."""
    settings = ClimateRulesSettings(months=24)
    counts, temps = generate(["J11", "J18", "I26"], settings)
    counts[3] = counts[3].model_copy(update={"count": 0})  # written as "-"
    write_tabnet(
        counts, tmp_path / "tabnet.csv", {"J11": "Influenza devida a vírus não identificado"}
    )
    write_inmet(temps, tmp_path / "inmet.csv")
    assert load_tabnet(tmp_path / "tabnet.csv") == sorted(counts, key=lambda c: (c.icd, c.month))
    assert load_inmet(tmp_path / "inmet.csv") == temps
    (tmp_path / "tabnet.csv").read_bytes().decode("latin-1")  # TabNet's encoding


def test_settings_need_both_files_or_none(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        ClimateRulesSettings(occurrences_csv=tmp_path / "a.csv")
    with pytest.raises(ValueError, match="low_below_c"):
        ClimateRulesSettings(low_below_c=25)
