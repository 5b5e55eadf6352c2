"""The JWT never shows: not when it is malformed, and not on any error path.

A token with a character outside the JWT alphabet is refused when it is loaded (given
directly, from Secrets Manager, through the CLI). Then every way a call can fail
(a header HTTP forbids, TLS, a refused connection, 4xx/5xx bodies that echo the
request, timeouts, a redirect) is driven through the real client and requests, and
the token is looked for in the exception (str, repr, traceback, cause chain,
``to_dict``), what the Powertools Logger writes (its JSON lines, every field) and the
records of the libraries' own loggers (urllib3, requests), the CLI's output, the events the trigger publishes
(EventBridge -> SQS in moto) and the X-Ray segments, with a minted token and its
signing key read from Secrets Manager (in a child process, so the
patched libraries do not leak into other tests).
"""
from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from event_queue import events_to_queue
from conftest import Logged
from fakeslurm import FakeSlurm, Reply, Seen, self_signed

from slurm_trigger_cli import main
from slurm_trigger.observability import logger
from slurm_trigger.settings import Settings
from slurm_trigger.slurm.auth import SecretsManagerToken, StaticToken, Token, parse_secret
from slurm_trigger.slurm.client import SlurmClient
from slurm_trigger.slurm.errors import SlurmAuthError, SlurmError
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.slurm.transport import build_session

REPO = Path(__file__).resolve().parents[2]
VERSION = "v0.0.42"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def make_jwt() -> str:
    """A JWT-shaped value, new per test (so no committed file holds one)."""
    return ".".join([_b64({"alg": "HS256", "typ": "JWT"}),
                     _b64({"sun": "alice", "exp": int(time.time()) + 600, "iat": int(time.time())}),
                     secrets.token_urlsafe(32)])


@pytest.fixture
def jwt() -> str:
    return make_jwt()


def fragments(secret: str) -> list[str]:
    """The value and each long run of it between characters no JWT has: a leak of
    half a token (cut at a CR/LF) is still a leak."""
    return [secret] + [p for p in re.split(r"[^A-Za-z0-9_.-]+", secret) if len(p) >= 12]


def assert_absent(secret: str, *texts: str) -> None:
    for text in texts:
        for fragment in fragments(secret):
            assert fragment not in text


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an exception can show: str, repr, args, the formatted traceback, and
    the same for each exception in its cause/context chain; ``to_dict`` for ours."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        if isinstance(current, SlurmError):
            texts.append(json.dumps(current.to_dict(), default=str))
        current = current.__cause__ or current.__context__
    return texts


class Logs:
    """Every log line a test produced: the JSON lines our Logger wrote (conftest's
    ``logged``) and the records of the libraries underneath, which log through stdlib."""

    def __init__(self, ours: Logged, libraries: pytest.LogCaptureFixture) -> None:
        self.ours, self.libraries = ours, libraries

    @property
    def text(self) -> str:
        return self.ours.text + "\n" + self.libraries.text


@pytest.fixture
def logs(logged: Logged, caplog: pytest.LogCaptureFixture) -> Logs:
    for name in ("urllib3", "requests", "aws_lambda_powertools"):  # not botocore: its DEBUG prints what it reads
        caplog.set_level(logging.DEBUG, logger=name)
    return Logs(logged, caplog)


def test_the_log_capture_sees_every_field(logs: Logs) -> None:
    """The leak tests below are only as good as what they read: a secret in a
    traceback, in ``extra`` or in the message reaches ``logs.text``."""
    secret = make_jwt()
    try:
        raise RuntimeError(f"failed with\r\n{secret}\r\n")
    except RuntimeError:
        logger.exception("boom")
    logger.debug("extra", extra={"detail": {"nested": [secret]}})
    logger.info(f"message {secret}")
    boom, extra, message = logs.ours.lines
    assert boom["exception_name"] == "RuntimeError" and f"\r\n{secret}\r\n" in boom["exception"]
    assert extra["detail"] == {"nested": [secret]} and message["message"] == f"message {secret}"
    for line in (boom, extra, message):
        with pytest.raises(AssertionError):
            assert_absent(secret, Logged(io.StringIO(json.dumps(line))).text)


