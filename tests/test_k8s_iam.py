"""IAM policy documents of k8s/iam/ checked against what the code really does in S3.

A real run records every S3 call (tests/s3_call_log/sitecustomize.py: boto3 event hooks in each
process, process-pool workers included) against moto's S3 server: an anonymisation of two
synthetic exams (quarantined, retried, skipped), a model export (small and multipart) and the
imports a serving pod does. Each call is mapped to the IAM action and resource S3 authorises it
as, and evaluated against the role's policy: every call must be allowed, and every granted action
must be used by some call (or be a documented failure path): the policies allow exactly what the
code needs. Static checks: IAM grammar, no wildcards, prefixes equal to the configured locations,
IRSA trust policies naming exactly the ServiceAccounts the chart and the RayJobs run as."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from medserve.anonymize.synthetic import generate_corpus
from medserve.catalogue import SERVICES
from medserve.object_store import S3Location
from tests.chart_render import PRODUCTION_VALUES, of_kind, render
from tests.k8s_render import BASE, K8S, OVERLAYS, ROOT, load, overlay, ray_resources
from tests.s3_faults import moto_s3

IAM = K8S / "iam"
ROLES = ("medserve-serving", "medserve-train", "medserve-anonymize")
RECORDER = ROOT / "tests" / "s3_call_log"
# What S3 authorises each operation as ("Actions, resources, and condition keys for Amazon S3"):
# HEAD requests as their GET, multipart parts as s3:PutObject, bucket reads as s3:ListBucket.
OPERATION_ACTIONS = {
    "HeadBucket": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
}
BUCKET_OPERATIONS = {"HeadBucket", "ListObjectsV2"}
# Granted though no successful run calls them: s3transfer aborts a failed multipart upload, or
# its parts would stay (billed, invisible) under the model prefix.
FAILURE_PATHS = {"medserve-train": {"s3:AbortMultipartUpload"}}
MULTIPART_BYTES = 9 * 1024 * 1024  # above boto3's 8 MiB multipart threshold


# --------------------------------------------------------------------------- policy evaluation


@dataclass(frozen=True)
class Request:
    """One authorisation S3 makes for a call: action, resource ARN, condition keys present."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


@dataclass
class Call:
    """A recorded S3 call (one JSON line of the recorder)."""

    operation: str
    bucket: str
    key: str | None
    prefix: str | None
    status: int
    phase: str = ""
    requests: list[Request] = field(default_factory=list)


def glob_match(pattern: str, value: str) -> bool:
    """IAM's wildcards: `*` any run of characters (slashes too), `?` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value) is not None


def condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """The IAM condition operators our policies use; anything else fails the test."""
    for operator, tests in condition.items():
        base = operator.removesuffix("IfExists")
        for key, wanted in tests.items():
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            if key not in context:
                if operator.endswith("IfExists"):
                    continue  # an absent key satisfies ...IfExists operators
                return False
            if base == "StringEquals":
                matched = context[key] in values
            elif base == "StringLike":
                matched = any(glob_match(v, context[key]) for v in values)
            else:
                raise AssertionError(f"condition operator {operator} is not modelled here")
            if not matched:
                return False
    return True


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowing(policy: dict[str, Any], request: Request) -> list[str]:
    """Sids of the policy's statements that allow `request` (our policies have no Deny)."""
    context = dict(request.context)
    return [
        statement["Sid"]
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        and request.action in as_list(statement["Action"])
        and any(glob_match(r, request.resource) for r in as_list(statement["Resource"]))
        and condition_holds(statement.get("Condition", {}), context)
    ]


def requests_for(call: Call) -> list[Request]:
    """The authorisations S3 makes for a call."""
    assert call.operation in OPERATION_ACTIONS, f"unmapped S3 operation {call.operation}"
    action = OPERATION_ACTIONS[call.operation]
    if call.operation in BUCKET_OPERATIONS:
        context = () if call.prefix is None else (("s3:prefix", call.prefix),)
        return [Request(action, f"arn:aws:s3:::{call.bucket}", context)]
    requests = [Request(action, f"arn:aws:s3:::{call.bucket}/{call.key}")]
    if call.operation == "HeadObject" and call.status == 404:
        # S3 answers a missing key with 404 only to a caller that may list the bucket (else 403,
        # which ObjectStore.exists() rightly treats as an error, not as "not done yet").
        requests.append(Request("s3:ListBucket", f"arn:aws:s3:::{call.bucket}"))
    return requests


