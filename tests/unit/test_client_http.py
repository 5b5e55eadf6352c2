"""The client over real HTTP: a tiny local server replays the answers recorded from real
slurmrestd (tests/fixtures/recorded/<version>/index.json says which request got which
status and body), so error mapping, negotiation, token refetch and retries run through
requests/urllib3 exactly as in production."""
from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import Logged
from fakeslurm import FakeSlurm, Reply

from slurm_trigger.settings import Settings
from slurm_trigger.slurm.auth import SecretsManagerToken, StaticToken
from slurm_trigger.slurm.client import SlurmClient, build_client
from slurm_trigger.slurm.dialects import DIALECTS
from slurm_trigger.slurm.errors import (
    SlurmAuthError,
    SlurmNotFoundError,
    SlurmRejectedError,
    SlurmUnavailableError,
    SlurmVersionError,
)
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.slurm.transport import build_session

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "recorded"
VERSIONS = ("v0.0.38", "v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45")
# recorded from 26.05 with slurmdbd: /slurmdb/ answers too
ACCOUNTING = ("v0.0.43", "v0.0.44", "v0.0.45")
GOOD = "good-token-value-0123456789"
STALE = "stale-token-value-9876543210"


@pytest.fixture
def fake() -> Iterator[FakeSlurm]:
    server = FakeSlurm()
    yield server
    server.close()


def recorded(version: str) -> dict[str, dict[str, Any]]:
    return json.loads((RECORDED / version / "index.json").read_text())


def reply_from(version: str, name: str) -> Reply:
    meta = recorded(version)[name]
    body = (RECORDED / version / name).read_bytes()
    return Reply(meta["status"], body, meta.get("content_type") or "application/json")


def replay(fake: FakeSlurm, version: str, names: tuple[str, ...] | None = None) -> None:
    """Route every recorded request of ``version`` (or ``names``) to its recorded answer,
    and /openapi/v3 to the recorded list of paths."""
    for name, meta in recorded(version).items():
        if names is not None and name not in names:
            continue
        if name == "openapi-paths.json":
            paths = json.loads((RECORDED / version / name).read_text())
            fake.add("GET", "/openapi/v3", Reply.json(200, {"paths": {p: {} for p in paths}}))
        elif not name.startswith("error-"):
            fake.add(meta["method"], meta["path"], reply_from(version, name))


def client_for(fake: FakeSlurm, token: str = GOOD, **kw: Any) -> SlurmClient:
    settings = Settings(retries=kw.pop("retries", 2), read_timeout=kw.pop("read_timeout", 5.0))
    return SlurmClient(fake.url, StaticToken(token), user="alice", session=build_session(settings), **kw)


def job_path(version: str, name: str) -> int:
    return int(recorded(version)[name]["path"].rsplit("/", 1)[1])


# ------------------------------------------------------------------ recorded answers


@pytest.mark.parametrize("version", VERSIONS)
def test_negotiates_newest_served(fake: FakeSlurm, version: str) -> None:
    replay(fake, version, ("openapi-paths.json",))
    client = client_for(fake)
    # each recording's server: 22.05 (v0.0.38), 24.11 (up to v0.0.42), 26.05 (up to v0.0.45)
    expected = {"v0.0.38": "v0.0.38", "v0.0.43": "v0.0.45", "v0.0.44": "v0.0.45",
                "v0.0.45": "v0.0.45"}.get(version, "v0.0.42")
    assert client.version == expected and client.version == expected
    assert client.accounting is (version in ACCOUNTING)
    assert [s.path for s in fake.seen] == ["/openapi/v3"]  # once per client
    assert fake.seen[0].headers["X-SLURM-USER-NAME"] == "alice"  # 22.05 wants auth here


