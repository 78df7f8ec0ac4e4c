"""The anonymisation run: list exams, shard them over CPU workers, write outputs and a manifest.

Two engines share everything but the scheduling: Ray Data (local Ray, or a cluster via KubeRay) and
a plain process pool (the source system's design, kept as the baseline the benchmark compares).

Output layout under the output prefix, all named by the SHA-256 of the input key:
    exams/<sha>.zip         the anonymised PDF, with S3 user metadata
    records/<sha>.json      its ExamRecord; written last, so its presence means "done"
    quarantine/<sha>.json   a QuarantineRecord for an exam that did not pass
    runs/<ulid>.json        one RunManifest per run
A re-run skips exams with a record (or a quarantine entry unless asked to retry them), so runs are
idempotent and a crashed run resumes where it stopped; names are deterministic, so nothing is
duplicated.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from ulid import ULID

from medserve.anonymize.anonymizer import (
    AnonymizedExam,
    Anonymizer,
    EnvironmentRefused,
    preflight,
    quarantine_record,
)
from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.isolation import IsolatedAnonymizer
from medserve.anonymize.metrics import RunMetrics
from medserve.anonymize.records import StageSeconds, key_digest, utc_now
from medserve.anonymize.settings import AnonymizerSettings, PipelineSettings
from medserve.object_store import ObjectStore, StoredObject, is_s3, open_store
from medserve.ray_runtime import connect
from medserve.settings import Settings

Engine = Literal["ray", "processpool"]
Status = Literal["anonymized", "quarantined", "skipped", "failed"]


def exam_key(digest: str) -> str:
    return f"exams/{digest}.zip"


def record_key(digest: str) -> str:
    return f"records/{digest}.json"


def quarantine_key(digest: str) -> str:
    return f"quarantine/{digest}.json"


class ExamOutcome(BaseModel):
    """What happened to one input in this run."""

    input_key_sha256: str
    status: Status
    reason: str | None = None
    input_bytes: int = 0
    output_bytes: int = 0
    seconds: StageSeconds | None = None


class BlockJob(BaseModel):
    """A block of exams for one worker, with everything it needs to open the stores itself."""

    input_uri: str
    output_uri: str
    retry_quarantined: bool
    anonymizer: AnonymizerSettings
    pipeline: PipelineSettings
    platform: Settings
    objects: list[tuple[str, int]] = []


class RunManifest(BaseModel):
    """The summary of one run, written to `runs/<ulid>.json` and printed at the end."""

    run_ulid: str
    engine: Engine
    workers: int
    input_uri: str
    output_uri: str
    started_at: AwareDatetime
    finished_at: AwareDatetime
    listed: int
    anonymized: int
    quarantined: int
    skipped: int
    failed: int
    quarantine_reasons: dict[str, int]
    elapsed_seconds: float
    files_per_second: float
    mean_stage_seconds: dict[str, float]
    anonymizer_settings: dict[str, Any]
    manifest_written: bool = True

    @property
    def complete(self) -> bool:
        """Every listed input is now an output, a quarantine entry, or was done before."""
        done = self.anonymized + self.quarantined + self.skipped
        return self.failed == 0 and self.listed == done and self.manifest_written


# --------------------------------------------------------------------------- one worker's side

_WORKER_STATE: dict[str, tuple[IsolatedAnonymizer, ObjectStore, ObjectStore]] = {}


def _worker_state(job: BlockJob) -> tuple[IsolatedAnonymizer, ObjectStore, ObjectStore]:
    """The anonymiser and stores of this worker process, built once per distinct job config.

    Exams run in the anonymiser's child process (isolation.py): a stuck or memory-hungry exam
    costs that child, never this worker."""
    config = job.model_dump_json(exclude={"objects"})
    if config not in _WORKER_STATE:
        for anonymizer, _, _ in _WORKER_STATE.values():  # one exam process per worker at most
            anonymizer.close()
        _WORKER_STATE.clear()
        source, sink = open_stores(job)
        _WORKER_STATE[config] = (IsolatedAnonymizer(job.anonymizer), source, sink)
    return _WORKER_STATE[config]


def open_stores(job: BlockJob) -> tuple[ObjectStore, ObjectStore]:
    """The input and output stores of a job, with the pipeline's retry and paging settings."""
    source, sink = (
        open_store(
            uri,
            job.platform,
            max_attempts=job.pipeline.s3_max_attempts,
            read_timeout_seconds=job.pipeline.s3_read_timeout_seconds,
            page_size=job.pipeline.list_page_size,
        )
        for uri in (job.input_uri, job.output_uri)
    )
    return source, sink


def _storage_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, OSError)


