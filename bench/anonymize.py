"""ECG exam anonymisation throughput, stage costs, fidelity, memory and cost, in one run.

Usage: ``uv run python -m bench.anonymize [--exams 24] [--variant-exams 6] [--out FILE] [--keep]``.

One run generates a synthetic corpus (``medserve.anonymize.synthetic``; 30 % of exams carry extra
hiding places), then, one measurement at a time on this machine:

1. **Stages**: every exam anonymised in this process at the source's settings (450 DPI, RGB,
   JPEG q95, anti-aliasing 8, ZIP Deflate 5) with OCR verification on and off; CPU seconds per
   stage from each exam's record (single-threaded, so wall time is CPU time) and process CPU per
   exam. Files/s per core = 1 / CPU seconds per exam.
2. **Engines**: the whole corpus through the pipeline (local folders) with the process pool and
   with Ray Data, 1 and 2 workers each; Ray is started before the clock starts, pools are not.
3. **Variants**: grayscale, lower anti-aliasing, ZIP level 1 / stored, 300 and 600 DPI; seconds per
   exam and the fidelity of page 2 against a lossless render at the same DPI (PSNR, SSIM on
   luminance) next to the default's.
4. **Memory**: peak RSS of a fresh worker process anonymising 2 and then all exams at 450 and
   600 DPI (the peak must not grow with the number of exams).
5. **Cost** per 1M exams at AWS Fargate ARM64 list prices, computed like the source's table
   (hourly task price / exams per hour), for the source's 8 vCPU / 16 GB task.

Zero leaks are checked on every output with the tests' independent checker.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image

import medserve.ray_runtime  # noqa: F401 - before ray: no uv-run hook
from bench.heart_serving import machine_line, temp_dir
from medserve.anonymize.anonymizer import AnonymizedExam, Anonymizer
from medserve.anonymize.settings import AnonymizerSettings, PipelineSettings
from medserve.anonymize.synthetic import SyntheticExam, generate_corpus

# AWS Fargate, Linux/ARM64, us-east-1 list prices (per hour); the source's task: 8 vCPU, 16 GB.
FARGATE_ARM_VCPU_HOUR = 0.03238
FARGATE_ARM_GB_HOUR = 0.00356
SOURCE_TASK = (8, 16)
SOURCE = {"files_per_second": 5.0, "vcpu": 8, "usd_per_hour": 0.83}
DEFAULT = AnonymizerSettings()


@dataclass
class StageRun:
    label: str
    settings: AnonymizerSettings
    seconds_per_exam: float = 0.0
    cpu_per_exam: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    quarantined: int = 0
    leaks: int = 0
    psnr_db: float | None = None
    ssim: float | None = None
    output_bytes: float = 0.0


def _pdf(archive: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        return zipped.read(zipped.namelist()[0])


def _page_two_luma(pdf: bytes) -> np.ndarray:
    with pymupdf.open("pdf", pdf) as document:
        xref = document[1].get_images()[0][0]
        data = document.extract_image(xref)["image"]
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64)


def _reference_luma(exam: SyntheticExam, settings: AnonymizerSettings) -> np.ndarray:
    """Page 2 rendered losslessly at full anti-aliasing, regions burnt: the ideal output."""
    from medserve.anonymize.page_two import region_pixels

    with pymupdf.open("pdf", exam.pdf) as document:
        pymupdf.TOOLS.set_aa_level(8)
        pixmap = document[1].get_pixmap(dpi=settings.dpi, colorspace=pymupdf.csRGB, alpha=False)
    luma = np.asarray(
        Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples).convert("L"),
        dtype=np.float64,
    )
    for region in settings.page_two_regions:
        x0, y0, x1, y1 = region_pixels(region, settings.dpi / 72, (luma.shape[1], luma.shape[0]))
        luma[y0:y1, x0:x1] = 0
    return luma


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) with an 8x8 uniform window, on luminance."""
    from scipy.ndimage import uniform_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = uniform_filter(a, 8), uniform_filter(b, 8)
    var_a = uniform_filter(a * a, 8) - mu_a**2
    var_b = uniform_filter(b * b, 8) - mu_b**2
    cov = uniform_filter(a * b, 8) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def run_stages(run: StageRun, exams: list[SyntheticExam], fidelity: bool) -> StageRun:
    from tests.anonymize_checks import leaks

    anonymizer = Anonymizer(run.settings)
    anonymizer.process(exams[0].pdf, "warm-up")  # OCR control and imports outside the clock
    totals: dict[str, float] = {}
    sizes, psnrs, ssims = [], [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = []
    for index, exam in enumerate(exams):
        results.append(anonymizer.process(exam.pdf, f"exam-{index}"))
    run.cpu_per_exam = (time.process_time() - cpu0) / len(exams)
    run.seconds_per_exam = (time.perf_counter() - wall0) / len(exams)
    for exam, result in zip(exams, results, strict=True):
        if not isinstance(result, AnonymizedExam):
            run.quarantined += 1
            continue
        for stage, seconds in result.record.seconds.model_dump().items():
            totals[stage] = totals.get(stage, 0.0) + seconds
        pdf = _pdf(result.zip_bytes)
        run.leaks += len(leaks(pdf, exam))
        sizes.append(len(result.zip_bytes))
        if fidelity and not psnrs:  # one exam: the tracing layout is the same in all
            reference = _reference_luma(exam, run.settings)
            output = _page_two_luma(pdf)
            psnrs.append(psnr(reference, output))
            ssims.append(ssim(reference, output))
    done = max(1, len(exams) - run.quarantined)
    run.stages = {k: v / done for k, v in totals.items()}
    run.output_bytes = float(np.mean(sizes)) if sizes else 0.0
    if psnrs:
        run.psnr_db, run.ssim = float(np.mean(psnrs)), float(np.mean(ssims))
    return run


@dataclass
class EngineRun:
    engine: str
    workers: int
    files_per_second: float
    exams: int
    complete: bool


def run_engine(engine: str, workers: int, corpus: Path, out: Path) -> EngineRun:
    from medserve.anonymize.pipeline import run

    manifest = run(
        str(corpus),
        str(out),
        engine=engine,  # type: ignore[arg-type]
        pipeline=PipelineSettings(workers=workers, files_per_block=2),
        progress=False,
    )
    return EngineRun(engine, workers, manifest.files_per_second, manifest.listed, manifest.complete)


# VmHWM (peak resident set) of the process itself: ru_maxrss would carry over the parent's RSS
# from the fork before exec.
MEMORY_SCRIPT = """
import sys, pathlib
from medserve.anonymize.anonymizer import Anonymizer
from medserve.anonymize.settings import AnonymizerSettings
anonymizer = Anonymizer(AnonymizerSettings(dpi=int(sys.argv[1])))
for path in sorted(pathlib.Path(sys.argv[2]).glob("*.pdf"))[: int(sys.argv[3])]:
    anonymizer.process(path.read_bytes(), path.name)
status = pathlib.Path("/proc/self/status").read_text().splitlines()
print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def peak_rss_mib(dpi: int, corpus: Path, count: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(dpi), str(corpus), str(count)],
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
        ("medserve (per-core rate here x 8)", files_per_second_per_core * vcpu),
    ):
        hours = 1e6 / rate / 3600
        rows.append(
            f"| {label} | {rate:.2f} | {hours:.1f} | {hours * hourly:.2f} | "
            f"{hours * SOURCE['usd_per_hour']:.2f} |"
        )
    rows.append(
        f"\nFargate ARM64 list price used: ${FARGATE_ARM_VCPU_HOUR}/vCPU-h + "
        f"${FARGATE_ARM_GB_HOUR}/GB-h = ${hourly:.3f}/h for 8 vCPU/16 GB (us-east-1; check the "
        "current price page). The source reported $0.83/h for its task; both columns are shown."
    )
    return rows


def report(
    stage_runs: list[StageRun],
    engines: list[EngineRun],
    memory: dict[str, float],
    load: tuple[float, ...],
    corpus_size: int,
) -> str:
    base = stage_runs[0]
    per_core = 1 / base.cpu_per_exam
    lines = [
        "# Anonymisation benchmark",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        machine_line(load),
        f"- MuPDF {pymupdf.VersionBind}, Pillow {Image.__version__}, "
        f"Python {sys.version.split()[0]}",
        f"- corpus: {corpus_size} synthetic two-page exams (`medserve.anonymize.synthetic`, 30 % "
        "with extra hiding places); every output checked for leaks by the tests' checker",
        "",
        "## Per exam, one core, source settings (450 DPI, RGB, q95, AA 8, ZIP 5)",
        "",
        "| run | CPU s/exam | files/s per core | vs source (0.625/vCPU) | leaks | quarantined |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in stage_runs[:2]:
        rate = 1 / run.cpu_per_exam
        lines.append(
            f"| {run.label} | {run.cpu_per_exam:.3f} | {rate:.2f} | {rate / 0.625:.2f}x | "
            f"{run.leaks} | {run.quarantined} |"
        )
    stages = list(base.stages)
    lines += [
        "",
        "CPU seconds per exam by stage (default run):",
        "",
        "| " + " | ".join(stages) + " | total |",
        "|" + "---:|" * (len(stages) + 1),
        "| "
        + " | ".join(f"{base.stages[s]:.3f}" for s in stages)
        + f" | {sum(base.stages.values()):.3f} |",
        "",
        "## Engines (local folders, whole corpus, files/s)",
        "",
        "| engine | workers | files/s | per worker | scaling 1->2 | complete |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for run in engines:
        one = next(e for e in engines if e.engine == run.engine and e.workers == 1)
        scaling = run.files_per_second / one.files_per_second if one.files_per_second else 0
        lines.append(
            f"| {run.engine} | {run.workers} | {run.files_per_second:.2f} | "
            f"{run.files_per_second / run.workers:.2f} | {scaling:.2f}x | {run.complete} |"
        )
    lines += [
        "",
        "## Variants (one core; fidelity of page 2 vs a lossless AA-8 render at the same DPI)",
        "",
        "| variant | s/exam | files/s per core | output KB | PSNR dB | SSIM | leaks |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in stage_runs[:1] + stage_runs[2:]:
        fidelity = f"{run.psnr_db:.2f} | {run.ssim:.4f}" if run.psnr_db is not None else "n/a | n/a"
        lines.append(
            f"| {run.label} | {run.cpu_per_exam:.3f} | {1 / run.cpu_per_exam:.2f} | "
            f"{run.output_bytes / 1024:.0f} | {fidelity} | {run.leaks} |"
        )
    lines += [
        "",
        "## Peak memory of one worker process (RSS)",
        "",
        "| DPI | exams processed | peak RSS MiB |",
        "|---:|---:|---:|",
        *[f"| {k.split('/')[0]} | {k.split('/')[1]} | {v:.0f} |" for k, v in memory.items()],
        "",
        "## Cost per 1M exams",
        "",
        *cost_lines(per_core),
        "",
        f"Target: >= 2 files/s per core at the source's settings with zero leaks: "
        f"{'met' if per_core >= 2 and base.leaks == 0 else 'not met'} ({per_core:.2f}).",
    ]
    return "\n".join(lines) + "\n"


def variants() -> list[tuple[str, AnonymizerSettings]]:
    return [
        ("default (source settings, OCR on)", DEFAULT),
        ("default, OCR check off", AnonymizerSettings(ocr_check=False)),
        ("grayscale", AnonymizerSettings(colour_mode="gray")),
        ("anti-aliasing 4", AnonymizerSettings(anti_aliasing=4)),
        ("anti-aliasing 0", AnonymizerSettings(anti_aliasing=0)),
        ("ZIP level 1", AnonymizerSettings(zip_level=1)),
        ("ZIP stored (0)", AnonymizerSettings(zip_level=0)),
        (
            "grayscale, AA 4, ZIP 1, OCR off",
            AnonymizerSettings(colour_mode="gray", anti_aliasing=4, zip_level=1, ocr_check=False),
        ),
        ("300 DPI", AnonymizerSettings(dpi=300)),
        ("600 DPI", AnonymizerSettings(dpi=600)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams", type=int, default=24)
    parser.add_argument(
        "--variant-exams", type=int, default=0, help="exams per variant (0: all, comparable)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/anonymize.md"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with temp_dir("bench-anonymize-", args.keep) as tmp:
        corpus = tmp / "corpus"
        exams = generate_corpus(corpus, args.exams, seed=2026, hidden_fraction=0.3)
        print(f"corpus: {len(exams)} exams", flush=True)
        stage_runs = []
        for index, (label, settings) in enumerate(variants()):
            sample = exams[: args.variant_exams] if args.variant_exams else exams
            stage_runs.append(run_stages(StageRun(label, settings), sample, fidelity=index != 1))
            print(f"{label}: {stage_runs[-1].cpu_per_exam:.3f} CPU s/exam", flush=True)
        import ray

        ray.init(
            include_dashboard=False, log_to_driver=False, num_cpus=len(os.sched_getaffinity(0))
        )
        engines = []
        for engine in ("processpool", "ray"):
            for workers in (1, 2):
                engines.append(run_engine(engine, workers, corpus, tmp / f"out-{engine}-{workers}"))
                print(engines[-1], flush=True)
        ray.shutdown()
        memory = {}
        for dpi in (450, 600):
            for count in (2, args.exams):
                memory[f"{dpi}/{count}"] = peak_rss_mib(dpi, corpus, count)
        text = report(stage_runs, engines, memory, load, len(exams))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