@pytest.mark.parametrize("version", VERSIONS)
def test_jobs_on_recorded_answers(fake: FakeSlurm, version: str) -> None:
    replay(fake, version)
    client = client_for(fake, api_version=version)
    done = client.get_job(job_path(version, "job-completed.json"))
    assert (done.state, done.exit_code, done.signal, done.is_final) == ("COMPLETED", 0, None, True)
    assert done.end_time and done.end_time.tzinfo is not None
    assert done.comment == "slurm-trigger recorded fixture"
    assert done.working_directory == "/tmp/slurm-trigger-jobs"
    assert done.standard_output == f"/tmp/slurm-trigger-jobs/{done.job_id}.out"
    failed = client.get_job(job_path(version, "job-failed.json"))
    assert (failed.state, failed.exit_code, failed.reason) == ("FAILED", 3, "NonZeroExitCode")
    running = client.get_job(job_path(version, "job-running.json"))
    assert (running.state, running.exit_code, running.end_time) == ("RUNNING", None, None)
    pending = client.get_job(job_path(version, "job-pending.json"))
    assert (pending.state, pending.reason, pending.start_time) == ("PENDING", "JobHeldUser", None)
    with pytest.raises(SlurmNotFoundError) as exc:
        client.get_job(999999)
    assert 2017 in [e.get("error_number") for e in exc.value.errors]


@pytest.mark.parametrize("version", VERSIONS)
def test_cancelled_jobs(fake: FakeSlurm, version: str) -> None:
    replay(fake, version, ("job-cancelled.json", "job-cancelled-pending.json"))
    client = client_for(fake, api_version=version)
    for name in ("job-cancelled.json", "job-cancelled-pending.json"):
        job = client.get_job(job_path(version, name))
        assert job.state == "CANCELLED" and job.is_final


@pytest.mark.parametrize("indent", [None, 2])
def test_a_big_listing_is_decoded_as_it_streams_and_the_connection_kept(fake: FakeSlurm, indent: int | None) -> None:
    """The listing is split into its jobs as it is read (jobsplit), compact or pretty as
    slurmrestd sends it; read to the end, the connection is reused by the next call."""
    body = json.loads((RECORDED / "v0.0.42" / "jobs.json").read_text())
    job = body["jobs"][0]
    body["jobs"] = [dict(job, job_id=1000 + i) for i in range(600)]  # ~3.4 MB: several reads
    fake.add("GET", "/slurm/v0.0.42/jobs", Reply(200, json.dumps(body, indent=indent).encode()))
    client = client_for(fake, api_version="v0.0.42")
    first, second = client.list_jobs(), client.list_jobs()
    assert [j.job_id for j in first.jobs] == [j.job_id for j in second.jobs] == list(range(1000, 1600))
    assert first.last_update == body["last_update"]["number"]
    assert fake.seen[-1].peer == fake.seen[-2].peer  # one connection for both