# ------------------------------------------------------------------ refused when loaded

BAD = {
    "CRLF inside": lambda t: t[:40] + "\r\n" + t[40:],
    "LF then a header": lambda t: t + "\nX-Injected: 1",
    "space inside": lambda t: t[:30] + " " + t[30:],
    "tab inside": lambda t: t[:30] + "\t" + t[30:],
    "NUL": lambda t: t[:30] + "\x00" + t[30:],
    "non-ASCII": lambda t: t[:30] + "\u00e9" + t[30:],
    "quote": lambda t: '"' + t + '"',
    "Bearer prefix": lambda t: "Bearer " + t,
}


@pytest.mark.parametrize("make_bad", BAD.values(), ids=BAD.keys())
def test_bad_token_given_directly_is_refused_without_showing_it(jwt: str, make_bad: Callable[[str], str]) -> None:
    bad = make_bad(jwt)
    with pytest.raises(SlurmAuthError, match="not a JWT") as exc:
        StaticToken(bad)
    assert "SLURM_TOKEN" in str(exc.value)
    assert_absent(bad, *exception_texts(exc.value))


def test_surrounding_whitespace_is_trimmed_not_refused(jwt: str) -> None:
    assert Token(f"  {jwt}\r\n").reveal() == jwt


@pytest.fixture
def sm(aws: Any) -> Any:
    import boto3

    return boto3.client("secretsmanager")


@pytest.mark.parametrize("as_json", [False, True], ids=["raw", "json"])
@pytest.mark.parametrize("make_bad", BAD.values(), ids=BAD.keys())
def test_bad_token_in_the_secret_is_refused_without_showing_it(
    sm: Any, jwt: str, make_bad: Callable[[str], str], as_json: bool, logs: Logs
) -> None:
    bad = make_bad(jwt)
    sm.create_secret(Name="slurm_token_c", SecretString=json.dumps({"token": bad}) if as_json else bad)
    fake = FakeSlurm()
    try:
        client = SlurmClient(fake.url, SecretsManagerToken(sm, "slurm_token_c"), user="alice",
                             session=build_session(Settings(retries=0)), api_version=VERSION)
        with pytest.raises(SlurmAuthError, match="secret 'slurm_token_c' is not a JWT") as exc:
            client.list_jobs()
        assert fake.seen == []  # never sent
    finally:
        fake.close()
    assert_absent(bad, *exception_texts(exc.value), logs.text, repr(client))


def test_secret_that_looks_like_json_but_is_not(jwt: str) -> None:
    bad = '{"token": "' + jwt + '"'  # truncated JSON
    with pytest.raises(SlurmAuthError, match="not a JSON object") as exc:
        parse_secret(bad, "the token in secret 's'")
    assert_absent(jwt, *exception_texts(exc.value))


