"""The anonymisation pipeline end to end: local folders (the embedded default), a real
S3-protocol server (SeaweedFS), S3 faults (moto behind a fault-injecting proxy), re-runs, a killed
driver and a killed Ray worker. Exams run at 300 DPI without OCR here to keep CI short."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from medserve.anonymize.records import ExamRecord, QuarantineRecord, key_digest
from medserve.anonymize.synthetic import SyntheticExam, generate_corpus, write_bad_inputs
from tests.anonymize_checks import leaks, pdf_from_zip, plain
from tests.conftest import RayHead
from tests.s3_faults import FaultyS3Proxy, moto_s3
from tests.servers import S3Server, seaweedfs_s3

# The pipeline's mechanics are under test here; the verifier's OCR (half an exam's CPU) is tested
# in test_anonymize_core / _verifier / _corpus, so these runs sample none of it.
FAST_ENV = {
    "MEDSERVE_ANON_DPI": "300",
    "MEDSERVE_ANON_FILES_PER_BLOCK": "2",
    "MEDSERVE_ANON_OCR_SAMPLE": "0",
}
IN_BUCKET, OUT_BUCKET = "exams-in", "exams-out"


class Corpus:
    """Generated exams under patient-named keys (as real archives have), plus bad inputs."""

    def __init__(self, root: Path, count: int, seed: int) -> None:
        self.root = root
        flat = root / "flat"
        exams = generate_corpus(flat, count, seed=seed, hidden_fraction=0.5)
        self.exams: dict[str, SyntheticExam] = {}
        for index, exam in enumerate(exams):
            key = f"2024/{exam.identifiers.name}/ecg-{index:03d}.pdf"
            target = root / "in" / key
            target.parent.mkdir(parents=True, exist_ok=True)
            (flat / f"exam-{index:05d}.pdf").rename(target)
            self.exams[key] = exam
        self.bad = {f"bad/{n}": r for n, r in write_bad_inputs(root / "in" / "bad").items()}

    @property
    def keys(self) -> list[str]:
        return sorted([*self.exams, *self.bad])

    def secrets(self) -> list[str]:
        """Strings that must never appear in logs, keys or records: names and numbers."""
        values = set()
        for exam in self.exams.values():
            values |= {exam.identifiers.name, exam.identifiers.cpf, exam.identifiers.rg}
        return sorted(values)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"), count=8, seed=500)


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **FAST_ENV, **env),
    )


def ray_job(
    input_uri: str, output_uri: str, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        [
            sys.executable,
            "-m",
            "ray_jobs.anonymize",
            input_uri,
            output_uri,
            "--no-progress",
            *extra,
        ],
        env,
    )


def manifest_of(result: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_no_secrets(text: str, corpus: Corpus) -> None:
    folded = plain(text)
    found = [i for i, s in enumerate(corpus.secrets()) if plain(s) in folded]
    assert found == [], f"patient data (secret #{found}) in logs, keys or records"


class Output:
    """An output location read back, wherever it is."""

    def __init__(
        self, files: dict[str, bytes], metadata: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.files = files
        self.metadata = metadata or {}

    @classmethod
    def from_folder(cls, root: Path) -> Output:
        return cls(
            {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        )

    @classmethod
    def from_bucket(cls, client, bucket: str) -> Output:
        files, metadata = {}, {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                answer = client.get_object(Bucket=bucket, Key=item["Key"])
                files[item["Key"]] = answer["Body"].read()
                metadata[item["Key"]] = answer["Metadata"]
        return cls(files, metadata)

    def without_prefix(self, prefix: str) -> Output:
        return Output(
            {k.removeprefix(prefix): v for k, v in self.files.items()},
            {k.removeprefix(prefix): v for k, v in self.metadata.items()},
        )

    def under(self, folder: str) -> dict[str, bytes]:
        return {k: v for k, v in self.files.items() if k.startswith(folder + "/")}


def check_output(output: Output, corpus: Corpus) -> None:
    """inputs = outputs + quarantined, right reasons, zero leaks, nothing identifying in names."""
    exams, records, quarantine = (
        output.under("exams"),
        output.under("records"),
        output.under("quarantine"),
    )
    assert len(exams) == len(records) == len(corpus.exams)
    assert len(quarantine) == len(corpus.bad)
    assert len(exams) + len(quarantine) == len(corpus.keys)
    for key, exam in corpus.exams.items():
        digest = key_digest(key)
        record = ExamRecord.model_validate_json(output.files[f"records/{digest}.json"])
        assert record.verification.passed and record.dpi == 300
        archive = output.files[f"exams/{digest}.zip"]
        assert record.output_size_bytes == len(archive)
        assert leaks(pdf_from_zip(archive), exam) == []
        if output.metadata:
            metadata = output.metadata[f"exams/{digest}.zip"]
            assert metadata["ulid"] == record.ulid
            assert int(metadata["original-size-bytes"]) == record.original_size_bytes
            assert metadata["verification"] == "passed" and metadata["dpi"] == "300"
    reasons = Counter(
        QuarantineRecord.model_validate_json(body).reason for body in quarantine.values()
    )
    assert reasons == Counter(corpus.bad.values())
    readable = [k for k in output.files if not k.startswith("exams/")]
    assert_no_secrets(
        "\n".join([*output.files] + [output.files[k].decode() for k in readable]), corpus
    )


# --------------------------------------------------------------------------- local folders


def test_ray_pipeline_over_local_folders_is_complete_and_idempotent(
    corpus: Corpus, ray_head: RayHead, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = ray_job(str(corpus.root / "in"), str(out), ray_head.env())
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = manifest_of(first)
    assert (manifest["listed"], manifest["anonymized"], manifest["quarantined"]) == (
        len(corpus.keys), len(corpus.exams), len(corpus.bad),
    )  # fmt: skip
    check_output(Output.from_folder(out), corpus)
    assert_no_secrets(first.stdout + first.stderr, corpus)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if "runs" not in p.parts}

    again = ray_job(str(corpus.root / "in"), str(out), ray_head.env())
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = manifest_of(again)
    assert (rerun["skipped"], rerun["anonymized"], rerun["quarantined"]) == (len(corpus.keys), 0, 0)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if "runs" not in p.parts}
    assert after == before  # nothing rewritten, nothing added
    assert len(list((out / "runs").iterdir())) == 2


def test_process_pool_engine_and_cli_progress(corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        [
            sys.executable,
            "-m",
            "medserve.cli",
            "anonymize",
            str(corpus.root / "in"),
            str(out),
            "--engine",
            "processpool",
        ],
        {"COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"{len(corpus.keys)} listed: {len(corpus.exams)} anonymised, {len(corpus.bad)} quarantined"
        in result.stderr
    )
    assert "files/s" in result.stderr
    check_output(Output.from_folder(out), corpus)
    assert_no_secrets(result.stdout + result.stderr, corpus)


def test_anonymize_file_cli(corpus: Corpus, tmp_path: Path) -> None:
    key, exam = next(iter(corpus.exams.items()))
    target = tmp_path / "one.zip"
    result = run_cli(
        [
            sys.executable,
            "-m",
            "medserve.cli",
            "anonymize-file",
            str(corpus.root / "in" / key),
            str(target),
        ],
        {},
    )
    assert result.returncode == 0, result.stderr
    assert leaks(pdf_from_zip(target.read_bytes()), exam) == []
    assert ExamRecord.model_validate_json(
        (tmp_path / "one.zip.json").read_text()
    ).verification.passed
    bad = next(k for k, r in corpus.bad.items() if r == "encrypted")
    refused = run_cli(
        [
            sys.executable,
            "-m",
            "medserve.cli",
            "anonymize-file",
            str(corpus.root / "in" / bad),
            str(tmp_path / "bad.zip"),
        ],
        {},
    )
    assert refused.returncode == 2 and "encrypted" in refused.stderr
    assert not (tmp_path / "bad.zip").exists()


# --------------------------------------------------------------------------- S3 (SeaweedFS)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


def s3_env(endpoint_url: str, access_key: str, secret_key: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MEDSERVE_S3_ENDPOINT_URL": endpoint_url,
        **extra,
    }


def upload(client, bucket: str, corpus: Corpus) -> None:
    client.create_bucket(Bucket=bucket)
    for key in corpus.keys:
        client.put_object(
            Bucket=bucket, Key=f"2024-batch/{key}", Body=(corpus.root / "in" / key).read_bytes()
        )


def test_ray_pipeline_bucket_to_bucket(corpus: Corpus, s3: S3Server, ray_head: RayHead) -> None:
    client = s3.client()
    upload(client, IN_BUCKET, corpus)
    client.create_bucket(Bucket=OUT_BUCKET)
    env = {
        **ray_head.env(),
        **s3_env(s3.endpoint_url, s3.access_key, s3.secret_key, MEDSERVE_ANON_LIST_PAGE_SIZE="3"),
    }
    source, target = f"s3://{IN_BUCKET}/2024-batch", f"s3://{OUT_BUCKET}/anonymised"
    first = ray_job(source, target, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert manifest_of(first)["listed"] == len(corpus.keys)  # listed over 3-key pages
    output = Output.from_bucket(client, OUT_BUCKET)
    check_output(output.without_prefix("anonymised/"), corpus)
    assert_no_secrets(first.stdout + first.stderr, corpus)

    again = ray_job(source, target, env)
    assert again.returncode == 0 and manifest_of(again)["skipped"] == len(corpus.keys)
    assert len(Output.from_bucket(client, OUT_BUCKET).files) == len(output.files) + 1  # a manifest


def _records_in(folder: Path) -> int:
    return len(list((folder / "records").glob("*.json"))) if (folder / "records").is_dir() else 0


def start_driver(corpus: Corpus, out: Path, ray_head: RayHead, **popen: object) -> subprocess.Popen:
    """The Ray job's driver in the background, one exam per block so a run has many tasks."""
    args = [
        sys.executable,
        "-m",
        "ray_jobs.anonymize",
        str(corpus.root / "in"),
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, **FAST_ENV, **ray_head.env(), "MEDSERVE_ANON_FILES_PER_BLOCK": "1"}
    return subprocess.Popen(args, env=env, **popen)  # type: ignore[call-overload]


