"""The session: timeouts on every call, the retry policy, and the TLS choices (a local
HTTPS server with a self-signed certificate stands in for the head node)."""
from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from conftest import Logged
from fakeslurm import self_signed

from slurm_trigger.settings import Settings
from slurm_trigger.slurm import transport
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.client import SlurmClient
from slurm_trigger.slurm.errors import SlurmTLSError, SlurmUnavailableError
from slurm_trigger.slurm.transport import TimeoutAdapter, build_session, retry_policy


class Ping(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"pings": [{"hostname": "vm", "pinged": "UP"}], "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[str, str]]:
    cert, key = self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def ping(url: str, session: requests.Session) -> dict:
    return SlurmClient(url, StaticToken("t"), user="u", session=session, api_version="v0.0.42").ping()


def test_verifies_tls_by_default(https: tuple[str, str]) -> None:
    url, _ = https
    with pytest.raises(SlurmTLSError, match="TLS verification of the head node failed.*self-signed") as exc:
        ping(url, build_session(Settings()))  # retries=3, but a verify failure is not retried
    assert exc.value.maybe_submitted is False
    assert isinstance(exc.value, SlurmUnavailableError)


def test_ca_bundle_path(https: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, cert = https
    # requests would let this environment variable win over Session.verify
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert ping(url, build_session(Settings(ca_bundle=cert)))["pings"]


def test_ca_from_secrets_manager(aws: Any, https: tuple[str, str]) -> None:
    import boto3

    url, cert = https
    sm = boto3.client("secretsmanager")
    sm.create_secret(Name="head-node-cert", SecretString=Path(cert).read_text())
    session = build_session(Settings(ca_secret="head-node-cert"), secrets_client=lambda: sm)
    pem_path = Path(session.verify)
    assert pem_path.read_text() == Path(cert).read_text()
    assert pem_path.stat().st_mode & 0o077 == 0  # private to this user
    assert ping(url, session)["pings"]
    again = build_session(Settings(ca_secret="head-node-cert"), secrets_client=lambda: sm)
    assert again.verify == session.verify  # written once per process


def test_ca_from_ssm(aws: Any, https: tuple[str, str]) -> None:
    import boto3

    url, cert = https
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/slurm/head-node-cert", Value=Path(cert).read_text(), Type="String")
    session = build_session(Settings(ca_parameter="/slurm/head-node-cert"), ssm_client=lambda: ssm)
    assert ping(url, session)["pings"]


def test_a_rotated_certificate_is_followed_by_reading_the_parameter_again(aws: Any, https: tuple[str, str],
                                                                           tmp_path: Path) -> None:
    """A warm session trusts an old PEM; the head node published a new one before it
    serves it: the verify failure reads the parameter once more and the call goes on."""
    import boto3

    url, cert = https
    (tmp_path / "old").mkdir()
    old, _ = self_signed(tmp_path / "old", cn="head-node (before the rotation)")
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/slurm/ca", Value=Path(old).read_text(), Type="String")
    session = build_session(Settings(ca_parameter="/slurm/ca"), ssm_client=lambda: ssm)
    with pytest.raises(SlurmTLSError):  # nothing new published yet: one failure, no loop
        ping(url, session)
    ssm.put_parameter(Name="/slurm/ca", Value=Path(old).read_text() + Path(cert).read_text(), Type="String", Overwrite=True)
    assert ping(url, session)["pings"]


def test_other_tls_errors_are_still_retried() -> None:
    """Only verification failures skip the retries; a reset handshake is worth another go."""
    import urllib3

    policy = retry_policy(3)
    reset = urllib3.exceptions.SSLError(ConnectionResetError("reset during handshake"))
    assert policy.increment("GET", "/x", error=reset).total == 2
    verify = urllib3.exceptions.SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        policy.increment("GET", "/x", error=verify)


def test_ca_secret_must_be_pem(aws: Any) -> None:
    import boto3

    sm = boto3.client("secretsmanager")
    sm.create_secret(Name="not-a-cert", SecretString="hello")
    with pytest.raises(ValueError, match="PEM"):
        build_session(Settings(ca_secret="not-a-cert"), secrets_client=lambda: sm)


def test_insecure_turns_verification_off_and_warns(https: tuple[str, str], logged: Logged,
                                                   recwarn: pytest.WarningsRecorder) -> None:
    url, _ = https
    session = build_session(Settings(insecure=True))
    assert session.verify is False
    [warning] = logged.lines
    assert warning["level"] == "WARNING" and "TLS verification is OFF" in warning["message"]
    assert ping(url, session)["pings"]
    assert not [w for w in recwarn if "Unverified HTTPS" in str(w.message)]


def test_no_aws_client_made_without_ca_secret_or_parameter() -> None:
    def boom() -> Any:
        raise AssertionError("no AWS client needed")

    assert build_session(Settings(), secrets_client=boom, ssm_client=boom).verify is True


def test_every_request_gets_the_timeouts() -> None:
    session = build_session(Settings(connect_timeout=1.5, read_timeout=7.0))
    adapter = session.get_adapter("https://x")
    assert isinstance(adapter, TimeoutAdapter) and adapter.timeout == (1.5, 7.0)
    assert adapter.verify is True
    assert session.get_adapter("http://x") is adapter


def test_retry_policy_only_idempotent_methods() -> None:
    retry = retry_policy(4)
    assert retry.total == 4
    assert set(retry.allowed_methods) == {"GET", "DELETE"}
    assert set(retry.status_forcelist) == {429, 502, 503, 504}
    assert retry.respect_retry_after_header and not retry.raise_on_status
    assert not retry.is_retry("POST", 503)
    assert retry.is_retry("GET", 503) and retry.is_retry("DELETE", 429)
    assert not retry.is_retry("GET", 500)


def test_pem_file_is_reused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    pem = Path(cert).read_text()
    assert transport.pem_file(pem) == transport.pem_file(pem)