def test_bad_token_on_the_command_line(jwt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_TOKEN", raising=False)
    bad = jwt[:50] + "\r\nX-Evil: 1" + jwt[50:]
    assert main(["ping", "--url", "http://127.0.0.1:9", "--token", bad, "--api-version", VERSION]) == 1
    out = capsys.readouterr()
    assert "not a JWT" in out.err
    assert_absent(bad, out.out, out.err)


# ------------------------------------------------------------------ every error path


def echo(status: int, content_type: str = "application/json") -> Callable[[Seen], Reply]:
    """A server (or proxy) that puts the request's headers into its error body."""
    def reply(seen: Seen) -> Reply:
        headers = json.dumps(seen.headers)
        if content_type == "application/json":
            return Reply.json(status, {"errors": [{"error": f"bad request {headers}",
                                                   "description": headers}], "warnings": [headers]})
        return Reply(status, f"<html>{status}: you sent {headers}</html>".encode(), content_type)
    return reply


@pytest.fixture
def fake() -> Iterator[FakeSlurm]:
    server = FakeSlurm()
    yield server
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SUBMIT = JobSubmission(script="#!/bin/sh\ntrue\n", name="hygiene")
PATHS = {"jobs": f"/slurm/{VERSION}/jobs", "submit": f"/slurm/{VERSION}/job/submit"}


def call(client: SlurmClient, what: str) -> Any:
    return client.submit(SUBMIT) if what == "submit" else client.list_jobs()


# name -> (setup(fake, tmp_path) -> (url, user, settings overrides), call, expected error type name)
def _route(method: str, what: str, *replies: Any) -> Callable[[FakeSlurm, Path], tuple[str, str, dict[str, Any]]]:
    def setup(fake: FakeSlurm, _: Path) -> tuple[str, str, dict[str, Any]]:
        fake.add(method, PATHS[what], *replies)
        return fake.url, "alice", {}
    return setup


def _refused(fake: FakeSlurm, _: Path) -> tuple[str, str, dict[str, Any]]:
    return f"http://127.0.0.1:{closed_port()}", "alice", {}


def _bad_user_header(fake: FakeSlurm, _: Path) -> tuple[str, str, dict[str, Any]]:
    return fake.url, "alice\r\nX-Evil: 1", {}


def _tls(fake: FakeSlurm, tmp: Path) -> tuple[str, str, dict[str, Any]]:
    server = FakeSlurm(tls=self_signed(tmp))
    fake.extra = server  # type: ignore[attr-defined]
    return server.url, "alice", {}


def _redirect(fake: FakeSlurm, _: Path) -> tuple[str, str, dict[str, Any]]:
    elsewhere = FakeSlurm()
    fake.extra = elsewhere  # type: ignore[attr-defined]
    fake.add("GET", PATHS["jobs"], Reply(307, b"", headers={"Location": elsewhere.url + PATHS["jobs"]}))
    return fake.url, "alice", {}


ERROR_PATHS: dict[str, tuple[Callable[..., Any], str, str]] = {
    "400 json echo (submit)": (_route("POST", "submit", echo(400)), "submit", "SlurmRejectedError"),
    "422 json echo (submit)": (_route("POST", "submit", echo(422)), "submit", "SlurmRejectedError"),
    "404 html echo": (_route("GET", "jobs", echo(404, "text/html")), "jobs", "SlurmNotFoundError"),
    "500 html echo (submit)": (_route("POST", "submit", echo(500, "text/html")), "submit", "SlurmUnavailableError"),
    "502 text echo": (_route("GET", "jobs", echo(502, "text/plain")), "jobs", "SlurmUnavailableError"),
    "503 json echo (submit)": (_route("POST", "submit", echo(503)), "submit", "SlurmUnavailableError"),
    "511 auth echo": (_route("GET", "jobs", echo(511)), "jobs", "SlurmAuthError"),
    "read timeout (GET)": (_route("GET", "jobs", Reply(200, b"{}", delay=1.0)), "jobs", "SlurmUnavailableError"),
    "read timeout (submit)": (_route("POST", "submit", Reply(200, b"{}", delay=1.0)), "submit", "SlurmUnavailableError"),
    "connection refused": (_refused, "submit", "SlurmUnavailableError"),
    "TLS verification": (_tls, "jobs", "SlurmTLSError"),
    "bad header characters": (_bad_user_header, "jobs", "SlurmRejectedError"),
    "redirect elsewhere": (_redirect, "jobs", "SlurmUnavailableError"),
}


@pytest.fixture(params=list(ERROR_PATHS), ids=list(ERROR_PATHS))
def error_path(request: pytest.FixtureRequest, fake: FakeSlurm, tmp_path: Path) -> Iterator[tuple[str, str, str, str]]:
    setup, what, expected = ERROR_PATHS[request.param]
    url, user, _ = setup(fake, tmp_path)
    yield url, user, what, expected
    extra = getattr(fake, "extra", None)
    if extra is not None:
        assert all(jwt_header_free(s) for s in extra.seen), "the token went to another server"
        extra.close()


def jwt_header_free(seen: Seen) -> bool:
    return not any(k.lower() in ("x-slurm-user-token", "authorization") for k in seen.headers)


def test_error_paths_never_show_the_token(error_path: tuple[str, str, str, str], jwt: str,
                                          logs: Logs) -> None:
    url, user, what, expected = error_path
    settings = Settings(retries=1, read_timeout=0.3, connect_timeout=0.5)
    client = SlurmClient(url, StaticToken(jwt), user=user, session=build_session(settings), api_version=VERSION)
    with pytest.raises(SlurmError) as exc:
        call(client, what)
    assert type(exc.value).__name__ == expected, str(exc.value)
    assert_absent(jwt, *exception_texts(exc.value), logs.text, repr(client))


def test_an_echoed_token_is_redacted_but_the_answer_kept(fake: FakeSlurm, jwt: str) -> None:
    fake.add("POST", PATHS["submit"], echo(400))
    client = SlurmClient(fake.url, StaticToken(jwt), user="alice", session=build_session(Settings()),
                         api_version=VERSION)
    with pytest.raises(SlurmError) as exc:
        client.submit(SUBMIT)
    assert "***" in str(exc.value) and "bad request" in str(exc.value)
    assert exc.value.errors[0]["error"].startswith("bad request")
    assert fake.seen[0].headers["X-SLURM-USER-TOKEN"] == jwt  # it was sent, to the right place


CLI_PATHS = ["400 json echo (submit)", "500 html echo (submit)", "511 auth echo", "read timeout (GET)",
             "connection refused", "TLS verification", "redirect elsewhere"]


@pytest.mark.parametrize("name", CLI_PATHS)
def test_cli_output_never_shows_the_token(name: str, fake: FakeSlurm, tmp_path: Path, jwt: str,
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    setup, what, _ = ERROR_PATHS[name]
    url, _, _ = setup(fake, tmp_path)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"script": SUBMIT.script, "name": "hygiene"}))
    for var in ("SLURM_TOKEN", "SLURM_URL", "SLURM_CA_BUNDLE", "SLURM_INSECURE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_READ_TIMEOUT", "0.3")
    monkeypatch.setenv("SLURM_RETRIES", "0")
    command = ["submit-job", "-j", str(job)] if what == "submit" else ["list-jobs"]
    for fmt in ("json", "table"):
        rc = main(command + ["--url", url, "--token", jwt, "--api-version", VERSION, "-u", "alice", "--format", fmt])
        out = capsys.readouterr()
        assert rc == 1 and "slurm-trigger:" in out.err
        assert_absent(jwt, out.out, out.err)
    extra = getattr(fake, "extra", None)
    if extra is not None:
        assert all(jwt_header_free(s) for s in extra.seen)
        extra.close()


