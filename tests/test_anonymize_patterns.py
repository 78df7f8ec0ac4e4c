"""Linear-time patterns only (issue 19): every regular expression the anonymiser runs on exam
text is checked statically (no unbounded quantifier anywhere, a bounded match width, so each start
position costs at most a constant) and by measurement (CPU time grows linearly with the line:
time(4n) / time(n) well under the 16 of a quadratic pattern, the 64 of the first anonymiser's
cubic CRM pattern). The measurement is checked against that old pattern, so it can fail."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medserve.anonymize import layouts, recognisers
from medserve.anonymize.recognisers import Recognisers, fold
from tests.anonymize_bombs import crm_line

RECOGNISERS = Recognisers()
# The pattern the issue reproduced (the anonymiser before issue 18): six overlapping `\s*`.
OLD_CRM = re.compile(
    r"crm\s*[-/:.]?\s*(?:[a-z]{2}\s*[-/:]?\s*)?\d{4,7}(?:\s*[-/]\s*[a-z]{2}(?![a-z]))?"
)
# The longest text one match attempt may read; the e-mail pattern is the widest (386).
MAX_MATCH_WIDTH = 400
# time(4n) / time(n): 4 for a linear pattern, 16 quadratic, 64 cubic. Room for a busy machine.
MAX_GROWTH = 8.0
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def anonymiser_patterns() -> dict[str, re.Pattern[str]]:
    """Every compiled pattern the anonymiser runs on exam text: the recognisers, the kept
    values' forms, and the label and marker patterns of every shipped layout profile."""
    found = {
        f"recognisers.{name}": value
        for name, value in vars(recognisers).items()
        if isinstance(value, re.Pattern)
    }
    found |= {f"value.{kind}": pattern for kind, pattern in layouts.VALUE_PATTERNS.items()}
    for profile in layouts.load_layouts():
        for index, pattern in enumerate(layouts.layout_patterns(profile)):
            found[f"layout.{profile.name}.{index}"] = pattern
    return found


def _unbounded(items: sre_parse.SubPattern) -> Iterator[str]:
    """Every repeat without an upper bound, anywhere (inside groups, alternatives, lookarounds)."""
    for op, arg in items:
        if op in _REPEATS:
            low, high, sub = arg
            if high == sre_constants.MAXREPEAT:
                yield f"{op}{{{low},}}"
            yield from _unbounded(sub)
        elif op is sre_constants.SUBPATTERN:
            yield from _unbounded(arg[-1])
        elif op is sre_constants.BRANCH:
            for branch in arg[1]:
                yield from _unbounded(branch)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            yield from _unbounded(arg[1])


def test_the_pattern_inventory_is_complete() -> None:
    patterns = anonymiser_patterns()
    assert {"recognisers._CRM", "recognisers._EMAIL", "recognisers._TRIGGER"} <= set(patterns)
    assert sum(name.startswith("layout.") for name in patterns) >= 3 * 4  # 3 shipped profiles


@pytest.mark.parametrize("name", sorted(anonymiser_patterns()))
def test_every_pattern_is_bounded(name: str) -> None:
    pattern = anonymiser_patterns()[name]
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    assert list(_unbounded(parsed)) == [], f"{name} has an unbounded quantifier"
    assert parsed.getwidth()[1] <= MAX_MATCH_WIDTH


def test_the_static_check_catches_the_old_pattern() -> None:
    parsed = sre_parse.parse(OLD_CRM.pattern)
    assert len(list(_unbounded(parsed))) == 6  # its six `\s*`


def cpu_seconds(work: Callable[[], object], repeats: int = 3) -> float:
    """Least CPU time of `repeats` runs (CPU, not wall: other jobs on the machine add none)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def growth(make: Callable[[int], str], n: int, find: Callable[[str], object]) -> float:
    """time(4n) / time(n) for the line `make` builds, measured up to three times (the least
    ratio: a burst of load on the machine makes one measurement slower, never faster)."""
    small, large = make(n), make(4 * n)
    ratios = []
    for _ in range(3):
        ratio = cpu_seconds(lambda: find(large)) / max(cpu_seconds(lambda: find(small)), 1e-4)
        ratios.append(ratio)
        if ratio < MAX_GROWTH:
            break
    return min(ratios)


def test_the_measurement_catches_the_old_pattern() -> None:
    # 60 vs 240 spaces: ~2 ms vs ~0.1 s for the cubic pattern; 64x expected.
    assert growth(crm_line, 60, lambda line: list(OLD_CRM.finditer(line))) > 2 * MAX_GROWTH


def test_the_crm_line_of_the_issue_is_linear() -> None:
    """2,000 spaces took 58 s (4,000: 453 s) in the old pattern."""
    started = time.process_time()
    for spaces in (2000, 4000):
        RECOGNISERS.find(crm_line(spaces))
    assert time.process_time() - started < 5.0  # generous: ~0.02 s measured
    assert growth(crm_line, 2000, RECOGNISERS.find) < MAX_GROWTH


# Tokens the patterns react to: labels, titles, separators, digits, letters, whitespace.
TOKENS = st.sampled_from(
    [
        "crm", "coren", "rg", "cpf", "cns", "cep", "tel", "rua", "av.", "paciente", "dr.",
        "dr(a).", "sr", "prontuario", "n", "o", "º", "de", "sp", "ab", "Maria", "SILVA",
        "@", ".", "/", "-", ":", "(", ")", "+", "1", "12", "123", "2024", "x", " ", "  ",
        "\t", "\n", "   ",
    ]
)  # fmt: skip


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    unit=st.lists(TOKENS, min_size=1, max_size=8).map("".join),
    n=st.sampled_from([1500, 3000]),
)
def test_adversarial_lines_of_any_shape_scale_linearly(unit: str, n: int) -> None:
    """A short unit of pattern-relevant tokens repeated to n and 4n characters, and with the
    unit between whitespace runs of n and 4n (the shape of the CRM line)."""

    def repeated(n: int) -> str:
        return unit * max(1, n // len(unit))

    def padded(n: int) -> str:
        return unit + " " * n + unit + " " * n

    for make in (repeated, padded):
        assert growth(make, n, RECOGNISERS.find) < MAX_GROWTH, repr(unit)


@pytest.mark.parametrize("name", ["layout.standard.0", "recognisers._TRIGGER", "value.time"])
def test_layout_and_value_patterns_scale_linearly(name: str) -> None:
    pattern = anonymiser_patterns()[name]
    for unit in (" ", "ecg de ", "12:", "paciente "):

        def make(n: int, unit: str = unit) -> str:
            return fold(unit * max(1, n // len(unit)))

        assert growth(make, 4000, lambda text: list(pattern.finditer(text))) < MAX_GROWTH
