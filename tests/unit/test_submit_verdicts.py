""""May Slurm have made a job?" for every way a submit can fail: the recorded answers of
every version, the answers of proxies and restarted servers, and transport failures over
real sockets (a refused connection: test_client_http). A maybe must say so (``maybe_submitted``, and be transient so it is
retried); a "no" must not; a job made despite errors carries its ``job_id``; a submit
whose answer may mean a job is never POSTed a second time."""
from __future__ import annotations

import socket
import ssl
import threading
from typing import Any, Iterator

import pytest
import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProxyError

from slurm_trigger.settings import Settings
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.client import SlurmClient, _maybe_sent
from slurm_trigger.slurm.dialects import DIALECTS
from slurm_trigger.slurm.errors import SlurmError
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.slurm.transport import build_session
from test_client_http import GOOD, STALE, VERSIONS, FakeSlurm, Reply, client_for, recorded, reply_from  # noqa: I001

JOB = JobSubmission(script="#!/bin/sh\ntrue\n")


@pytest.fixture
def fake() -> Iterator[FakeSlurm]:
    server = FakeSlurm()
    yield server
    server.close()


def verdict(call: Any) -> str:
    """ok | made (a job id despite errors) | maybe | no"""
    try:
        call()
    except SlurmError as exc:
        if exc.job_id:
            return "made"
        if exc.maybe_submitted:
            assert exc.transient, exc  # a maybe is resolved by a later attempt
            return "maybe"
        return "no"
    return "ok"


# ------------------------------------------------------------------ recorded answers

RECORDED_VERDICTS = {
    "submit.json": "ok",
    "submit-held.json": "ok",
    "submit-failing.json": "ok",  # a job that will fail when it runs: accepted
    "submit-invalid-json.txt": "no",  # 400 "Unable to parse query": slurmrestd refused it
    "submit-rejected.json": "no",  # 400 (22.05) / 500 + 2xxx (24.11): slurmctld refused the job
    "submit-rejected-no-script.json": "no",  # 500 + 2009 (22.05) / 422 (24.11, 26.05)
    "submit-rejected-no-cwd.json": "no",  # 422 (26.05)
    "submit-rejected-no-environment.json": "no",  # 422 (26.05)
}
RECORDED_SUBMITS = [
    (version, name) for version in VERSIONS for name, meta in sorted(recorded(version).items())
    if meta.get("method") == "POST" and name in RECORDED_VERDICTS
]


def test_every_recorded_submit_answer_has_a_verdict() -> None:
    names = {n for v in VERSIONS for n, m in recorded(v).items() if m.get("method") == "POST"}
    assert names - {"error-bad-token-submit.json"} <= set(RECORDED_VERDICTS)


@pytest.mark.parametrize("version,name", RECORDED_SUBMITS)
def test_recorded_submit_answers(fake: FakeSlurm, version: str, name: str) -> None:
    fake.add("POST", f"/slurm/{version}/job/submit", reply_from(version, name))
    assert verdict(lambda: client_for(fake, api_version=version).submit(JOB)) == RECORDED_VERDICTS[name]
    assert len(fake.seen) == 1


def refreshable(fake: FakeSlurm, version: str) -> tuple[SlurmClient, list[str]]:
    """A client whose token provider hands out a fresh token on refresh."""
    tokens = [STALE]

    class Refreshable(StaticToken):
        def token(self) -> Any:
            return StaticToken(tokens[-1]).token()

        def refresh(self) -> Any:
            tokens.append(GOOD)
            return self.token()

    client = SlurmClient(fake.url, Refreshable(STALE), user="alice", session=build_session(Settings()),
                         api_version=version)
    return client, tokens


def test_2205_error_5005_is_a_maybe_and_never_posted_again(fake: FakeSlurm) -> None:
    """22.05 answers a refused token on submit with 500 + 5005 "Zero Bytes were
    transmitted or received", the same as a socket that broke after slurmctld got the
    RPC. Submitting again with a fresh token could make a second job: the fresh token is
    fetched for the next attempt, which asks Slurm first."""
    fake.add("POST", "/slurm/v0.0.38/job/submit", reply_from("v0.0.38", "error-bad-token-submit.json"),
             reply_from("v0.0.38", "submit.json"))
    client, tokens = refreshable(fake, "v0.0.38")
    with pytest.raises(SlurmError) as exc:
        client.submit(JOB)
    assert exc.value.maybe_submitted and exc.value.transient and exc.value.status == 500
    assert "may exist" in str(exc.value)
    assert len(fake.seen) == 1 and tokens == [STALE, GOOD]  # refreshed, not re-POSTed
    assert client.submit(JOB).job_id  # the next attempt's POST carries the fresh token
    assert fake.seen[-1].headers["X-SLURM-USER-TOKEN"] == GOOD


@pytest.mark.parametrize("version", [v for v in VERSIONS if v != "v0.0.38"])
def test_later_token_refusal_is_a_no_and_posted_again_with_a_fresh_token(fake: FakeSlurm, version: str) -> None:
    """511 + 1007 (24.11, 26.05): slurmctld refused the credential before acting, so once
    more is safe."""
    fake.add("POST", f"/slurm/{version}/job/submit", reply_from(version, "error-bad-token-submit.json"),
             reply_from(version, "submit.json"))
    client, tokens = refreshable(fake, version)
    assert client.submit(JOB).job_id
    assert [s.headers["X-SLURM-USER-TOKEN"] for s in fake.seen] == [STALE, GOOD]


