"""ECG exam anonymisation: speed beside the previous anonymiser, engines, recall, memory, cost.

Usage: ``uv run python -m bench.anonymize [--exams 40] [--engine-exams 200] [--corpus 300]
[--recall-seed 1818] [--out FILE] [--keep]`` (run it under ``flock /work/cpu.lock``: it uses
both cores).

1. **Speed, side by side in one run**: the same standard-layout corpus (30 % with hiding places)
   anonymised at the source's settings (450 DPI RGB, JPEG q95, ZIP Deflate 5) by the anonymiser of
   commit ``BASELINE`` (the one before keep-only; its ``medserve/`` is extracted with
   ``git archive`` into a temp dir and run from there, nothing of it is committed) and by this
   tree with verifier OCR on every exam, on 10 %, and off. Each runs in a fresh process, one
   after the other; CPU seconds per exam (process time), per-stage seconds from the records.
2. **Engines**: ``--engine-exams`` exams through the pipeline (local folders) with the process
   pool and with Ray Data, 2 workers each, full verification; CPU seconds by process role (the
   driver, the workers, everything else) to show where Ray's overhead goes.
3. **Recall** on ``--corpus`` exams over the three layouts (70 % with 2-6 issue-18 vectors, 30 %
   with hiding places) generated from ``--recall-seed``, through the process pool: planted
   identifiers found in the outputs (the tests' text/byte oracle and the OCR of the rendered
   outputs by the `tesseract` program), quarantine rate by reason, kept-field preservation on
   the exams that passed. Seed 18's corpus served development (its leaks were fixed), so the
   default is a seed the anonymiser was never fixed against.
4. **Memory**: peak RSS of a fresh worker after 2 and after all exams.
5. **Cost** per 1M exams at AWS Fargate ARM64 list prices, for the source's 8 vCPU / 16 GB task.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pymupdf

import medserve.ray_runtime  # noqa: F401 - before ray: no uv-run hook
from bench.heart_serving import machine_line, temp_dir
from medserve.anonymize.records import ExamRecord, QuarantineRecord, key_digest
from medserve.anonymize.settings import PipelineSettings
from medserve.anonymize.synthetic import LAYOUTS, SyntheticExam, generate_corpus

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "0cda2d6"  # main before issue 18: labelled values, two burnt regions, region OCR
SOURCE_PER_VCPU = 0.625  # exams/s per vCPU: 5 files/s on 8 vCPU
# AWS Fargate, Linux/ARM64, us-east-1 list prices (per hour); the source's task: 8 vCPU, 16 GB.
FARGATE_ARM_VCPU_HOUR = 0.03238
FARGATE_ARM_GB_HOUR = 0.00356
SOURCE_TASK = (8, 16)
SOURCE = {"files_per_second": 5.0, "usd_per_hour": 0.83}

# Runs in a fresh interpreter whose working directory holds the `medserve` package to measure:
# the same script drives the baseline's code and this tree's (their API is the same).
STAGE_SCRIPT = """
import json, pathlib, sys, time
from medserve.anonymize.anonymizer import Anonymizer
from medserve.anonymize.settings import AnonymizerSettings
anonymizer = Anonymizer(AnonymizerSettings())
paths = sorted(pathlib.Path(sys.argv[1]).glob("*.pdf"))
anonymizer.process(paths[0].read_bytes(), "warm-up")  # OCR control and imports off the clock
stages, reasons, ocr = {}, {}, 0
cpu, wall = time.process_time(), time.perf_counter()
results = [anonymizer.process(p.read_bytes(), p.name) for p in paths]
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
for result in results:
    record = getattr(result, "record", None)
    if record is None:
        reasons[result.reason] = reasons.get(result.reason, 0) + 1
        continue
    ocr += bool(getattr(record, "ocr_verified", True))
    for stage, seconds in record.seconds.model_dump().items():
        stages[stage] = stages.get(stage, 0.0) + seconds