def test_killed_driver_run_resumes_without_duplicates(ray_head: RayHead, tmp_path: Path) -> None:
    big = Corpus(tmp_path / "big", count=14, seed=900)
    out = tmp_path / "out"
    driver = start_driver(
        big,
        out,
        ray_head,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while _records_in(out) < 3 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the whole driver, mid-run
    driver.wait()
    done_before = _records_in(out)
    assert 3 <= done_before < len(big.exams), "the kill should land mid-run"

    resumed = ray_job(str(big.root / "in"), str(out), ray_head.env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = manifest_of(resumed)
    assert manifest["skipped"] >= done_before
    assert manifest["skipped"] + manifest["anonymized"] + manifest["quarantined"] == len(big.keys)
    check_output(Output.from_folder(out), big)  # every exam exactly once


def _anonymising_workers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "ray::" in cmdline and "MapBatches" in cmdline:
            found.append(process)
    return found


def test_killed_ray_worker_is_retried_and_nothing_is_lost(
    ray_head: RayHead, tmp_path: Path
) -> None:
    small = Corpus(tmp_path / "small", count=10, seed=700)
    out = tmp_path / "out"
    driver = start_driver(
        small, out, ray_head, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = 0
    deadline = time.monotonic() + 300
    while not killed and time.monotonic() < deadline and driver.poll() is None:
        if _records_in(out) >= 2:
            for worker in _anonymising_workers()[:1]:
                worker.kill()
                killed += 1
        time.sleep(0.1)
    stdout, stderr = driver.communicate(timeout=600)
    assert killed == 1, "no anonymising Ray worker was found to kill"
    assert driver.returncode == 0, stderr[-3000:]
    manifest = json.loads(stdout.strip().splitlines()[-1])
    assert manifest["anonymized"] + manifest["quarantined"] == len(small.keys)
    check_output(Output.from_folder(out), small)


def keep_killing(find: Any, driver: subprocess.Popen, deadline_s: float = 420) -> int:
    """SIGKILL every worker `find` returns until the driver ends: a worker that always dies
    (the kernel killing it, a node lost). Returns how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + deadline_s
    while driver.poll() is None and time.monotonic() < deadline:
        for worker in find():
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
                killed.add(worker.pid)
        time.sleep(0.05)
    return len(killed)


def check_worker_died(manifest: dict, out: Path, corpus: Corpus, killed: int) -> None:
    """The run ended: every input accounted for, the lost ones quarantined as `worker_died`."""
    retries = 1
    counts = {k: manifest[k] for k in ("listed", "anonymized", "quarantined", "skipped", "failed")}
    print(f"killed {killed} workers; {counts}, reasons {manifest['quarantine_reasons']}")
    assert killed >= retries + 1, "no block was seen dying twice"
    lost = manifest["quarantine_reasons"].get("worker_died", 0)
    assert lost >= 1
    assert manifest["anonymized"] + manifest["quarantined"] + manifest["skipped"] == len(
        corpus.keys
    )
    entries = [
        QuarantineRecord.model_validate_json(p.read_bytes())
        for p in (out / "quarantine").glob("*.json")
    ]
    died = [e for e in entries if e.reason == "worker_died"]
    assert len(died) == lost and all("died 2 times" in e.detail for e in died)
    # A lost exam is quarantined, never both quarantined and output.
    records = (
        {p.stem for p in (out / "records").glob("*.json")} if (out / "records").is_dir() else set()
    )
    assert not records & {e.input_key_sha256 for e in died}


def test_a_ray_worker_that_keeps_dying_is_retried_a_bounded_number_of_times(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """Before issue 19 Ray retried such a task forever and the run never ended."""
    small = Corpus(tmp_path / "small", count=2, seed=710)
    out = tmp_path / "out"
    env = {**os.environ, **FAST_ENV, **ray_head.env(), "MEDSERVE_ANON_WORKER_RETRIES": "1"}
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray_jobs.anonymize",
            str(small.root / "in"),
            str(out),
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    killed = keep_killing(_anonymising_workers, driver)
    stdout, _ = driver.communicate(timeout=60)
    assert driver.returncode == 0, "the run did not finish complete"
    # Ray's raylet may print its own warning after the summary: take the last JSON line.
    summary = [line for line in stdout.strip().splitlines() if line.startswith("{")][-1]
    check_worker_died(json.loads(summary), out, small, killed)


def _pool_workers(driver: subprocess.Popen) -> list[psutil.Process]:
    """The process pool's workers: the forkserver's children under this driver."""
    try:
        tree = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = process.parent()
            if parent is not None and "forkserver" in " ".join(parent.cmdline()):
                found.append(process)
    return found


def test_a_pool_worker_that_keeps_dying_is_retried_a_bounded_number_of_times(
    tmp_path: Path,
) -> None:
    small = Corpus(tmp_path / "small", count=2, seed=720)
    out = tmp_path / "out"
    env = {**os.environ, **FAST_ENV, "MEDSERVE_ANON_WORKER_RETRIES": "1", "COLUMNS": "200"}
    driver = subprocess.Popen(
        [
            sys.executable, "-m", "medserve.cli", "anonymize", str(small.root / "in"), str(out),
            "--engine", "processpool",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    killed = keep_killing(lambda: _pool_workers(driver), driver)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 0, stderr[-3000:]
    assert "worker_died" in stderr  # the summary counts them
    (manifest_path,) = (out / "runs").glob("*.json")
    check_worker_died(json.loads(manifest_path.read_text()), out, small, killed)


# --------------------------------------------------------------------------- S3 faults


POOL_RUN = [
    sys.executable, "-m", "medserve.cli", "anonymize",
    f"s3://{IN_BUCKET}/2024-batch", f"s3://{OUT_BUCKET}/out", "--engine", "processpool",
]  # fmt: skip


@contextlib.contextmanager
def faulty_s3(corpus: Corpus, **faults: Any) -> Iterator[tuple[FaultyS3Proxy, Any, dict[str, str]]]:
    """moto holding the corpus, behind a fault-injecting proxy: (proxy, client, pipeline env)."""
    with moto_s3() as moto, FaultyS3Proxy(moto.endpoint_url, **faults) as proxy:
        client = moto.client()
        upload(client, IN_BUCKET, corpus)
        client.create_bucket(Bucket=OUT_BUCKET)
        yield proxy, client, s3_env(proxy.endpoint_url, moto.access_key, moto.secret_key)


def test_s3_faults_are_retried_and_nothing_is_lost(corpus: Corpus) -> None:
    faults = {"error_rate": 0.15, "reset_rate": 0.05, "timeout_rate": 0.03, "delay_seconds": 3}
    with faulty_s3(corpus, seed=3, **faults) as (proxy, client, env):
        env |= {"MEDSERVE_ANON_S3_READ_TIMEOUT_SECONDS": "1.5", "MEDSERVE_ANON_WORKERS": "2"}
        result = run_cli(POOL_RUN, env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert proxy.errors > 0 and proxy.resets > 0 and proxy.timeouts > 0
        output = Output.from_bucket(client, OUT_BUCKET)
    check_output(output.without_prefix("out/"), corpus)


def test_exhausted_s3_retries_leave_exams_for_a_rerun(corpus: Corpus) -> None:
    """Writes failing beyond the retry budget: the run says so (exit 1), the re-run finishes."""
    with faulty_s3(corpus, error_rate=1.0, methods={"PUT"}, seed=1) as (proxy, client, env):
        env["MEDSERVE_ANON_S3_MAX_ATTEMPTS"] = "1"
        failing = run_cli(POOL_RUN, env)
        assert failing.returncode == 1 and "incomplete" in failing.stderr
        assert not Output.from_bucket(client, OUT_BUCKET).under("out/records")
        with proxy.faults_disabled():
            healed = run_cli(POOL_RUN, env)
        assert healed.returncode == 0, healed.stderr[-3000:]
        output = Output.from_bucket(client, OUT_BUCKET)
    assert len(output.under("out/records")) == len(corpus.exams)
    assert len(output.under("out/quarantine")) == len(corpus.bad)


def test_runs_that_cannot_start_are_refused_clearly(corpus: Corpus, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "medserve.cli", "anonymize"]
    missing = run_cli([*cli, str(tmp_path / "no-such-folder"), str(tmp_path / "out")], {})
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    inside = run_cli([*cli, str(corpus.root / "in"), str(corpus.root / "in" / "out")], {})
    assert inside.returncode == 2 and "must not contain one another" in inside.stderr
    assert not (corpus.root / "in" / "out").exists()
    for result in (missing, inside):
        assert "Traceback" not in result.stderr


def test_rayjob_manifest_runs_the_tested_entrypoint_with_real_settings() -> None:
    """k8s/base/rayjob-anonymize.yaml: the entrypoint this file tests, settings the code reads."""
    import yaml

    from medserve.anonymize.settings import AnonymizerSettings, PipelineSettings

    manifest = yaml.safe_load(
        (Path(__file__).parent.parent / "k8s" / "base" / "rayjob-anonymize.yaml").read_text()
    )
    assert manifest["kind"] == "RayJob"
    entrypoint = manifest["spec"]["entrypoint"].split()
    assert entrypoint[:3] == ["python", "-m", "ray_jobs.anonymize"]
    assert all(uri.startswith("s3://") for uri in entrypoint[3:5])
    known = {
        f"MEDSERVE_ANON_{name.upper()}"
        for name in [*AnonymizerSettings.model_fields, *PipelineSettings.model_fields]
    }
    cluster = manifest["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        assert pod["spec"]["nodeSelector"]["kubernetes.io/arch"] == "arm64"
        for container in pod["spec"]["containers"]:
            names = {e["name"] for e in container["env"] if e["name"].startswith("MEDSERVE_ANON_")}
            assert names and names <= known, names - known
    for setting in ("MEDSERVE_ANON_DPI", "MEDSERVE_ANON_JPEG_QUALITY"):
        value = next(
            e["value"] for e in pods[0]["spec"]["containers"][0]["env"] if e["name"] == setting
        )
        AnonymizerSettings(**{setting.removeprefix("MEDSERVE_ANON_").lower(): value})