def test_a_body_cut_short_is_unavailable_and_names_no_token() -> None:
    """A read that fails half way (the server closes before Content-Length) fails the
    call like a failed request: unavailable, without the token, nothing chained."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer_half() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n{\"jobs\": [")

    thread = threading.Thread(target=answer_half, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    client = SlurmClient(url, StaticToken(GOOD), user="alice", session=build_session(Settings(retries=0)),
                         api_version="v0.0.42")
    try:
        with pytest.raises(SlurmUnavailableError) as exc:
            client.list_jobs()
    finally:
        thread.join(5)
        server.close()
    assert GOOD not in str(exc.value) and exc.value.__context__ is None and exc.value.__cause__ is None


@pytest.mark.parametrize("version", VERSIONS)
def test_list_and_update_time(fake: FakeSlurm, version: str) -> None:
    replay(fake, version, ("jobs.json",))
    client = client_for(fake, api_version=version)
    page = client.list_jobs()
    assert page.changed and len(page.jobs) >= 4
    assert all(j.user for j in page.jobs)
    index = recorded(version)
    for name, changed in (("jobs-update-time-changed.json", True),
                          ("jobs-update-time-unchanged.json", False),
                          ("jobs-update-time-unchanged.txt", False)):
        if name not in index:
            continue
        epoch = int(index[name]["path"].split("update_time=")[1].removeprefix("uts"))
        ours = f"/slurm/{version}/jobs?update_time={DIALECTS[version].jobs_params(epoch)['update_time']}"
        fake.add("GET", ours, reply_from(version, name))  # v0.0.42 takes both forms
        page = client.list_jobs(update_time=epoch)
        assert page.changed is changed, name
        assert fake.seen[-1].path == ours
        if not changed:
            assert page.jobs == ()


@pytest.mark.parametrize("version", VERSIONS)
def test_submit_on_recorded_answers(fake: FakeSlurm, version: str) -> None:
    replay(fake, version)
    client = client_for(fake, api_version=version)
    request = json.loads((RECORDED / version / "submit.request.json").read_text())
    job = request["job"]
    sub = JobSubmission(
        script=request.get("script") or job["script"],
        name=job["name"],
        working_directory=job["current_working_directory"],
        standard_output=job["standard_output"],
        standard_error=job["standard_error"],
        comment=job["comment"],
        environment=dict(e.split("=", 1) for e in job["environment"])
        if isinstance(job["environment"], list) else job["environment"],
    )
    assert client.submit_body(sub) == request  # our body is the one Slurm accepted
    result = client.submit(sub)
    assert result.job_id == json.loads((RECORDED / version / "submit.json").read_text())["job_id"]
    assert fake.seen[-1].body == request
    held = reply_from(version, "submit-held.json")
    fake.add("POST", f"/slurm/{version}/job/submit", held)
    assert "held" in " ".join(client.submit(sub).warnings)  # 22.05: error 2042, 24.11: warning


REJECTED = ("submit-rejected.json", "submit-rejected-no-script.json", "submit-invalid-json.txt",
            "submit-rejected-no-environment.json", "submit-rejected-no-cwd.json")


@pytest.mark.parametrize("version,name", [
    (v, n) for v in VERSIONS for n in REJECTED if n in json.loads((RECORDED / v / "index.json").read_text())
])
def test_rejected_submissions(fake: FakeSlurm, version: str, name: str) -> None:
    """Permanent, never transient: 26.05 answers 422 (2127, 2063) where 24.11 said 500."""
    fake.add("POST", f"/slurm/{version}/job/submit", reply_from(version, name))
    client = client_for(fake, api_version=version)
    with pytest.raises(SlurmRejectedError) as exc:
        client.submit(JobSubmission(script="#!/bin/sh\ntrue\n"))
    assert exc.value.errors and not exc.value.transient
    assert len(fake.seen) == 1
    assert str(exc.value).startswith("Slurm rejected POST")


def test_200_with_errors_is_not_success(fake: FakeSlurm) -> None:
    """22.05 creates the job and reports 2015 next to its job_id."""
    fake.add("POST", "/slurm/v0.0.38/job/submit", Reply.json(200, {
        "errors": [{"error_code": 2015, "error": "Requested partition configuration not available now"}],
        "job_id": 21, "step_id": "BATCH", "job_submit_user_msg": ""}))
    with pytest.raises(SlurmRejectedError) as exc:
        client_for(fake, api_version="v0.0.38").submit(JobSubmission(script="#!/bin/sh\n"))
    assert exc.value.job_id == 21 and exc.value.status == 200
    assert "partition configuration" in str(exc.value)


@pytest.mark.parametrize(
    "version,running_ok,unknown",
    [("v0.0.38", True, SlurmNotFoundError), ("v0.0.40", True, None),
     ("v0.0.41", True, None), ("v0.0.42", True, SlurmNotFoundError),
     ("v0.0.43", True, SlurmNotFoundError), ("v0.0.44", True, SlurmNotFoundError),
     ("v0.0.45", True, SlurmNotFoundError)],
)
def test_cancel(fake: FakeSlurm, version: str, running_ok: bool, unknown: Any) -> None:
    replay(fake, version, ("cancel-running.json", "cancel-pending.json", "cancel-finished.json",
                           "cancel-not-found.json"))
    client = client_for(fake, api_version=version)
    for name in ("cancel-running.json", "cancel-pending.json", "cancel-finished.json"):
        assert client.cancel_job(job_path(version, name)) is None
    if unknown is None:
        client.cancel_job(999999)  # v0.0.40/41 cannot tell
    else:
        with pytest.raises(unknown):
            client.cancel_job(999999)


@pytest.mark.parametrize("version", VERSIONS)
def test_ping_and_diag(fake: FakeSlurm, version: str) -> None:
    replay(fake, version, ("ping.json", "diag.json"))
    client = client_for(fake, api_version=version)
    assert client.ping()["pings"][0]["hostname"] == "vm"
    assert "statistics" in client.diag()


# ------------------------------------------------------------------ auth failures


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "name,call",
    [("error-bad-token.json", lambda c: c.list_jobs()),
     ("error-bad-token-submit.json", lambda c: c.submit(JobSubmission(script="#!/bin/sh\n"))),
     ("error-bad-token-ping.json", lambda c: c.ping()),
     ("error-no-headers.txt", lambda c: c.list_jobs())],
)
def test_auth_failures_in_each_versions_form(fake: FakeSlurm, version: str, name: str, call: Any,
                                              logged: Logged, caplog: pytest.LogCaptureFixture) -> None:
    meta = recorded(version)[name]
    fake.add(meta["method"], meta["path"], reply_from(version, name))
    client = client_for(fake, token=STALE, api_version=version)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with pytest.raises(SlurmAuthError) as exc:
        call(client)
    assert exc.value.transient
    assert len(fake.seen) == 1  # a static token cannot be refreshed: no second try
    for text in (str(exc.value), repr(exc.value), json.dumps(exc.value.to_dict()), logged.text, caplog.text,
                 repr(client)):
        assert STALE not in text


@pytest.fixture
def secrets(aws: Any) -> Any:
    import boto3

    client = boto3.client("secretsmanager")
    client.create_secret(Name="slurm_token_test", SecretString=STALE)
    return client


@pytest.mark.parametrize("version,bad", [("v0.0.38", "error-bad-token.json"), ("v0.0.42", "error-bad-token.json")])
def test_token_refetched_once_then_call_repeated(fake: FakeSlurm, secrets: Any, version: str, bad: str,
                                                  logged: Logged, caplog: pytest.LogCaptureFixture) -> None:
    ok = reply_from(version, "jobs.json")
    fake.add("GET", f"/slurm/{version}/jobs", lambda s: ok if s.headers["X-SLURM-USER-TOKEN"] == GOOD
             else reply_from(version, bad))
    provider = SecretsManagerToken(secrets, "slurm_token_test", max_age=300)
    client = SlurmClient(fake.url, provider, user="alice", session=build_session(Settings()),
                         api_version=version)
    assert provider.token().reveal() == STALE  # cached now
    secrets.put_secret_value(SecretId="slurm_token_test", SecretString=json.dumps({"token": GOOD, "user": "bob"}))
    caplog.set_level(logging.DEBUG, logger="urllib3")  # not botocore: its own DEBUG prints secrets
    assert client.list_jobs().jobs
    assert [s.headers["X-SLURM-USER-TOKEN"] for s in fake.seen] == [STALE, GOOD]
    assert fake.seen[-1].headers["X-SLURM-USER-NAME"] == "bob"  # the secret's user wins
    assert [line["message"] for line in logged.lines] == ["slurmrestd refused the token; fetched it again and retrying once"]
    for text in (repr(provider), str(provider), logged.text, caplog.text):
        assert GOOD not in text and STALE not in text


def test_refused_twice_raises_auth_error(fake: FakeSlurm, secrets: Any) -> None:
    fake.add("GET", "/slurm/v0.0.42/jobs", reply_from("v0.0.42", "error-bad-token.json"))
    provider = SecretsManagerToken(secrets, "slurm_token_test")
    client = SlurmClient(fake.url, provider, user="alice", session=build_session(Settings()),
                         api_version="v0.0.42")
    provider.token()
    secrets.put_secret_value(SecretId="slurm_token_test", SecretString="another-bad-token-xyz")
    with pytest.raises(SlurmAuthError) as exc:
        client.list_jobs()
    assert len(fake.seen) == 2 and exc.value.status == 511
    assert "another-bad-token-xyz" not in str(exc.value) and STALE not in str(exc.value)


def test_ping_down_refetches_then_raises(fake: FakeSlurm, secrets: Any) -> None:
    fake.add("GET", "/slurm/v0.0.42/ping", reply_from("v0.0.42", "error-bad-token-ping.json"))
    provider = SecretsManagerToken(secrets, "slurm_token_test")
    client = SlurmClient(fake.url, provider, user="alice", session=build_session(Settings()),
                         api_version="v0.0.42")
    provider.token()
    secrets.put_secret_value(SecretId="slurm_token_test", SecretString="yet-another-token")
    with pytest.raises(SlurmAuthError, match="did not answer the ping"):
        client.ping()
    assert [s.headers["X-SLURM-USER-TOKEN"] for s in fake.seen] == [STALE, "yet-another-token"]


def test_missing_secret_is_an_auth_error(aws: Any) -> None:
    import boto3

    provider = SecretsManagerToken(boto3.client("secretsmanager"), "slurm_token_nope")
    with pytest.raises(SlurmAuthError, match="slurm_token_nope"):
        provider.token()


# ------------------------------------------------------------------ retries and timeouts


def test_get_retried_on_503_then_answer(fake: FakeSlurm) -> None:
    fake.add("GET", "/slurm/v0.0.42/ping", Reply(503, b"busy", "text/plain"),
             reply_from("v0.0.42", "ping.json"))
    client = client_for(fake, api_version="v0.0.42", retries=2)
    assert client.ping()["pings"]
    assert len(fake.seen) == 2


def test_get_gives_up_after_retries_with_unavailable(fake: FakeSlurm) -> None:
    fake.add("GET", "/slurm/v0.0.42/jobs", Reply(429, b"slow down", "text/plain", {"Retry-After": "0"}))
    client = client_for(fake, api_version="v0.0.42", retries=1)
    with pytest.raises(SlurmUnavailableError) as exc:
        client.list_jobs()
    assert exc.value.status == 429 and exc.value.transient
    assert len(fake.seen) == 2


def test_post_is_never_retried_by_the_transport(fake: FakeSlurm) -> None:
    fake.add("POST", "/slurm/v0.0.42/job/submit", Reply(503, b"busy", "text/plain"))
    client = client_for(fake, api_version="v0.0.42", retries=3)
    with pytest.raises(SlurmUnavailableError) as exc:
        client.submit(JobSubmission(script="#!/bin/sh\n"))
    # sent once; a 5xx cannot rule out that slurmctld made the job (a proxy may have forwarded it)
    assert len(fake.seen) == 1 and exc.value.maybe_submitted is True


def test_post_read_timeout_may_have_submitted(fake: FakeSlurm) -> None:
    fake.add("POST", "/slurm/v0.0.42/job/submit",
             Reply(200, (RECORDED / "v0.0.42" / "submit.json").read_bytes(), delay=1.0))
    client = client_for(fake, api_version="v0.0.42", read_timeout=0.2)
    with pytest.raises(SlurmUnavailableError) as exc:
        client.submit(JobSubmission(script="#!/bin/sh\n"))
    assert exc.value.maybe_submitted is True and exc.value.to_dict()["maybe_submitted"] is True
    assert len(fake.seen) == 1


def test_connection_refused_did_not_submit() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = SlurmClient(f"http://127.0.0.1:{port}", StaticToken(GOOD), user="alice",
                         session=build_session(Settings(retries=0)), api_version="v0.0.42")
    with pytest.raises(SlurmUnavailableError) as exc:
        client.submit(JobSubmission(script="#!/bin/sh\n"))
    assert exc.value.maybe_submitted is False
    assert GOOD not in str(exc.value)


# ------------------------------------------------------------------ negotiation edge cases


def test_pinned_version_skips_negotiation(fake: FakeSlurm) -> None:
    replay(fake, "v0.0.40", ("ping.json",))
    client = client_for(fake, api_version="v0.0.40")
    assert client.version == "v0.0.40"
    client.ping()
    assert [s.path for s in fake.seen] == ["/slurm/v0.0.40/ping"]


def test_unknown_pin_and_nothing_in_common() -> None:
    with pytest.raises(SlurmVersionError):
        SlurmClient("http://127.0.0.1:1", StaticToken(GOOD), user="a", api_version="v0.0.99")


def test_no_common_version(fake: FakeSlurm) -> None:
    fake.add("GET", "/openapi/v3", Reply.json(200, {"paths": {"/slurm/v0.0.36/ping": {}}}))
    with pytest.raises(SlurmVersionError, match="v0.0.36"):
        client_for(fake).version


def test_probe_when_openapi_is_missing(fake: FakeSlurm) -> None:
    replay(fake, "v0.0.41", ("ping.json",))
    assert client_for(fake).version == "v0.0.41"


def test_find_jobs_by_comment(fake: FakeSlurm) -> None:
    replay(fake, "v0.0.42", ("jobs.json", "openapi-paths.json"))
    client = client_for(fake, api_version="v0.0.42")
    found = client.find_jobs_by_comment("recorded fixture")
    assert found and all("recorded fixture" in j.comment for j in found)
    assert client.find_jobs_by_comment("no-such-key") == []
    assert not any(s.path.startswith("/slurmdb/") for s in fake.seen)  # no accounting there


# ------------------------------------------------------------------ accounting (slurmdbd)


@pytest.mark.parametrize("version", ACCOUNTING)
def test_accounting_job_on_recorded_answers(fake: FakeSlurm, version: str) -> None:
    replay(fake, version)
    client = client_for(fake, api_version=version)
    assert client.accounting
    ok_id, fail_id = (job_path(version, n) for n in ("slurmdb-job-completed.json", "slurmdb-job-failed.json"))
    done = client.get_accounting_job(ok_id)
    assert done is not None
    assert (done.job_id, done.state, done.exit_code, done.signal, done.is_final) == (ok_id, "COMPLETED", 0, None, True)
    assert done.submit_time and done.start_time and done.end_time and done.end_time.tzinfo is not None
    assert done.end_time >= done.start_time >= done.submit_time
    assert (done.name, done.user, done.partition) == ("fixture-ok", "ciuser", "debug")
    assert done.comment == "slurm-trigger recorded fixture"
    assert done.working_directory == "/tmp/slurm-trigger-jobs"
    assert done.standard_output == f"/tmp/slurm-trigger-jobs/{ok_id}.out"  # stdout_expanded
    failed = client.get_accounting_job(fail_id)
    assert failed and (failed.state, failed.exit_code) == ("FAILED", 3)
    assert client.get_accounting_job(999999) is None  # 200, jobs [] and a warning


@pytest.mark.parametrize("version", ACCOUNTING)
def test_find_jobs_by_comment_in_accounting(fake: FakeSlurm, version: str) -> None:
    """A takeover after MinJobAge: slurmctld lists nothing, slurmdbd still has the jobs."""
    replay(fake, version, ("openapi-paths.json",))
    fake.add("GET", f"/slurmdb/{version}/jobs", reply_from(version, "slurmdb-jobs.json"))
    fake.add("GET", f"/slurm/{version}/jobs", Reply.json(200, {"jobs": [], "errors": [], "warnings": []}))
    client = client_for(fake, api_version=version)
    found = client.find_jobs_by_comment("recorded fixture")
    listed = json.loads((RECORDED / version / "slurmdb-jobs.json").read_text())["jobs"]
    assert [j.job_id for j in found] == sorted(j["job_id"] for j in listed) and len(found) == 3
    assert {j.state for j in found} == {"COMPLETED", "FAILED", "CANCELLED"}
    query = next(s.path for s in fake.seen if s.path.startswith(f"/slurmdb/{version}/jobs"))
    assert "users=alice" in query and "skip_steps=true" in query and "start_time=uts" in query
    since = int(query.split("start_time=uts")[1].split("&")[0])
    assert time.time() - 8 * 86400 < since < time.time() - 6 * 86400  # a bounded window
    assert client.find_jobs_by_comment("no-such-key") == []


@pytest.mark.parametrize("version", ACCOUNTING)
def test_accounting_bad_token_is_502(fake: FakeSlurm, version: str) -> None:
    replay(fake, version, ("openapi-paths.json",))
    meta = recorded(version)["slurmdb-error-bad-token.json"]
    fake.add("GET", meta["path"], reply_from(version, "slurmdb-error-bad-token.json"))
    client = client_for(fake, token=STALE, api_version=version)
    with pytest.raises(SlurmAuthError) as exc:
        client.get_accounting_job(int(meta["path"].rsplit("/", 1)[1]))
    assert exc.value.status == 502 and exc.value.transient and "slurmdbd is down" in str(exc.value)
    assert STALE not in str(exc.value)


def test_no_accounting_without_slurmdb_paths(fake: FakeSlurm) -> None:
    replay(fake, "v0.0.42", ("openapi-paths.json",))
    client = client_for(fake)
    assert client.accounting is False and client.get_accounting_job(5) is None
    assert [s.path for s in fake.seen] == ["/openapi/v3"]


# ------------------------------------------------------------------ build_client


class Forbidden:
    """An AWS client that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected AWS call {name}")