def policy(role: str) -> dict[str, Any]:
    return json.loads((IAM / f"{role}.json").read_text())


def trust(role: str) -> dict[str, Any]:
    return json.loads((IAM / f"{role}-trust.json").read_text())


# --------------------------------------------------------------------------- locations in config


def model_bucket() -> S3Location:
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return S3Location.parse(production["modelStore"]["uri"])


def anonymize_locations() -> tuple[S3Location, S3Location]:
    entrypoint = load(BASE / "rayjob-anonymize.yaml")["spec"]["entrypoint"].split()
    return S3Location.parse(entrypoint[3]), S3Location.parse(entrypoint[4])


def training_exports() -> set[str]:
    exports = set()
    for path in BASE.glob("rayjob-train-*.yaml"):
        entrypoint = load(path)["spec"]["entrypoint"].split()
        exports.add(entrypoint[entrypoint.index("--export") + 1])
    return exports


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("role", ROLES)
def test_policy_is_a_least_privilege_document(role: str) -> None:
    document = policy(role)
    assert set(document) == {"Version", "Statement"} and document["Version"] == "2012-10-17"
    allowed_actions = set(OPERATION_ACTIONS.values())
    sids = [statement["Sid"] for statement in document["Statement"]]
    assert len(set(sids)) == len(sids)
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "NotPrincipal", "Principal"} & set(statement)
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        assert actions and resources
        assert all("*" not in a and "?" not in a for a in actions), actions
        assert set(actions) <= allowed_actions, set(actions) - allowed_actions
        for resource in resources:
            bucket, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
            assert resource.startswith("arn:aws:s3:::") and bucket and "*" not in bucket
            # Object resources are a prefix's keys, never a whole bucket's (or everything).
            assert not key or re.fullmatch(r"[a-z0-9_\-]+(/[a-z0-9_\-]+)*/\*", key), resource
            assert bool(key) == all(a != "s3:ListBucket" for a in actions), statement
        for operator, tests in statement.get("Condition", {}).items():
            assert set(tests) == {"s3:prefix"}, (operator, tests)


def test_policies_name_exactly_the_configured_locations() -> None:
    models = model_bucket()
    assert training_exports() == {str(models).rstrip("/")}  # the RayJobs export where pods read
    # Pods import <modelStore.uri>/<name>/<version>.bentomodel, name from their pinned tag:
    # the service's own model and its companions (the triage's climate rules).
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())
    names = {service["modelTag"].split(":")[0] for service in production["services"]}
    for service in production["services"]:
        names |= {tag.split(":")[0] for tag in service.get("companionModels", {}).values()}
    assert names == {model for entry in SERVICES.values() for model in entry.models}
    prefixes = {f"arn:aws:s3:::{models.bucket}/{models.child(name).key}/*" for name in names}
    for role in ("medserve-serving", "medserve-train"):
        resources = {r for s in policy(role)["Statement"] for r in as_list(s["Resource"])}
        assert resources == prefixes, (role, resources ^ prefixes)  # every chart service's model
    source, sink = anonymize_locations()
    resources = {
        r for s in policy("medserve-anonymize")["Statement"] for r in as_list(s["Resource"])
    }
    assert resources == {
        f"arn:aws:s3:::{source.bucket}",
        f"arn:aws:s3:::{source.bucket}/{source.key}/*",
        f"arn:aws:s3:::{sink.bucket}",
        f"arn:aws:s3:::{sink.bucket}/{sink.key}/*",
    }


def role_of(account: dict[str, Any]) -> str:
    arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    match = re.fullmatch(r"arn:aws:iam::\d{12}:role/([\w+=,.@-]+)", arn)
    assert match, arn
    return match.group(1)


