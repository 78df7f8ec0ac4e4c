"""1R-style discretisation (Holte 1993) of monthly case counts into temperature-class ranges,
evaluated on ten folds as the source did.

Learning, for one ICD code: sort the training months by count; equal counts form one block
(no rule on the count can separate them). Cut the blocks into the FEWEST ranges such that in
each range one class predominates (more months than all others together) with at most
`max_off_class` months of other classes (the source's allowed error, 2); a single block that
cannot meet this stays one range. Among equally few ranges, the fewest off-class months win,
then the leftmost cuts (dynamic programming: exact and deterministic). Adjacent ranges of the
same class are then merged, 1R's last step (so a merged range may hold more off-class months).
Cuts sit halfway between the neighbouring ranges' counts, and the first and last ranges are
open, so every count falls in exactly one range.

Fewest ranges is the reading of "allowing a minimum error to avoid over-fitting": with no
allowance every class change in the sorted counts would be a cut.

Evaluation: the months are shuffled (seeded) into `folds` folds; each fold learns on the others
(90 %) and is tested on itself (10 %). The rules kept are the fold with the lowest test error
(the source's choice, optimistic by construction: the mean over folds is the honest estimate,
and both are reported), next to a comparison learner on the same folds and the majority class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import mean

import numpy as np

from medserve.respiratory.climate.records import (
    TEMPERATURE_CLASSES,
    ClimateSeries,
    MonthObservation,
    TemperatureClass,
)
from medserve.respiratory.climate.rules import (
    ClimateRules,
    CountRange,
    FoldScore,
    IcdRules,
    class_occurrences,
)
from medserve.respiratory.climate.settings import ClimateRulesSettings
from medserve.respiratory.climate.sources import data_code

Learner = Callable[[list[int], list[TemperatureClass], list[int]], list[TemperatureClass]]
"""(training counts, training classes, test counts) -> predicted test classes."""

PEAK_MONTHS = 3


@dataclass(frozen=True)
class _Block:
    count: int
    classes: Counter[TemperatureClass]


def _majority(classes: Counter[TemperatureClass]) -> TemperatureClass:
    """Most frequent class; ties go to the colder class (a fixed order, for determinism)."""
    return max(TEMPERATURE_CLASSES, key=lambda c: (classes[c], -TEMPERATURE_CLASSES.index(c)))


def _blocks(counts: Sequence[int], classes: Sequence[TemperatureClass]) -> list[_Block]:
    by_count: dict[int, Counter[TemperatureClass]] = {}
    for count, klass in zip(counts, classes, strict=True):
        by_count.setdefault(count, Counter())[klass] += 1
    return [_Block(count, by_count[count]) for count in sorted(by_count)]


def _segment(blocks: list[_Block], max_off_class: int) -> list[tuple[int, int]]:
    """Fewest valid [i, j) block ranges, then fewest off-class months (dynamic programming)."""
    n = len(blocks)
    best: list[tuple[int, int] | None] = [(0, 0), *([None] * n)]
    cut: list[int] = [0] * (n + 1)
    for j in range(1, n + 1):
        classes: Counter[TemperatureClass] = Counter()
        for i in range(j - 1, -1, -1):  # grow the range leftwards from block j-1
            classes += blocks[i].classes
            top = classes[_majority(classes)]
            off = sum(classes.values()) - top
            valid = i == j - 1 or (off <= max_off_class and top > off)
            previous = best[i]
            if not valid or previous is None:
                continue
            candidate = (previous[0] + 1, previous[1] + off)
            if best[j] is None or candidate <= best[j]:  # `<=`: ties take the leftmost cut
                best[j], cut[j] = candidate, i
    spans, j = [], n
    while j > 0:
        spans.append((cut[j], j))
        j = cut[j]
    return spans[::-1]


def learn_ranges(
    counts: Sequence[int], classes: Sequence[TemperatureClass], max_off_class: int
) -> list[CountRange]:
    """The count ranges of one ICD code's training months (see the module docstring)."""
    if not counts:
        raise ValueError("no months to learn from")
    blocks = _blocks(counts, classes)
    spans: list[tuple[Counter[TemperatureClass], int, int, bool]] = []  # classes, lo, hi, merged
    for i, j in _segment(blocks, max_off_class):
        classes_in = sum((b.classes for b in blocks[i:j]), Counter())
        if spans and _majority(spans[-1][0]) == _majority(classes_in):
            merged_classes = spans[-1][0] + classes_in
            spans[-1] = (merged_classes, spans[-1][1], blocks[j - 1].count, True)
        else:
            spans.append((classes_in, blocks[i].count, blocks[j - 1].count, False))
    ranges = []
    for k, (classes_in, _, high, merged) in enumerate(spans):
        klass = _majority(classes_in)
        ranges.append(
            CountRange(
                lower=None if k == 0 else (spans[k - 1][2] + spans[k][1]) / 2,
                upper=None if k == len(spans) - 1 else (high + spans[k + 1][1]) / 2,
                temperature_class=klass,
                months=sum(classes_in.values()),
                off_class=sum(classes_in.values()) - classes_in[klass],
                merged=merged,
            )
        )
    return ranges