def test_build_client_uses_no_aws_when_url_and_token_given(fake: FakeSlurm) -> None:
    replay(fake, "v0.0.42", ("ping.json", "openapi-paths.json"))
    settings = Settings(slurm_url=fake.url, token=GOOD, slurm_user="carol")
    client = build_client(settings, secrets_client=Forbidden(), ec2_client=Forbidden(), ssm_client=Forbidden())
    client.ping()
    assert client.version == "v0.0.42"
    assert fake.seen[-1].headers["X-SLURM-USER-NAME"] == "carol"


def test_build_client_discovers_and_reads_secret(aws: Any, fake: FakeSlurm, logged: Logged) -> None:
    import boto3

    from slurm_trigger.slurm import discovery

    discovery.clear_cache()
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": "parallelcluster:cluster-name", "Value": "demo"},
                                             {"Key": "parallelcluster:node-type", "Value": "HeadNode"}]}])
    ip = ec2.describe_instances()["Reservations"][0]["Instances"][0]["PrivateIpAddress"]
    sm = boto3.client("secretsmanager")
    sm.create_secret(Name="slurm_token_demo", SecretString=GOOD)
    settings = Settings(cluster_name="demo", slurm_scheme="http", slurm_port=6820, api_version="v0.0.42")
    with pytest.raises(ValueError, match="plain HTTP to another host") as exc:
        build_client(settings, secrets_client=sm, ec2_client=ec2)
    assert "SLURM_ALLOW_HTTP=true" in str(exc.value)
    client = build_client(dataclasses.replace(settings, allow_http=True), secrets_client=sm, ec2_client=ec2)
    assert client.base_url == f"http://{ip}:6820"
    [warning] = logged.lines
    assert warning["message"].startswith("plain HTTP to slurmrestd") and warning["level"] == "WARNING"
    assert (warning["cluster"], warning["url"], warning["allowed_by"]) == ("demo", client.base_url, "SLURM_ALLOW_HTTP=true")
    assert GOOD not in logged.text
    discovery.clear_cache()