def expected_subjects() -> dict[str, set[str]]:
    """Role -> the `system:serviceaccount:<ns>:<sa>` subjects that run as it in production:
    the chart's ServiceAccount (values-production.yaml, namespace medserve) and the ones of the
    prod overlay, each bound by its IRSA annotation."""
    subjects: dict[str, set[str]] = defaultdict(set)
    namespace = OVERLAYS["prod"]
    chart = of_kind(render((PRODUCTION_VALUES,), namespace=namespace), "ServiceAccount")
    accounts = [(namespace, a) for a in chart.values()]
    accounts += [(a["metadata"]["namespace"], a) for a in overlay("prod")
                 if a["kind"] == "ServiceAccount"]  # fmt: skip
    for ns, account in accounts:
        subjects[role_of(account)].add(f"system:serviceaccount:{ns}:{account['metadata']['name']}")
    return subjects


def test_trust_policies_name_exactly_the_service_accounts_that_use_them() -> None:
    subjects = expected_subjects()
    assert set(subjects) == set(ROLES), subjects
    # Every Ray pod of the prod overlay runs as one of those accounts.
    namespace = OVERLAYS["prod"]
    for resource in ray_resources(overlay("prod")):
        cluster = resource["spec"].get("rayClusterSpec", resource["spec"])
        pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
        for pod in (p["template"] for p in pods):
            subject = f"system:serviceaccount:{namespace}:{pod['spec']['serviceAccountName']}"
            assert any(subject in s for s in subjects.values()), subject
    for role in ROLES:
        document = trust(role)
        assert document["Version"] == "2012-10-17"
        (statement,) = document["Statement"]
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        provider = statement["Principal"]["Federated"]
        assert provider == "arn:aws:iam::${AWS_ACCOUNT_ID}:oidc-provider/${OIDC_PROVIDER}"
        (operator,) = statement["Condition"]
        assert operator == "StringEquals"  # exact subjects: no StringLike wildcards
        condition = statement["Condition"]["StringEquals"]
        assert condition["${OIDC_PROVIDER}:aud"] == "sts.amazonaws.com"
        assert set(as_list(condition["${OIDC_PROVIDER}:sub"])) == subjects[role], role


def test_evaluator_denies_what_the_roles_must_not_do() -> None:
    """The evaluation below is only worth something if it can say no."""
    source, sink = anonymize_locations()
    models = model_bucket()
    denied = {
        "medserve-anonymize": [
            Request("s3:PutObject", f"arn:aws:s3:::{source.bucket}/{source.key}/x.pdf"),
            Request("s3:DeleteObject", f"arn:aws:s3:::{source.bucket}/{source.key}/x.pdf"),
            Request("s3:GetObject", f"arn:aws:s3:::{source.bucket}/other/x.pdf"),
            Request("s3:ListBucket", f"arn:aws:s3:::{source.bucket}", (("s3:prefix", "other/"),)),
            # No prefix at all: the input's key names (which may name patients) stay unlisted.
            Request("s3:ListBucket", f"arn:aws:s3:::{source.bucket}"),
            Request("s3:GetObject", f"arn:aws:s3:::{models.bucket}/heart_risk/v.bentomodel"),
        ],
        "medserve-train": [
            Request("s3:GetObject", f"arn:aws:s3:::{source.bucket}/{source.key}/x.pdf"),
            Request("s3:GetObject", f"arn:aws:s3:::{models.bucket}/heart_risk/v.bentomodel"),
            Request("s3:PutObject", f"arn:aws:s3:::{models.bucket}/other/v.bentomodel"),
            Request("s3:DeleteObject", f"arn:aws:s3:::{models.bucket}/heart_risk/v.bentomodel"),
        ],
        "medserve-serving": [
            Request("s3:PutObject", f"arn:aws:s3:::{models.bucket}/heart_risk/v.bentomodel"),
            Request("s3:ListBucket", f"arn:aws:s3:::{models.bucket}", (("s3:prefix", ""),)),
            Request("s3:GetObject", f"arn:aws:s3:::{sink.bucket}/{sink.key}/x.zip"),
        ],
    }
    for role, requests in denied.items():
        for request in requests:
            assert not allowing(policy(role), request), (role, request)
    # ...and yes where it should.
    assert allowing(
        policy("medserve-anonymize"),
        Request("s3:ListBucket", f"arn:aws:s3:::{source.bucket}", (("s3:prefix", "ecg/"),)),
    )
    assert not condition_holds({"StringLike": {"s3:prefix": ["ecg/*"]}}, {})
    with pytest.raises(AssertionError, match="not modelled"):
        condition_holds({"ArnLike": {"aws:SourceArn": "x"}}, {"aws:SourceArn": "x"})