# ------------------------------------------------------------------ events and log lines of the trigger


@pytest.mark.parametrize("name", ["400 json echo (submit)", "503 json echo (submit)", "read timeout (submit)",
                                  "connection refused", "511 auth echo"])
def test_trigger_events_and_logs_never_show_the_token(name: str, aws: Any, fake: FakeSlurm, tmp_path: Path,
                                                      jwt: str, capsys: pytest.CaptureFixture[str],
                                                      logs: Logs) -> None:
    import boto3

    from slurm_trigger.idempotency import create_table
    from slurm_trigger.s3events import ObjectRef
    from slurm_trigger.trigger import build_trigger

    setup, _, _ = ERROR_PATHS[name]
    if name == "511 auth echo":
        setup = _route("POST", "submit", echo(511))
    url, _, _ = setup(fake, tmp_path)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.yaml").write_text(
        "name: p\nmatch: {prefix: in/}\njob:\n  script: |\n    #!/bin/bash\n    true\n")
    ddb, events = boto3.client("dynamodb"), boto3.client("events")
    create_table(ddb, "idem")
    read_events = events_to_queue()
    settings = Settings(slurm_url=url, token=jwt, slurm_user="alice", api_version=VERSION, retries=0,
                        read_timeout=0.3, pipelines_path=str(tmp_path / "pipelines"), idempotency_table="idem")
    trigger = build_trigger(settings, dynamodb_client=ddb, events_client=events)
    texts: list[str] = []
    try:
        texts.append(json.dumps([o.to_dict() for o in trigger.handle(ObjectRef("b", "in/x", version_id="v1"))]))
    except SlurmError as exc:  # transient: raised for a retry
        texts += exception_texts(exc)
    published = read_events()
    out = capsys.readouterr()
    texts += [json.dumps(published), out.out, out.err, logs.text]
    assert any("submission" in line["message"] for line in logs.ours.lines)  # the log line was written
    assert published or name != "400 json echo (submit)"  # a permanent failure is an event
    assert_absent(jwt, *texts)
    extra = getattr(fake, "extra", None)
    if extra is not None:
        extra.close()