def s3_metadata(exam: AnonymizedExam) -> dict[str, str]:
    """The S3 user metadata stored on each output ZIP (ASCII strings only)."""
    record = exam.record
    return {
        "ulid": record.ulid,
        "input-key-sha256": record.input_key_sha256,
        "original-size-bytes": str(record.original_size_bytes),
        "output-size-bytes": str(record.output_size_bytes),
        "compression-ratio": f"{record.compression_ratio:.4f}",
        "dpi": str(record.dpi),
        "anonymizer-version": record.anonymizer_version,
        "verification": "passed" if record.verification.passed else "failed",
    }


def process_exam(
    anonymizer: Anonymizer | IsolatedAnonymizer,
    source: ObjectStore,
    sink: ObjectStore,
    item: StoredObject,
    retry_quarantined: bool,
) -> ExamOutcome:
    """Anonymise one input unless it is done already; storage errors leave it for a re-run."""
    digest = key_digest(item.key)
    try:
        if sink.exists(record_key(digest)):
            return ExamOutcome(input_key_sha256=digest, status="skipped", input_bytes=item.size)
        quarantined_before = sink.exists(quarantine_key(digest))
        if quarantined_before and not retry_quarantined:
            return ExamOutcome(input_key_sha256=digest, status="skipped", input_bytes=item.size)
        try:
            anonymizer.check_size(item.size)  # before reading: a huge object is never fetched
            result = anonymizer.process(source.read(item.key), item.key)
        except ExamRejected as rejection:
            result = anonymizer.quarantine(item.key, item.size, rejection)
        if isinstance(result, AnonymizedExam):
            sink.write(exam_key(digest), result.zip_bytes, s3_metadata(result))
            sink.write(record_key(digest), result.record.model_dump_json(indent=1).encode())
            if quarantined_before:
                sink.delete(quarantine_key(digest))
            return ExamOutcome(
                input_key_sha256=digest,
                status="anonymized",
                input_bytes=item.size,
                output_bytes=result.record.output_size_bytes,
                seconds=result.record.seconds,
            )
        sink.write(quarantine_key(digest), result.model_dump_json(indent=1).encode())
        return ExamOutcome(
            input_key_sha256=digest,
            status="quarantined",
            reason=result.reason,
            input_bytes=item.size,
        )
    except _storage_errors() as error:
        return ExamOutcome(
            input_key_sha256=digest,
            status="failed",
            reason=type(error).__name__,
            input_bytes=item.size,
        )


def process_block(job: BlockJob) -> list[ExamOutcome]:
    """Process a block of exams in this worker (the unit both engines schedule)."""
    anonymizer, source, sink = _worker_state(job)
    return [
        process_exam(anonymizer, source, sink, StoredObject(key, size), job.retry_quarantined)
        for key, size in job.objects
    ]


# --------------------------------------------------------------------------- scheduling


def chunks(items: Iterable[StoredObject], size: int) -> Iterator[list[StoredObject]]:
    """Consecutive lists of at most `size` items, pulled lazily from `items`."""
    chunk: list[StoredObject] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ray_block(batch: dict[str, Any], template: BlockJob) -> dict[str, Any]:
    import numpy as np

    objects = [(str(k), int(s)) for k, s in zip(batch["key"], batch["size"], strict=True)]
    outcomes = guarded_block(template.model_copy(update={"objects": objects}))
    return {"outcome": np.array([o.model_dump_json() for o in outcomes], dtype=object)}


def guarded_block(job: BlockJob) -> list[ExamOutcome]:
    """`process_block`, an unforeseen error failing the block's exams (left for a re-run, the
    run exits 1) instead of the task: only a worker's death makes a block go missing, so a
    missing block means `worker_died`, never a bug or a configuration error."""
    try:
        return process_block(job)
    except Exception as error:
        return [
            ExamOutcome(
                input_key_sha256=key_digest(key),
                status="failed",
                reason=type(error).__name__,
                input_bytes=size,
            )
            for key, size in job.objects
        ]


def lost_block(
    template: BlockJob, sink: ObjectStore, objects: list[tuple[str, int]], deaths: int
) -> list[ExamOutcome]:
    """The exams of a block whose worker died `deaths` times (more than `worker_retries`):
    quarantined as `worker_died` by the driver, unless a record shows an exam was finished
    before its worker went (then it is done: skipped)."""
    outcomes = []
    for key, size in objects:
        digest = key_digest(key)
        try:
            if sink.exists(record_key(digest)):
                outcomes.append(ExamOutcome(input_key_sha256=digest, status="skipped"))
                continue
            rejection = ExamRejected("worker_died", f"its worker died {deaths} times")
            entry = quarantine_record(key, size, rejection)
            sink.write(quarantine_key(digest), entry.model_dump_json(indent=1).encode())
            outcomes.append(
                ExamOutcome(
                    input_key_sha256=digest,
                    status="quarantined",
                    reason="worker_died",
                    input_bytes=size,
                )
            )
        except _storage_errors() as error:
            outcomes.append(
                ExamOutcome(input_key_sha256=digest, status="failed", reason=type(error).__name__)
            )
    return outcomes


