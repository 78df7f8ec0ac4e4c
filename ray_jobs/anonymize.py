"""Ray job entrypoint: anonymise every ECG exam under an input prefix with Ray Data.

    python -m ray_jobs.anonymize s3://exams-in/2024 s3://exams-out/2024 [--retry-quarantined]

Runs on a local Ray by default; under `ray job submit` or a KubeRay RayJob it joins that cluster
(`RAY_ADDRESS`). Every knob is a `MEDSERVE_ANON_*` setting (DPI, workers, files per block, ...);
S3 credentials come from the standard AWS chain (IRSA in Kubernetes), the endpoint from
`MEDSERVE_S3_ENDPOINT_URL`. Exits 2 if the run cannot start (missing input, input and output
overlapping, layout profiles that do not load, OCR failing its positive control), 1 unless every
listed exam ended anonymised, quarantined or already done, so a scheduler re-runs it (and the
re-run resumes).
"""

from __future__ import annotations

import argparse
import json
import sys

from medserve.anonymize.pipeline import RunRefused, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="s3://bucket/prefix or a folder of exam PDFs")
    parser.add_argument("output", help="s3://bucket/prefix or a folder for ZIPs and records")
    parser.add_argument("--retry-quarantined", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="for logs without a terminal")
    args = parser.parse_args(argv)
    try:
        manifest = run(
            args.input,
            args.output,
            engine="ray",
            retry_quarantined=args.retry_quarantined,
            progress=not args.no_progress,
        )
    except RunRefused as refusal:
        print(json.dumps({"event": "refused", "reason": str(refusal)}), file=sys.stderr)
        return 2
    print(manifest.model_dump_json())
    return 0 if manifest.complete else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
