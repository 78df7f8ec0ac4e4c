"""Respiratory triage: the source's cycle vs expected information gain on simulated patients.

Patients are drawn from the knowledge base itself (disease by its prior, each symptom by its
symbolic probability, each factor value by its weight), then answers get noise (a flipped yes/no)
and "unknown"s. This measures how well each strategy uses the KB, not clinical accuracy: no real
patient is involved. The information-gain settings are tuned on one seed and reported on another,
so the reported figures are not fitted to the patients they describe.

    uv run python -m bench.respiratory_strategies [--patients 1000] [--tune-seed 1] \
        [--eval-seed 2] [--out bench/results/respiratory_strategies.md]
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medserve.respiratory.kb import KnowledgeBase, get_kb
from medserve.respiratory.settings import StrategyName, TriageSettings
from medserve.respiratory.simulation import FLIP, UNKNOWN_RATE, Patient, draw_patient, run_consult


@dataclass(frozen=True)
class Score:
    top1: float
    top3: float
    questions: float
    ms_per_consult: float


def evaluate(
    patients: list[Patient], strategy: StrategyName, settings: TriageSettings, kb: KnowledgeBase
) -> Score:
    top1 = top3 = questions = 0
    started = time.perf_counter()
    for patient in patients:
        ranked, asked = run_consult(patient, strategy, settings, kb)
        top1 += ranked[:1] == [patient.disease]
        top3 += patient.disease in ranked[:3]
        questions += asked
    elapsed = time.perf_counter() - started
    n = len(patients)
    return Score(top1 / n, top3 / n, questions / n, 1000 * elapsed / n)


GRID = {
    "stop_probability": [0.6, 0.7, 0.8, 0.9, 0.95],
    "p_unlisted": [0.03, 0.05, 0.1],
}


def tune(patients: list[Patient], kb: KnowledgeBase, source: Score) -> tuple[dict, list[str]]:
    """Best top-1 among settings that match the source's top-1 with at most 70 % of its questions.

    Accuracy first within the issue's question budget: the cheapest setting that merely ties the
    source would throw away accuracy a triage needs. Without a feasible setting: fewest questions.
    """
    rows, best, best_key = [], None, None
    for stop, unlisted in itertools.product(GRID["stop_probability"], GRID["p_unlisted"]):
        knobs = {"stop_probability": stop, "p_unlisted": unlisted}
        score = evaluate(patients, "info_gain", TriageSettings(**knobs), kb)
        rows.append(
            f"| {stop} | {unlisted} | {score.top1:.3f} | {score.top3:.3f} | {score.questions:.2f} |"
        )
        feasible = score.top1 >= source.top1 and score.questions <= 0.7 * source.questions
        key = (not feasible, -score.top1 if feasible else score.questions, score.questions)
        if best_key is None or key < best_key:
            best, best_key = knobs, key
    return best or {}, rows


def table(rows: list[tuple[str, Score]]) -> list[str]:
    lines = [
        "| strategy | top-1 | top-3 | questions per consult | ms per consult |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s.top1:.3f} | {s.top3:.3f} | {s.questions:.2f} | {s.ms_per_consult:.1f} |"
        for name, s in rows
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--tune-seed", type=int, default=1)
    parser.add_argument("--eval-seed", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    kb = get_kb()
    defaults = TriageSettings()

    def cohort(seed: int) -> list[Patient]:
        rng = np.random.default_rng(seed)
        return [draw_patient(kb, rng) for _ in range(args.patients)]

    tuning = cohort(args.tune_seed)
    source_tuning = evaluate(tuning, "source", defaults, kb)
    knobs, grid_rows = tune(tuning, kb, source_tuning)
    evaluation = cohort(args.eval_seed)
    source = evaluate(evaluation, "source", defaults, kb)
    tuned = evaluate(evaluation, "info_gain", TriageSettings(**knobs), kb)
    default = evaluate(evaluation, "info_gain", defaults, kb)
    fewer = 1 - tuned.questions / source.questions
    lines = [
        f"KB {kb.version} (sha256 {kb.sha256[:12]}), {args.patients} simulated patients per seed; "
        f"flip {FLIP}, unknown {UNKNOWN_RATE}. Tuned on seed {args.tune_seed}: {knobs}; "
        f"reported on seed {args.eval_seed}.",
        "",
        *table(
            [
                ("source (hypothesis-test cycle)", source),
                (f"info_gain, tuned {knobs}", tuned),
                (
                    f"info_gain, defaults (stop {defaults.stop_probability}, "
                    f"unlisted {defaults.p_unlisted})",
                    default,
                ),
            ]
        ),
        "",
        f"Tuned info_gain asks {fewer:.0%} fewer questions than the source "
        f"(top-1 {tuned.top1:.3f} vs {source.top1:.3f}).",
        "",
        f"Tuning grid (seed {args.tune_seed}; source top-1 there {source_tuning.top1:.3f}, "
        f"{source_tuning.questions:.2f} questions):",
        "",
        "| stop_probability | p_unlisted | top-1 | top-3 | questions |",
        "|---|---|---|---|---|",
        *grid_rows,
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