def predict(ranges: Sequence[CountRange], counts: Sequence[int]) -> list[TemperatureClass]:
    return [next(r.temperature_class for r in ranges if r.contains(c)) for c in counts]


def majority_learner(
    train_counts: list[int], train_classes: list[TemperatureClass], test_counts: list[int]
) -> list[TemperatureClass]:
    """The baseline every 1R evaluation reports: always the most frequent training class."""
    return [_majority(Counter(train_classes))] * len(test_counts)


def fold_tests(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Test indices of each fold: a seeded shuffle cut into `folds` near-equal parts."""
    if n < folds:
        raise ValueError(f"{n} months cannot make {folds} folds")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def _error(predicted: Sequence[str], actual: Sequence[str]) -> float:
    return sum(p != a for p, a in zip(predicted, actual, strict=True)) / len(actual)


def peak_months(observations: Sequence[MonthObservation], top: int = PEAK_MONTHS) -> list[int]:
    """Calendar months with the highest mean count (ties: earlier month)."""
    by_month: dict[int, list[int]] = {}
    for row in observations:
        by_month.setdefault(int(row.month[5:]), []).append(row.count)
    ranked = sorted(by_month, key=lambda m: (-mean(by_month[m]), m))
    return sorted(ranked[:top])


def mine_icd(
    icd: str,
    data_code: str,
    observations: Sequence[MonthObservation],
    settings: ClimateRulesSettings,
    compare: Learner,
) -> IcdRules:
    """Rules of one ICD code on the best of `settings.folds` folds, with every fold's errors
    for the rules, `compare` and the majority class."""
    counts = [row.count for row in observations]
    classes = [row.temperature_class for row in observations]
    scores, fold_rules = [], []
    for fold, test in enumerate(fold_tests(len(counts), settings.folds, settings.fold_seed)):
        held = set(test.tolist())
        train_idx = [i for i in range(len(counts)) if i not in held]
        x_train, y_train = [counts[i] for i in train_idx], [classes[i] for i in train_idx]
        x_test, y_test = [counts[i] for i in test], [classes[i] for i in test]
        ranges = learn_ranges(x_train, y_train, settings.max_off_class)
        fold_rules.append(ranges)
        scores.append(
            FoldScore(
                fold=fold,
                train_months=len(train_idx),
                test_months=len(x_test),
                rules_error=_error(predict(ranges, x_test), y_test),
                tree_error=_error(compare(x_train, y_train, x_test), y_test),
                majority_error=_error(majority_learner(x_train, y_train, x_test), y_test),
            )
        )
    chosen = min(scores, key=lambda s: (s.rules_error, s.fold)).fold
    return IcdRules(
        icd=icd,
        data_code=data_code,
        rules=fold_rules[chosen],
        by_class=class_occurrences(counts, classes),
        peak_months=peak_months(observations),
        folds=scores,
        chosen_fold=chosen,
        rules_error_best=scores[chosen].rules_error,
        rules_error_mean=mean(s.rules_error for s in scores),
        tree_error_best=min(s.tree_error for s in scores),
        tree_error_mean=mean(s.tree_error for s in scores),
        majority_error_mean=mean(s.majority_error for s in scores),
    )


def mine(
    series: ClimateSeries,
    kb_codes: Sequence[str],
    settings: ClimateRulesSettings,
    compare: Learner,
) -> ClimateRules:
    """Rules for every KB code the series has at least `settings.folds` months of."""
    icds = {}
    for icd in sorted(kb_codes):
        code = data_code(icd, series)
        if code is None or len(series.by_icd[code]) < settings.folds:
            continue  # the card lists the codes without rules (`missing`)
        icds[icd] = mine_icd(icd, code, series.by_icd[code], settings, compare)
    return ClimateRules(
        data_source=series.data_source,
        data_sha256=series.sha256(),
        months=len({row.month for rows in series.by_icd.values() for row in rows}),
        high_above_c=settings.high_above_c,
        low_below_c=settings.low_below_c,
        max_off_class=settings.max_off_class,
        icds=icds,
    )