# --------------------------------------------------------------------------- recorded run


def read_calls(log: Path, phase: str) -> list[Call]:
    calls = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        call = Call(
            record["operation"], record["bucket"], record["key"], record["prefix"],
            record["status"], phase,
        )  # fmt: skip
        call.requests = requests_for(call)
        calls.append(call)
    return calls


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, heart_tag: str, triage_tag: str
) -> dict[str, list[Call]]:
    """Role -> the S3 calls its code made in a real run against moto's S3 server."""
    tmp = tmp_path_factory.mktemp("iam")
    source, sink = anonymize_locations()
    models = model_bucket()
    exams = tmp / "exams"
    generate_corpus(exams, 2, seed=71)
    calls: dict[str, list[Call]] = defaultdict(list)
    with moto_s3() as moto:
        client = moto.client()
        for bucket in {source.bucket, sink.bucket, models.bucket}:
            client.create_bucket(Bucket=bucket)
        for pdf in sorted(exams.glob("*.pdf")):
            client.put_object(
                Bucket=source.bucket, Key=f"{source.key}/2024/{pdf.name}", Body=pdf.read_bytes()
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDSERVE_S3_"))}
        env |= {
            "PYTHONPATH": os.pathsep.join([str(RECORDER), str(ROOT)]),
            "AWS_ACCESS_KEY_ID": moto.access_key,
            "AWS_SECRET_ACCESS_KEY": moto.secret_key,
            "MEDSERVE_S3_ENDPOINT_URL": moto.endpoint_url,
            "MEDSERVE_S3_REGION": moto.region,
            "MEDSERVE_ANON_DPI": "300",
            "NO_PROXY": "127.0.0.1",
        }
        count = iter(range(100))

        def run(role: str | None, phase: str, args: list[str], **extra: str) -> str:
            """Run `python *args` with the recorder on; its calls count for `role`."""
            log = tmp / f"{next(count):02d}-{phase}.jsonl"
            result = subprocess.run(
                [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                env=env | extra | {"MEDSERVE_TEST_S3_CALL_LOG": str(log)},
            )  # fmt: skip
            assert result.returncode == 0, (phase, result.stdout[-2000:], result.stderr[-3000:])
            if role is not None:
                assert log.is_file(), f"{phase}: the recorder saw no S3 call"
                calls[role] += read_calls(log, phase)
            return result.stdout

        cli = ["-m", "medserve.cli"]
        anonymize = [*cli, "anonymize", str(source), str(sink), "--engine", "processpool"]
        # Too large for the limit: quarantined unread. Then retried: anonymised, the quarantine
        # entry deleted. Then again: everything skipped as done.
        run("medserve-anonymize", "quarantine", anonymize, MEDSERVE_ANON_MAX_INPUT_BYTES="1024")
        run("medserve-anonymize", "retry", [*anonymize, "--retry-quarantined"])
        run("medserve-anonymize", "skip", anonymize)

        # Training exports: the session's heart model, and a model above the multipart size
        # (the same export code path as a CT archive), built in a store of its own.
        run("medserve-train", "export", [*cli, "export", heart_tag, str(models)])
        # The triage KB, published by its RayJob like a model (`--export` runs this export).
        run("medserve-train", "export-kb", [*cli, "export", triage_tag, str(models)])
        big_home = tmp / "big-store"
        big = run(
            None, "make-big", ["-c", MAKE_BIG_MODEL, str(MULTIPART_BYTES)],
            BENTOML_HOME=str(big_home),
        )  # fmt: skip
        run(
            "medserve-train", "export-big", [*cli, "export", big.split()[-1], str(models)],
            BENTOML_HOME=str(big_home),
        )  # fmt: skip
        archives = sorted({c.key for c in calls["medserve-train"] if c.key})

        # Serving: each pod imports its pinned archive into an empty store at start-up.
        for key in archives:
            run(
                "medserve-serving", "import", [*cli, "import", f"s3://{models.bucket}/{key}"],
                BENTOML_HOME=str(tmp / f"pod-{key.replace('/', '-')}"),
            )  # fmt: skip
    return dict(calls)


MAKE_BIG_MODEL = """
import os, sys
import bentoml
with bentoml.models.create("ct_pattern", labels={"platform": "medserve"}) as model:
    with open(os.path.join(model.path, "weights.bin"), "wb") as out:
        out.write(os.urandom(int(sys.argv[1])))
print(model.tag)
"""


def operations(calls: list[Call], phase: str | None = None) -> set[str]:
    return {c.operation for c in calls if phase is None or c.phase == phase}


def test_recording_covers_every_code_path(recorded: dict[str, list[Call]]) -> None:
    """The run exercised each S3 call the code makes, or the check below would be hollow."""
    anonymize = recorded["medserve-anonymize"]
    assert {"ListObjectsV2", "HeadObject", "PutObject"} <= operations(anonymize, "quarantine")
    assert "GetObject" not in operations(anonymize, "quarantine")  # too large: never read
    assert {"GetObject", "PutObject", "DeleteObject"} <= operations(anonymize, "retry")
    assert not {"GetObject", "DeleteObject"} & operations(anonymize, "skip")
    _, sink = anonymize_locations()
    # A run that finds everything done writes its run manifest, nothing else.
    assert {c.key for c in anonymize if c.phase == "skip" and c.operation == "PutObject"} and all(
        c.key.startswith(f"{sink.key}/runs/")
        for c in anonymize
        if c.phase == "skip" and c.operation == "PutObject"
    )
    statuses = {(c.operation, c.status) for c in anonymize}
    assert {("HeadObject", 404), ("HeadObject", 200)} <= statuses
    train = recorded["medserve-train"]
    assert {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} <= operations(
        train, "export-big"
    )
    assert operations(train, "export") == operations(train, "export-kb") == {"PutObject"}
    # Every kind of stored model went out and came back in (the rules: see k8s/README.md).
    exported = {c.key.split("/")[0] for c in train if c.key}
    assert {"heart_risk", "respiratory_triage", "ct_pattern"} <= exported
    imported = {c.key.split("/")[0] for c in recorded["medserve-serving"]}
    assert imported == exported
    assert operations(recorded["medserve-serving"]) == {"HeadObject", "GetObject"}
    assert all(c.status < 300 for c in train + recorded["medserve-serving"])


@pytest.mark.parametrize("role", ROLES)
def test_policy_allows_exactly_the_recorded_calls(
    role: str, recorded: dict[str, list[Call]]
) -> None:
    document = policy(role)
    calls = recorded[role]
    assert calls
    used: dict[str, set[str]] = defaultdict(set)  # Sid -> actions some call needed from it
    for call in calls:
        for request in call.requests:
            sids = allowing(document, request)
            assert sids, f"{role} denies {call.phase} {call.operation} as {request}"
            for sid in sids:
                used[sid].add(request.action)
    for statement in document["Statement"]:
        granted = set(as_list(statement["Action"]))
        unused = granted - used[statement["Sid"]] - FAILURE_PATHS.get(role, set())
        assert not unused, f"{role} {statement['Sid']} grants unused {unused}"


def test_recorded_keys_stay_under_the_configured_prefixes(
    recorded: dict[str, list[Call]],
) -> None:
    """Beyond the policy: the code never reaches outside the locations it was given."""
    source, sink = anonymize_locations()
    for call in recorded["medserve-anonymize"]:
        assert call.bucket in {source.bucket, sink.bucket}
        location = source if call.bucket == source.bucket else sink
        named = call.key if call.key is not None else call.prefix
        if named is not None:
            assert named.startswith(f"{location.key}/"), call
    models = model_bucket()
    for call in recorded["medserve-train"] + recorded["medserve-serving"]:
        assert call.bucket == models.bucket and re.fullmatch(r"\w+/[\w.-]+\.bentomodel", call.key)