def test_22_05_get_refusal_still_refreshes_and_repeats(fake: FakeSlurm) -> None:
    """The -1 form on GET is not ambiguous about jobs: GETs make none."""
    fake.add("GET", "/slurm/v0.0.38/jobs", reply_from("v0.0.38", "error-bad-token.json"), reply_from("v0.0.38", "jobs.json"))
    client, tokens = refreshable(fake, "v0.0.38")
    assert client.list_jobs().jobs and len(fake.seen) == 2


# ------------------------------------------------------------------ other answers

SYNTHETIC = [
    # proxies and load balancers in front of slurmrestd
    ("502 bad gateway after forwarding", Reply(502, b"<html>Bad Gateway</html>", "text/html"), "maybe"),
    ("504 gateway timeout", Reply(504, b"<html>Gateway Time-out</html>", "text/html"), "maybe"),
    ("503 service unavailable", Reply(503, b"busy", "text/plain"), "maybe"),
    ("bare 500", Reply(500, b"Internal Server Error", "text/plain"), "maybe"),
    ("500 with a socket error (1003)", Reply.json(500, {"errors": [{"error_number": 1003, "error": "recv"}]}), "maybe"),
    ("404: the version was dropped", Reply(404, b"Not Found", "text/plain"), "maybe"),
    ("200 without a job id", Reply.json(200, {"errors": [], "warnings": []}), "maybe"),
    ("429 rate limited", Reply(429, b"slow down", "text/plain"), "no"),
    # slurmctld's "not now" (sbatch sleeps and sends again): refused, nothing made
    ("500 + 11 EAGAIN", Reply.json(500, {"errors": [{"error_number": 11, "error": "Resource temporarily unavailable"}]}), "no"),
    ("500 + 2007 queue full", Reply.json(500, {"errors": [{"error_code": 2007, "error": "Slurm job queue full"}]}), "no"),
    ("413 too large", Reply(413, b"too large", "text/plain"), "no"),
    ("401 no auth headers", Reply(401, b"Authentication failure", "text/plain"), "no"),
    ("511 + 1007", Reply.json(511, {"errors": [{"error_number": 1007, "error": "Protocol authentication error"}]}), "no"),
    ("500 + 2000 bad partition", Reply.json(500, {"errors": [{"error_code": 2000, "error": "Invalid partition"}]}), "no"),
    ("422 + 9202 parser", Reply.json(422, {"errors": [{"error_number": 9202, "error": "parse"}]}), "no"),
    ("200 + job id + 2015", Reply.json(200, {"job_id": 21, "errors": [{"error_code": 2015, "error": "config"}]}), "made"),
]


@pytest.mark.parametrize("version", ["v0.0.38", "v0.0.42", "v0.0.45"])
@pytest.mark.parametrize("reply,expected", [c[1:] for c in SYNTHETIC], ids=[c[0] for c in SYNTHETIC])
def test_other_answers(fake: FakeSlurm, version: str, reply: Reply, expected: str) -> None:
    fake.add("POST", f"/slurm/{version}/job/submit", reply)
    assert verdict(lambda: client_for(fake, api_version=version, retries=3).submit(JOB)) == expected
    assert len(fake.seen) == 1  # never POSTed twice


@pytest.mark.parametrize("version", sorted(DIALECTS))
def test_every_dialect_gives_a_verdict(version: str) -> None:
    dialect = DIALECTS[version]
    assert dialect.submit_maybe_made(502, []) and dialect.submit_maybe_made(500, [{"error_code": 5005}])
    assert not dialect.submit_maybe_made(400, []) and not dialect.submit_maybe_made(500, [{"error_number": 2009}])


# ------------------------------------------------------------------ transport failures


class RawServer:
    """A TCP server that reads one whole request and then does ``what``: reset, close or hang."""

    def __init__(self, what: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.what = what
        self.requests = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests += 1
            if self.what == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            elif self.what == "close":
                conn.close()
            else:
                self.done.wait(5)
                conn.close()

    def close(self) -> None:
        self.done.set()
        self.sock.close()


@pytest.mark.parametrize("what", ["reset", "close", "hang"])
def test_failures_after_the_body_was_sent_are_maybes(what: str) -> None:
    server = RawServer(what)
    try:
        client = SlurmClient(server.url, StaticToken(GOOD), user="alice",
                             session=build_session(Settings(retries=3, read_timeout=0.5)), api_version="v0.0.42")
        assert verdict(lambda: client.submit(JOB)) == "maybe"
        assert server.requests == 1  # a POST is never repeated by the transport
    finally:
        server.close()


def _wrapped(reason: Exception) -> requests.ConnectionError:
    from urllib3.exceptions import MaxRetryError

    return requests.ConnectionError(MaxRetryError(None, "/slurm/v0.0.42/job/submit", reason))


@pytest.mark.parametrize(
    "exc,maybe",
    [
        (requests.ConnectTimeout("connect timed out"), False),
        (_wrapped(NewConnectionError(None, "refused")), False),
        (_wrapped(ConnectTimeoutError("connect timed out")), False),
        (_wrapped(ProxyError("proxy down", NewConnectionError(None, "refused"))), False),
        (requests.exceptions.InvalidHeader("bad header value"), False),
        (requests.exceptions.InvalidURL("bad url"), False),
        (requests.exceptions.SSLError(ssl.SSLCertVerificationError("certificate verify failed")), False),
        (requests.ReadTimeout("read timed out"), True),
        (requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer")), True),
        (requests.exceptions.ChunkedEncodingError("broken answer"), True),
        (requests.exceptions.SSLError(ssl.SSLError(1, "decryption failed or bad record mac")), True),
        (_wrapped(ProxyError("proxy dropped us", ConnectionResetError())), True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_transport_verdicts(exc: requests.RequestException, maybe: bool) -> None:
    assert _maybe_sent(exc) is maybe