done = max(1, len(paths) - sum(reasons.values()))
print(json.dumps({
    "cpu_per_exam": cpu / len(paths), "wall_per_exam": wall / len(paths),
    "stages": {k: v / done for k, v in stages.items()}, "quarantined": reasons, "ocr": ocr,
}))
"""

# VmHWM (peak resident set) of the process itself: ru_maxrss would carry over the parent's RSS.
MEMORY_SCRIPT = """
import sys, pathlib
from medserve.anonymize.anonymizer import Anonymizer
from medserve.anonymize.settings import AnonymizerSettings
anonymizer = Anonymizer(AnonymizerSettings())
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.pdf"))[: int(sys.argv[2])]:
    anonymizer.process(path.read_bytes(), path.name)
status = pathlib.Path("/proc/self/status").read_text().splitlines()
print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


@dataclass
class StageRun:
    label: str
    cpu_per_exam: float
    wall_per_exam: float
    stages: dict[str, float]
    quarantined: dict[str, int]
    ocr: int

    @property
    def per_core(self) -> float:
        return 1 / self.cpu_per_exam


def baseline_code(tmp: Path) -> Path:
    """The baseline commit's `medserve/` package, extracted (not checked out) into `tmp`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", BASELINE, "medserve"],
        capture_output=True,
        check=True,
    ).stdout
    target = tmp / f"baseline-{BASELINE}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def run_stages(label: str, code: Path, corpus: Path, env: dict[str, str]) -> StageRun:
    """The corpus anonymised sequentially in a fresh process running the package under `code`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDSERVE_ANON_")}
    result = subprocess.run(
        [sys.executable, "-c", STAGE_SCRIPT, str(corpus)],
        cwd=code,
        env={**clean, **env, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=True,
    )
    return StageRun(label, **json.loads(result.stdout.strip().splitlines()[-1]))


@dataclass
class EngineRun:
    engine: str
    workers: int
    exams: int
    files_per_second: float
    complete: bool
    cpu: dict[str, float]  # CPU seconds during the run by process role (see CpuByRole)


class CpuByRole:
    """CPU seconds of this process and all its descendants while a run goes on, by role: the
    driver (this process), the workers that ran exams, and everything else (Ray's raylet, GCS,
    Ray Data's actors, idle workers). Sampled every `interval` seconds: a process that exits
    between two samples loses its last interval."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.used: dict[int, tuple[str, float]] = {}
        self.start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _role(process: psutil.Process, me: int) -> str:
        if process.pid == me:
            return "driver"
        command = " ".join(process.cmdline())
        # Ray names a worker after its task; the pool's workers are the forkserver's children.
        if "MapBatches" in command or "multiprocessing.forkserver" in command:
            return "workers"
        return "other"

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        me = psutil.Process()
        seen: dict[int, tuple[str, float]] = {}
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
                role = self._role(process, me.pid)
            except psutil.Error:
                continue
            if role == "other" and self.used.get(process.pid, ("",))[0] == "workers":
                role = "workers"  # a Ray worker between two tasks is named IDLE
            seen[process.pid] = (role, times.user + times.system)
        return seen

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.used |= self._snapshot()

    def __enter__(self) -> CpuByRole:
        self.start = {pid: cpu for pid, (_, cpu) in self._snapshot().items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.used |= self._snapshot()

    def totals(self) -> dict[str, float]:
        totals = {"driver": 0.0, "workers": 0.0, "other": 0.0}
        for pid, (role, cpu) in self.used.items():
            totals[role] += cpu - self.start.get(pid, 0.0)
        return totals


def run_engine(engine: str, corpus: Path, out: Path, workers: int = 2) -> EngineRun:
    from medserve.anonymize.pipeline import run

    with CpuByRole() as cpu:
        manifest = run(
            str(corpus),
            str(out),
            engine=engine,  # type: ignore[arg-type]
            pipeline=PipelineSettings(workers=workers, files_per_block=2),
            progress=False,
        )
    return EngineRun(
        engine,
        workers,
        manifest.listed,
        manifest.files_per_second,
        manifest.complete,
        cpu.totals(),
    )


@dataclass
class Recall:
    seed: int
    exams: int
    planted: int
    found_text: int
    found_ocr: int
    exams_with_a_leak: int
    quarantined: Counter[str]
    passed: int
    kept_preserved: int
    kept_checked: int
    by_layout: dict[str, tuple[int, int]]  # layout -> (exams, quarantined)


def _check_output(args: tuple[SyntheticExam, bytes]) -> tuple[int, int, bool, int]:
    """(text/byte leaks, OCR leaks, kept fields all there, planted values) for one output."""
    from tests.anonymize_checks import leaks, ocr_leaks, pdf_from_zip, plain, planted_values

    exam, archive = args
    pdf = pdf_from_zip(archive)
    with pymupdf.open("pdf", pdf) as document:
        text = plain(document[0].get_text())
    kept = exam.kept
    wanted = [kept.exam_date, kept.exam_time, kept.sex, *kept.report_lines, *kept.measurements]
    preserved = all(plain(value) in text for value in wanted)
    return len(leaks(pdf, exam)), len(ocr_leaks(pdf, exam)), preserved, len(planted_values(exam))


def run_recall(exams: list[SyntheticExam], corpus: Path, out: Path, seed: int) -> Recall:
    from medserve.anonymize.pipeline import run

    run(
        str(corpus),
        str(out),
        engine="processpool",
        pipeline=PipelineSettings(workers=2, files_per_block=2),
        progress=False,
    )
    quarantined: Counter[str] = Counter()
    by_layout: dict[str, list[int]] = {layout: [0, 0] for layout in LAYOUTS}
    passed: list[tuple[SyntheticExam, bytes]] = []
    for index, exam in enumerate(exams):
        digest = key_digest(f"exam-{index:05d}.pdf")
        by_layout[exam.layout][0] += 1
        record = out / "records" / f"{digest}.json"
        if record.exists():
            ExamRecord.model_validate_json(record.read_text())
            passed.append((exam, (out / "exams" / f"{digest}.zip").read_bytes()))
        else:
            entry = QuarantineRecord.model_validate_json(
                (out / "quarantine" / f"{digest}.json").read_text()
            )
            quarantined[entry.reason] += 1
            by_layout[exam.layout][1] += 1
    with ProcessPoolExecutor(2) as pool:
        checks = list(pool.map(_check_output, passed, chunksize=4))
    from tests.anonymize_checks import planted_values

    return Recall(
        seed=seed,
        exams=len(exams),
        planted=sum(len(planted_values(e)) for e in exams),
        found_text=sum(c[0] for c in checks),
        found_ocr=sum(c[1] for c in checks),
        exams_with_a_leak=sum(1 for c in checks if c[0] or c[1]),
        quarantined=quarantined,
        passed=len(passed),
        kept_preserved=sum(1 for c in checks if c[2]),
        kept_checked=len(checks),
        by_layout={k: (v[0], v[1]) for k, v in by_layout.items()},
    )


def peak_rss_mib(corpus: Path, count: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(corpus), str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout.split()[-1]) / 1024


def cost_lines(files_per_second_per_core: float) -> list[str]:
    vcpu, gb = SOURCE_TASK
    hourly = vcpu * FARGATE_ARM_VCPU_HOUR + gb * FARGATE_ARM_GB_HOUR
    rows = [
        "| | files/s on 8 vCPU | hours per 1M | USD per 1M (list price) "
        "| USD per 1M (source's $0.83/h) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, rate in (
        ("source (measured there)", SOURCE["files_per_second"]),
        ("medserve, full verification (per-core rate here x 8)", files_per_second_per_core * vcpu),
    ):
        hours = 1e6 / rate / 3600
        rows.append(
            f"| {label} | {rate:.2f} | {hours:.1f} | {hours * hourly:.2f} | "
            f"{hours * SOURCE['usd_per_hour']:.2f} |"
        )
    rows.append(
        f"\nFargate ARM64 list price used: ${FARGATE_ARM_VCPU_HOUR}/vCPU-h + "
        f"${FARGATE_ARM_GB_HOUR}/GB-h = ${hourly:.3f}/h for 8 vCPU/16 GB (us-east-1)."
    )
    return rows


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def speed_lines(runs: list[StageRun]) -> list[str]:
    baseline, full, sampled = runs[0], runs[1], runs[2]
    lines = [
        "## Per exam, one core, source settings (450 DPI, RGB, q95, AA 8, ZIP 5)",
        "",
        "| anonymiser | CPU s/exam | exams/s per core | vs source (0.625/vCPU) "
        "| vs baseline CPU | OCR'd exams | quarantined |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.label} | {run.cpu_per_exam:.3f} | {run.per_core:.2f} | "
            f"{run.per_core / SOURCE_PER_VCPU:.2f}x | "
            f"{run.cpu_per_exam / baseline.cpu_per_exam:.2f}x | {run.ocr} | "
            f"{sum(run.quarantined.values())} |"
        )
    stages = sorted({s for run in runs for s in run.stages})
    lines += [
        "",
        "Seconds per exam by stage (wall time from the records, one thread: CPU time on a quiet "
        "core; on a shared machine their total can exceed the CPU column):",
        "",
        "| anonymiser | " + " | ".join(stages) + " | total |",
        "|---|" + "---:|" * (len(stages) + 1),
    ]
    for run in runs:
        values = [run.stages.get(s, 0.0) for s in stages]
        lines.append(
            f"| {run.label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {sum(values):.3f} |"
        )
    lines += [
        "",
        f"- full verification <= 1.5x the baseline's CPU per exam: "
        f"{_verdict(full.cpu_per_exam <= 1.5 * baseline.cpu_per_exam)} "
        f"({full.cpu_per_exam / baseline.cpu_per_exam:.2f}x)",
        f"- full verification >= 2x the source's 0.625 exams/s per vCPU: "
        f"{_verdict(full.per_core >= 2 * SOURCE_PER_VCPU)} ({full.per_core:.2f} exams/s)",
        f"- OCR sampling 0.1 no slower than the baseline: "
        f"{_verdict(sampled.cpu_per_exam <= baseline.cpu_per_exam)} "
        f"({sampled.cpu_per_exam:.3f} vs {baseline.cpu_per_exam:.3f} CPU s)",
    ]
    return lines


def engine_lines(engines: list[EngineRun]) -> list[str]:
    lines = [
        "## Engines (local folders, 2 workers, full verification)",
        "",
        "| engine | exams | files/s | per worker | complete | workers' CPU s/exam "
        "| driver CPU s | other processes' CPU s |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for run in engines:
        lines.append(
            f"| {run.engine} | {run.exams} | {run.files_per_second:.2f} | "
            f"{run.files_per_second / run.workers:.2f} | {run.complete} | "
            f"{run.cpu['workers'] / max(1, run.exams):.3f} | {run.cpu['driver']:.1f} | "
            f"{run.cpu['other']:.1f} |"
        )
    pool, ray = engines
    ratio = ray.files_per_second / pool.files_per_second if pool.files_per_second else 0.0
    return [
        *lines,
        "",
        "CPU by process role, sampled every 0.5 s: the driver is the benchmark process (listing, "
        "tallying, Ray Data's streaming executor), workers are the processes that ran exams, "
        "other is the rest (Ray's raylet and GCS, Ray Data's stats and autoscaling-coordinator "
        "actors, idle workers; the pool's forkserver).",
        "",
        f"- Ray Data >= 0.9x the process pool: {_verdict(ratio >= 0.9)} ({ratio:.2f}x)",
    ]


def recall_lines(recall: Recall) -> list[str]:
    known = recall.exams
    held = sum(recall.quarantined.values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(recall.quarantined.items())) or "none"
    layouts = ", ".join(f"{k} {q}/{n}" for k, (n, q) in recall.by_layout.items())
    return [
        f"## Recall ({recall.exams} exams, three layouts, every vector, seed {recall.seed})",
        "",
        "| planted identifier strings | found in outputs (text, objects, bytes) | found by OCR "
        "of the outputs | exams with any leak |",
        "|---:|---:|---:|---:|",
        f"| {recall.planted} | {recall.found_text} | {recall.found_ocr} | "
        f"{recall.exams_with_a_leak} |",
        "",
        f"- quarantined: {held} of {known} ({held / known:.1%}; by reason: {reasons}; "
        f"by layout: {layouts})",
        f"- kept fields (exam date, time, sex, report lines, measurements) all present on "
        f"{recall.kept_preserved} of {recall.kept_checked} exams that passed "
        f"({recall.kept_preserved / max(1, recall.kept_checked):.1%})",
        f"- targets: 0 found {_verdict(recall.found_text + recall.found_ocr == 0)}; "
        f"quarantine < 2 % {_verdict(held / known < 0.02)}; kept 100 % "
        f"{_verdict(recall.kept_preserved == recall.kept_checked)}",
    ]


def report(
    runs: list[StageRun],
    engines: list[EngineRun],
    recall: Recall | None,
    memory: dict[int, float],
    load: tuple[float, ...],
    exams: int,
) -> str:
    lines = [
        "# Anonymisation benchmark",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        machine_line(load),
        f"- MuPDF {pymupdf.VersionBind}, Python {sys.version.split()[0]}",
        f"- speed corpus: {exams} standard-layout exams (`medserve.anonymize.synthetic`, 30 % with "
        f"hiding places); baseline = commit {BASELINE}'s anonymiser run from an extracted copy",
        "",
        *speed_lines(runs),
        "",
        *engine_lines(engines),
        "",
        *(recall_lines(recall) if recall else ["## Recall: not run (--corpus 0)"]),
        "",
        "## Peak memory of one worker process (RSS, full verification, 450 DPI)",
        "",
        "| exams processed | peak RSS MiB |",
        "|---:|---:|",
        *[f"| {count} | {mib:.0f} |" for count, mib in memory.items()],
        "",
        "## Cost per 1M exams",
        "",
        *cost_lines(runs[1].per_core),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams", type=int, default=40, help="speed corpus (standard layout)")
    parser.add_argument("--engine-exams", type=int, default=200)
    parser.add_argument("--corpus", type=int, default=300, help="recall corpus (0: skip)")
    parser.add_argument("--recall-seed", type=int, default=1818)
    parser.add_argument("--out", type=Path, default=Path("bench/results/anonymize.md"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with temp_dir("bench-anonymize-", args.keep) as tmp:
        speed = tmp / "speed"
        generate_corpus(speed, args.exams, seed=2026, hidden_fraction=0.3)
        baseline = baseline_code(tmp)
        runs = []
        for label, code, env in (
            (f"baseline ({BASELINE})", baseline, {}),
            ("keep-only, OCR every exam", ROOT, {"MEDSERVE_ANON_OCR_SAMPLE": "1.0"}),
            ("keep-only, OCR 10 % of exams", ROOT, {"MEDSERVE_ANON_OCR_SAMPLE": "0.1"}),
            ("keep-only, OCR off", ROOT, {"MEDSERVE_ANON_OCR_SAMPLE": "0"}),
        ):
            runs.append(run_stages(label, code, speed, env))
            print(f"{label}: {runs[-1].cpu_per_exam:.3f} CPU s/exam", flush=True)
        memory = {count: peak_rss_mib(speed, count) for count in (2, args.exams)}
        engine_corpus = tmp / "engines"
        generate_corpus(engine_corpus, args.engine_exams, seed=2027, hidden_fraction=0.3)
        import ray

        ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
        engines = [
            run_engine(engine, engine_corpus, tmp / f"out-{engine}")
            for engine in ("processpool", "ray")
        ]
        ray.shutdown()
        print(engines, flush=True)
        recall = None
        if args.corpus:
            corpus = tmp / "recall"
            started = time.perf_counter()
            exams = generate_corpus(
                corpus, args.corpus, seed=args.recall_seed, hidden_fraction=0.3, layouts=LAYOUTS,
                vector_fraction=0.7,
            )  # fmt: skip
            recall = run_recall(exams, corpus, tmp / "out-recall", args.recall_seed)
            print(f"recall: {recall} ({time.perf_counter() - started:.0f} s)", flush=True)
        text = report(runs, engines, recall, memory, load, args.exams)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
