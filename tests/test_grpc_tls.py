"""gRPC over TLS and mutual TLS (`MEDSERVE_GRPC_TLS_*`), checked on the real heart service with
the official Triton gRPC client: a client with a certificate of the trusted CA is served; one
without a certificate, a plaintext one and one trusting another CA fail in the handshake. The
CA and certificates are made here (`cryptography`), nothing is read from the machine."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError
from tritonclient.utils import InferenceServerException

from medserve.serving.oip_grpc import server_credentials
from medserve.settings import Settings
from tests.conftest import HEART_TARGET, service_env
from tests.servers import ServiceProcess, medserve_service
from tests.test_oip_v2 import MODEL, features, infer_input

CALL_TIMEOUT_S = 20
UNAVAILABLE = str(grpc.StatusCode.UNAVAILABLE)


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    common_name: str,
    issuer: Issued | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    san: list[x509.GeneralName] | None = None,
) -> Issued:
    """A P-256 key and its certificate, signed by `issuer` (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    signer = issuer.key if issuer else key
    return Issued(key=key, cert=builder.sign(signer, hashes.SHA256()))


def _write(issued: Issued, folder: Path, stem: str) -> tuple[Path, Path]:
    """`<stem>.crt` and `<stem>.key` (PEM, unencrypted PKCS#8) in `folder`."""
    cert, key = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return cert, key


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("grpc-pki")
    ca = _issue("medserve test CA", None, ca=True)
    other = _issue("some other CA", None, ca=True)
    server = _issue(
        "127.0.0.1",
        ca,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client = _issue("clinic-app", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_file, _ = _write(ca, folder, "ca")
    other_file, _ = _write(other, folder, "other-ca")
    server_cert, server_key = _write(server, folder, "server")
    client_cert, client_key = _write(client, folder, "client")
    return Pki(ca_file, other_file, server_cert, server_key, client_cert, client_key)


@pytest.fixture(scope="module")
def mtls_service(
    heart_tag: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The heart service (one worker) serving gRPC with mutual TLS only."""
    home = tmp_path_factory.mktemp("heart-mtls")
    env = service_env(
        home,
        MEDSERVE_HEART_RISK_MODEL_TAG=heart_tag,
        MEDSERVE_GRPC_TLS_CERT_FILE=str(pki.server_cert),
        MEDSERVE_GRPC_TLS_KEY_FILE=str(pki.server_key),
        MEDSERVE_GRPC_TLS_CLIENT_CA_FILE=str(pki.ca),
    )
    with medserve_service(HEART_TARGET, home, env) as service:
        yield service


def auth_headers(service: ServiceProcess) -> dict[str, str]:
    """The bearer token header once the services require one (tests/servers.py)."""
    return dict(getattr(service, "auth_headers", {}))


def heart_infer(client: tgrpc.InferenceServerClient, service: ServiceProcess) -> Any:
    array = features()
    return client.infer(
        MODEL,
        [infer_input("grpc", array, "FP64")],
        headers=auth_headers(service),
        client_timeout=CALL_TIMEOUT_S,
    )


# --------------------------------------------------------------------------- the running service


def test_a_client_with_a_certificate_of_the_trusted_ca_is_served(
    mtls_service: ServiceProcess, pki: Pki
) -> None:
    client = tgrpc.InferenceServerClient(
        mtls_service.grpc_target,
        ssl=True,
        root_certificates=str(pki.ca),
        private_key=str(pki.client_key),
        certificate_chain=str(pki.client_cert),
    )
    try:
        result = heart_infer(client, mtls_service)
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (1, 2)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert len(result.as_numpy("prediction_id")[0]) == 26
    finally:
        client.close()


def _refused(client: tgrpc.InferenceServerClient, service: ServiceProcess) -> str:
    """The status of the failed call (the client is closed afterwards). The connection itself
    fails: a refusal by the service (a full queue is UNAVAILABLE too) would be an answer."""
    try:
        with pytest.raises(InferenceServerException) as failure:
            heart_infer(client, service)
    finally:
        client.close()
    assert "failed to connect" in str(failure.value.message()), failure.value.message()
    return str(failure.value.status())


def test_a_client_without_a_certificate_fails_the_handshake(
    mtls_service: ServiceProcess, pki: Pki
) -> None:
    client = tgrpc.InferenceServerClient(
        mtls_service.grpc_target, ssl=True, root_certificates=str(pki.ca)
    )
    assert _refused(client, mtls_service) == UNAVAILABLE


def test_a_plaintext_client_fails(mtls_service: ServiceProcess) -> None:
    client = tgrpc.InferenceServerClient(mtls_service.grpc_target)
    assert _refused(client, mtls_service) == UNAVAILABLE


def test_a_client_trusting_another_ca_refuses_the_server(
    mtls_service: ServiceProcess, pki: Pki
) -> None:
    client = tgrpc.InferenceServerClient(
        mtls_service.grpc_target,
        ssl=True,
        root_certificates=str(pki.other_ca),
        private_key=str(pki.client_key),
        certificate_chain=str(pki.client_cert),
    )
    assert _refused(client, mtls_service) == UNAVAILABLE


def test_the_log_names_the_transport_and_no_key_material(
    mtls_service: ServiceProcess, pki: Pki
) -> None:
    log = mtls_service.log_text()
    started = [line for line in log.splitlines() if '"event": "grpc serving"' in line]
    assert started and all('"transport": "mtls"' in line for line in started), started
    assert "PRIVATE KEY" not in log
    key_body = pki.server_key.read_text().splitlines()[1]
    assert key_body not in log


# --------------------------------------------------------------------------- settings


def test_settings_refuse_a_certificate_without_its_key(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    with pytest.raises(ValidationError, match="set both or neither"):
        Settings(grpc_tls_cert_file=cert)
    with pytest.raises(ValidationError, match="set both or neither"):
        Settings(grpc_tls_key_file=key)
    with pytest.raises(ValidationError, match="needs the server's"):
        Settings(grpc_tls_client_ca_file=ca)
    settings = Settings(grpc_tls_cert_file=cert, grpc_tls_key_file=key, grpc_tls_client_ca_file=ca)
    assert settings.grpc_tls_client_ca_file == ca


def test_settings_read_the_tls_files_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDSERVE_GRPC_TLS_CERT_FILE", str(tmp_path / "tls.crt"))
    with pytest.raises(ValidationError, match="set both or neither"):
        Settings()
    monkeypatch.setenv("MEDSERVE_GRPC_TLS_KEY_FILE", str(tmp_path / "tls.key"))
    assert Settings().grpc_tls_key_file == tmp_path / "tls.key"


def test_server_credentials_are_none_without_tls_and_built_from_the_files(pki: Pki) -> None:
    assert server_credentials(Settings()) is None
    tls = Settings(grpc_tls_cert_file=pki.server_cert, grpc_tls_key_file=pki.server_key)
    assert isinstance(server_credentials(tls), grpc.ServerCredentials)
    mtls = tls.model_copy(update={"grpc_tls_client_ca_file": pki.ca})
    assert isinstance(server_credentials(mtls), grpc.ServerCredentials)