def run_ray(template: BlockJob, listing: Iterator[StoredObject]) -> Iterator[ExamOutcome]:
    """Ray Data: each listing window becomes a dataset mapped in blocks over the CPU workers.

    A task whose worker dies is retried `worker_retries` times (Ray Data's default is forever,
    which stalls a run on an exam that kills every worker); a block still failing is dropped
    by Ray Data (`max_errored_blocks=-1`) and its exams, missing from the answers, are
    quarantined as `worker_died` here."""
    import ray

    connect(log_to_driver=False, forward_environment=True)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is the progress bar
    context.print_on_execution_start = False
    context.max_errored_blocks = -1
    pipeline = template.pipeline
    _, sink = open_stores(template)
    for window in chunks(listing, pipeline.listing_window):
        items = [{"key": item.key, "size": item.size} for item in window]
        blocks = max(1, math.ceil(len(items) / pipeline.files_per_block))
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            _ray_block,
            batch_size=pipeline.files_per_block,
            fn_kwargs={"template": template},
            num_cpus=1,
            # Tasks, not actors: our per-process cache keeps the set-up cost to once per worker.
            compute=ray.data.TaskPoolStrategy(size=pipeline.workers),
            max_retries=pipeline.worker_retries,
        )
        answered: set[str] = set()
        for row in dataset.iter_rows():
            outcome = ExamOutcome.model_validate_json(row["outcome"])
            answered.add(outcome.input_key_sha256)
            yield outcome
        lost = [(i.key, i.size) for i in window if key_digest(i.key) not in answered]
        if lost:
            yield from lost_block(template, sink, lost, pipeline.worker_retries + 1)


def _pool(template: BlockJob, workers: int) -> ProcessPoolExecutor:
    # forkserver: forking a process that holds boto3/Ray threads is unsafe.
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _run_alone(
    template: BlockJob, sink: ObjectStore, objects: list[tuple[str, int]]
) -> list[ExamOutcome]:
    """A block whose pool broke, re-run in a pool of its own: a death there is its own."""
    job = template.model_copy(update={"objects": objects})
    deaths = 0
    while deaths <= template.pipeline.worker_retries:
        with _pool(template, 1) as solo:
            try:
                return solo.submit(guarded_block, job).result()
            except BrokenProcessPool:
                deaths += 1
    return lost_block(template, sink, objects, deaths)


def run_process_pool(template: BlockJob, listing: Iterator[StoredObject]) -> Iterator[ExamOutcome]:
    """A process pool fed a bounded number of blocks ahead, as the source system ran.

    A dead worker breaks the whole pool (every block in flight fails, and which one killed it is
    unknown), so the blocks in flight are re-run one at a time in pools of their own, where each
    death counts against that block's `worker_retries`; then a fresh pool carries on."""
    pipeline = template.pipeline
    _, sink = open_stores(template)
    pool = _pool(template, pipeline.workers)
    pending: dict[Future[list[ExamOutcome]], list[tuple[str, int]]] = {}

    def harvest(
        done: Iterable[Future[list[ExamOutcome]]], renew: bool = False
    ) -> Iterator[ExamOutcome]:
        nonlocal pool
        broken: list[list[tuple[str, int]]] = []
        for future in done:
            objects = pending.pop(future)
            try:
                yield from future.result()
            except BrokenProcessPool:
                broken.append(objects)
        if broken or renew:  # the others in flight fail alike: collect, then re-run each alone
            for future in list(pending):
                objects = pending.pop(future)
                try:
                    yield from future.result()
                except BrokenProcessPool:
                    broken.append(objects)
            pool.shutdown(wait=True, cancel_futures=True)
            for objects in broken:
                yield from _run_alone(template, sink, objects)
            pool = _pool(template, pipeline.workers)

    try:
        for block in chunks(listing, pipeline.files_per_block):
            if len(pending) >= 2 * pipeline.workers:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                yield from harvest(done)
            objects = [(item.key, item.size) for item in block]
            job = template.model_copy(update={"objects": objects})
            try:
                future = pool.submit(guarded_block, job)
            except BrokenProcessPool:  # a worker died since the last harvest
                yield from harvest(list(pending), renew=True)
                future = pool.submit(guarded_block, job)
            pending[future] = objects
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            yield from harvest(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


ENGINES = {"ray": run_ray, "processpool": run_process_pool}


# --------------------------------------------------------------------------- the run


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.2f} files/s", style="cyan")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]anonymising"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("quarantined {task.fields[quarantined]}, skipped {task.fields[skipped]}"),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