# ------------------------------------------------------------------ traces

TRACE_SCRIPT = r'''
import json, sys, time
from aws_xray_sdk.core import xray_recorder

class Memory:
    """An X-Ray emitter that keeps what would go to the daemon."""
    def __init__(self):
        self.sent = []
    def send_entity(self, entity):
        self.sent.append(entity.serialize())
    def set_daemon_address(self, address):
        pass

memory = Memory()
xray_recorder.configure(emitter=memory, sampling=False, context_missing="LOG_ERROR")
from aws_lambda_powertools import Tracer
tracer = Tracer(service="hygiene", disabled=False)  # patches requests, botocore, httplib

from slurm_trigger.settings import Settings
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.client import SlurmClient
from slurm_trigger.slurm.errors import SlurmError
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.slurm.transport import build_session

token, cases = sys.argv[1], json.loads(sys.argv[2])

@tracer.capture_method
def one(url, what):
    client = SlurmClient(url, StaticToken(token), user="alice", api_version="v0.0.42",
                         session=build_session(Settings(retries=0, read_timeout=0.3)))
    if what == "submit":
        return client.submit(JobSubmission(script="#!/bin/sh\n"))
    return client.list_jobs()

@tracer.capture_method
def mint(sm):
    from slurm_trigger.slurm.minting import MintedToken, SigningKey
    return MintedToken(SigningKey.from_secret(sm, "slurm_jwt_key"), "alice").token()

xray_recorder.begin_segment("hygiene")
for url, what in cases:
    try:
        one(url, what)
    except SlurmError:
        pass
import os, boto3
from moto import mock_aws
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
with mock_aws():  # the signing key read through the (patched) botocore, as in Lambda
    sm = boto3.client("secretsmanager")
    sm.create_secret(Name="slurm_jwt_key", SecretString=sys.argv[3])
    print(json.dumps({"minted": mint(sm).reveal()}), file=sys.stderr)
xray_recorder.end_segment()
print(json.dumps(memory.sent))
'''


def test_traces_never_show_the_token(tmp_path: Path, jwt: str) -> None:
    cases, servers = [], []
    for name in ("400 json echo (submit)", "500 html echo (submit)", "511 auth echo", "read timeout (GET)",
                 "connection refused", "TLS verification"):
        setup, what, _ = ERROR_PATHS[name]
        server = FakeSlurm()
        servers.append(server)
        url, _, _ = setup(server, tmp_path)
        cases.append((url, what))
    try:
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        done = subprocess.run([sys.executable, "-c", TRACE_SCRIPT, jwt, json.dumps(cases), key], cwd=REPO,
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "POWERTOOLS_TRACE_DISABLED": "false",
                                   "AWS_XRAY_SDK_ENABLED": "true", "PYTHONPATH": str(REPO)})
    finally:
        for server in servers + [getattr(s, "extra") for s in servers if hasattr(s, "extra")]:
            server.close()
    assert done.returncode == 0, done.stderr[-2000:]
    segments = [json.loads(s) for s in json.loads(done.stdout.strip().splitlines()[-1])]
    text = json.dumps(segments)
    assert text.count('"exceptions"') >= len(cases)  # every error was traced, with its message
    for kind in ("SlurmRejectedError", "SlurmUnavailableError", "SlurmAuthError", "SlurmTLSError"):
        assert f'"type": "{kind}"' in text
    assert "/slurm/v0.0.42/" in text  # the HTTP calls were traced (their URLs)
    assert "GetSecretValue" in text  # so was the signing key's read
    minted = json.loads(done.stderr.strip().splitlines()[-1])["minted"]
    assert_absent(jwt, text, done.stderr)
    assert_absent(minted, text)
    assert key not in text and base64.b64decode(key).hex() not in text
