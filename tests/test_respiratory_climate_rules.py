"""Climate mining: properties of the 1R-style count ranges (hypothesis), the ten folds, and the
rules the service loads (lookup, JSON, the Portuguese insight)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medserve.respiratory.climate.learner import (
    fold_tests,
    learn_ranges,
    majority_learner,
    mine,
    mine_icd,
    predict,
)
from medserve.respiratory.climate.records import TEMPERATURE_CLASSES, MonthObservation
from medserve.respiratory.climate.rules import ClimateRules
from medserve.respiratory.climate.settings import ClimateRulesSettings
from medserve.respiratory.climate.sources import load_series
from medserve.respiratory.kb import get_kb
from training.respiratory_rules import tree_learner

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
months = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(TEMPERATURE_CLASSES)), min_size=1, max_size=60
)


@PROPERTY
@given(months, st.integers(0, 3))
def test_ranges_are_contiguous_open_ended_and_cover_every_count(
    data: list[tuple[int, str]], max_off: int
) -> None:
    counts, classes = [c for c, _ in data], [k for _, k in data]
    ranges = learn_ranges(counts, classes, max_off)
    assert ranges[0].lower is None and ranges[-1].upper is None
    for left, right in itertools.pairwise(ranges):
        assert left.upper == right.lower and left.upper is not None
        assert left.temperature_class != right.temperature_class  # same-class ranges merged
    for count in counts:
        assert sum(r.contains(count) for r in ranges) == 1
    assert sum(r.months for r in ranges) == len(data)


@PROPERTY
@given(months, st.integers(0, 3))
def test_each_range_keeps_the_error_allowance_unless_merged_or_one_count(
    data: list[tuple[int, str]], max_off: int
) -> None:
    counts, classes = [c for c, _ in data], [k for _, k in data]
    for rule in learn_ranges(counts, classes, max_off):
        inside = [(c, k) for c, k in data if rule.contains(c)]
        off = sum(k != rule.temperature_class for _, k in inside)
        assert off == rule.off_class and len(inside) == rule.months
        if rule.off_class > max_off:  # only where the 1R merge joined ranges or ties forced it
            assert rule.merged or len({c for c, _ in inside}) == 1


@PROPERTY
@given(months, st.integers(0, 3), st.randoms(use_true_random=False))
def test_ranges_do_not_depend_on_month_order(
    data: list[tuple[int, str]], max_off: int, shuffler: random.Random
) -> None:
    shuffled = list(data)
    shuffler.shuffle(shuffled)
    first = learn_ranges([c for c, _ in data], [k for _, k in data], max_off)
    again = learn_ranges([c for c, _ in shuffled], [k for _, k in shuffled], max_off)
    assert first == again


@PROPERTY
@given(st.integers(10, 80), st.integers(2, 10), st.integers(0, 99))
def test_folds_partition_the_months(n: int, folds: int, seed: int) -> None:
    tests = fold_tests(n, folds, seed)
    assert sorted(i for t in tests for i in t.tolist()) == list(range(n))
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    assert [t.tolist() for t in tests] == [t.tolist() for t in fold_tests(n, folds, seed)]


def test_a_clean_split_gives_two_rules_and_no_error() -> None:
    counts = [10, 12, 13, 15, 40, 42, 45, 50]
    classes = ["média"] * 4 + ["baixa"] * 4
    ranges = learn_ranges(counts, classes, 2)
    assert [(r.lower, r.upper, r.temperature_class) for r in ranges] == [
        (None, 27.5, "média"),
        (27.5, None, "baixa"),
    ]
    assert predict(ranges, counts) == classes


def test_the_allowance_absorbs_a_stray_month_that_zero_allowance_cuts_out() -> None:
    counts = [10, 11, 12, 13, 14, 15, 40, 41, 42, 43]
    classes = ["média", "média", "baixa", "média", "média", "média"] + ["baixa"] * 4
    assert len(learn_ranges(counts, classes, 2)) == 2
    assert len(learn_ranges(counts, classes, 0)) == 4  # média | baixa | média | baixa


def test_equal_counts_are_never_split() -> None:
    ranges = learn_ranges([5, 5, 5, 5, 5, 5], ["alta", "baixa", "média"] * 2, 0)
    assert len(ranges) == 1 and ranges[0].off_class == 4


def rows(pairs: list[tuple[int, str]]) -> list[MonthObservation]:
    return [
        MonthObservation(
            month=f"{2015 + i // 12}-{i % 12 + 1:02d}", count=c, celsius=20.0, temperature_class=k
        )
        for i, (c, k) in enumerate(pairs)
    ]


def test_mine_keeps_the_fold_with_the_lowest_rules_error_and_reports_all() -> None:
    data = [(c, "baixa" if c > 30 else "média") for c in range(60)]
    data[5] = (5, "alta")
    found = mine_icd("J11.1", "J11", rows(data), ClimateRulesSettings(), majority_learner)
    assert len(found.folds) == 10 and sum(f.test_months for f in found.folds) == 60
    assert {f.train_months for f in found.folds} == {54}
    assert found.rules_error_best == min(f.rules_error for f in found.folds)
    assert found.chosen_fold == min(found.folds, key=lambda f: (f.rules_error, f.fold)).fold
    assert found.rules_error_mean < found.majority_error_mean  # a real signal is found
    assert found.tree_error_mean == found.majority_error_mean  # the majority stood in


@pytest.fixture(scope="module")
def mined() -> ClimateRules:
    codes = [d.icd10 for d in get_kb().diseases]
    config = ClimateRulesSettings()
    return mine(load_series(config, codes), codes, config, tree_learner(config.tree_max_depth))


def test_every_kb_code_has_rules_and_a_json_round_trip(mined: ClimateRules) -> None:
    assert set(mined.icds) == {d.icd10 for d in get_kb().diseases}
    assert ClimateRules.model_validate_json(mined.model_dump_json()) == mined
    assert mined.data_source == "synthetic" and len(mined.data_sha256) == 64


def test_rules_for_the_kb_code_or_its_category(mined: ClimateRules) -> None:
    assert mined.rules_for("J11.1") is mined.rules_for("J11") is mined.icds["J11.1"]
    assert mined.rules_for("j11.1") is mined.icds["J11.1"]
    assert mined.rules_for("Z99") is None


def test_influenza_insight_says_cold_months(mined: ClimateRules) -> None:
    text = mined.insight("J11.1", "baixa", "jun")
    assert text is not None
    assert text.startswith("Em São Paulo, J11.1 tem mais casos em meses frios (< 18 °C)")
    assert "Em meses frios (< 18 °C), as ocorrências ficam tipicamente entre" in text
    assert "Junho está entre os meses de maior ocorrência." in text
    assert "dados sintéticos" in text


def test_insight_takes_the_kb_answer_values(mined: ClimateRules) -> None:
    text = mined.insight("J18.9", "media", "12")
    assert text is not None and "Em meses amenos (18-24 °C)" in text
    assert "Os meses de maior ocorrência são" in text
    plain = mined.insight("J18.9", "nonsense", "13")  # ignored, not an error
    assert plain is not None and plain.count(".") == mined.insight("J18.9").count(".")
    assert mined.insight("Z99") is None


def test_rule_lines_read_as_the_source_wrote_them(mined: ClimateRules) -> None:
    lines = mined.icds["J21.9"].rule_lines()
    assert lines and all(" casos" in line and "-> temperatura " in line for line in lines)


def test_the_rules_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, medserve.respiratory.climate.rules; "
        "print(sorted({'sklearn', 'ray', 'bentoml', 'numpy'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