class RunRefused(ValueError):
    """The run cannot start (a clear message for the operator, nothing processed)."""


def _comparable(uri: str) -> str:
    return (uri if is_s3(uri) else str(Path(uri).resolve())).rstrip("/") + "/"


def _check_locations(input_uri: str, output_uri: str, source: ObjectStore) -> None:
    a, b = _comparable(input_uri), _comparable(output_uri)
    if a.startswith(b) or b.startswith(a):
        raise RunRefused("input and output must not contain one another")
    if not source.reachable():
        raise RunRefused(f"input {input_uri} does not exist or is not accessible")


def run(
    input_uri: str,
    output_uri: str,
    *,
    engine: Engine = "ray",
    retry_quarantined: bool = False,
    anonymizer: AnonymizerSettings | None = None,
    pipeline: PipelineSettings | None = None,
    platform: Settings | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> RunManifest:
    """Anonymise every exam under `input_uri` into `output_uri`; returns the run manifest."""
    anonymizer = anonymizer or AnonymizerSettings()
    pipeline = pipeline or PipelineSettings()
    platform = platform or Settings()
    console = console or Console(stderr=True)
    template = BlockJob(
        input_uri=input_uri,
        output_uri=output_uri,
        retry_quarantined=retry_quarantined,
        anonymizer=anonymizer,
        pipeline=pipeline,
        platform=platform,
    )
    try:
        preflight(anonymizer)  # profiles load and OCR reads its control, or nothing starts
    except EnvironmentRefused as refusal:
        raise RunRefused(str(refusal)) from None
    source, sink = open_stores(template)
    _check_locations(input_uri, output_uri, source)
    started = utc_now()
    # A counting pass (streamed, nothing kept) gives the progress bar its total and ETA.
    total = sum(1 for _ in source.list(pipeline.input_suffix))
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    stage_totals: Counter[str] = Counter()
    metrics = RunMetrics(
        pipeline.pushgateway_url,
        output_uri,
        listed=total,
        interval_seconds=pipeline.push_interval_seconds,
    )
    with _progress(console, progress) as bar, metrics:
        task = bar.add_task("exams", total=total, quarantined=0, skipped=0, failed=0)
        outcomes = ENGINES[engine](template, source.list(pipeline.input_suffix))
        for outcome in outcomes:
            metrics.observe(outcome.status, outcome.reason)
            counts[outcome.status] += 1
            if outcome.status == "quarantined" and outcome.reason:
                reasons[outcome.reason] += 1
            if outcome.seconds is not None:
                stage_totals.update(outcome.seconds.model_dump())
            bar.update(
                task,
                advance=1,
                quarantined=counts["quarantined"],
                skipped=counts["skipped"],
                failed=counts["failed"],
            )
    finished = utc_now()
    manifest = _manifest(
        template, engine, started, finished, sum(counts.values()), counts, reasons, stage_totals
    )
    try:
        sink.write(f"runs/{manifest.run_ulid}.json", manifest.model_dump_json(indent=1).encode())
    except _storage_errors() as error:
        # The exams' own records are what a re-run relies on; the manifest is a report.
        console.print(f"[red]run manifest not written[/]: {type(error).__name__}")
        manifest.manifest_written = False
    return manifest


def _manifest(
    template: BlockJob,
    engine: Engine,
    started: datetime,
    finished: datetime,
    listed: int,
    counts: Counter[str],
    reasons: Counter[str],
    stage_totals: Counter[str],
) -> RunManifest:
    elapsed = (finished - started).total_seconds()
    processed = counts["anonymized"] + counts["quarantined"]
    anonymized = max(1, counts["anonymized"])
    return RunManifest(
        run_ulid=str(ULID()),
        engine=engine,
        workers=template.pipeline.workers,
        input_uri=template.input_uri,
        output_uri=template.output_uri,
        started_at=started,
        finished_at=finished,
        listed=listed,
        anonymized=counts["anonymized"],
        quarantined=counts["quarantined"],
        skipped=counts["skipped"],
        failed=counts["failed"],
        quarantine_reasons=dict(reasons),
        elapsed_seconds=round(elapsed, 3),
        files_per_second=round(processed / elapsed, 3) if elapsed > 0 else 0.0,
        mean_stage_seconds={k: round(v / anonymized, 4) for k, v in stage_totals.items()},
        anonymizer_settings=template.anonymizer.model_dump(mode="json"),
    )
