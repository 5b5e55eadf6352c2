"""SlurmClient against the real local slurmrestd, once per API version served."""
from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from slurm_trigger.slurm import SlurmClient
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.dialects import newest
from slurm_trigger.slurm.errors import SlurmAuthError, SlurmNotFoundError, SlurmRejectedError
from slurm_trigger.slurm.models import Job, JobsPage, JobSubmission
from slurm_trigger.settings import Settings
from slurm_trigger.slurm.transport import build_session

pytestmark = pytest.mark.real_slurm
WAIT_SECONDS = 120  # bound of every poll; a healthy single-node cluster needs a few seconds


def client(target: Any, token: str | None = None, pin: bool = True) -> SlurmClient:
    return SlurmClient(target.url, StaticToken(token or target.token()), user=target.user,
                       session=build_session(Settings(retries=2)),
                       api_version=target.version if pin else None)


def submission(target: Any, tag: str, script: str, **kw: Any) -> JobSubmission:
    return JobSubmission(
        script=f"#!/bin/bash\n{script}\n",
        name=f"client-{tag}",
        working_directory=target.workdir,
        standard_output=f"{target.workdir}/client-{tag}-%j.out",
        environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "CLIENT_TEST": tag},
        comment=f"client-test {tag}",
        time_limit=5,
        **kw,
    )


def wait_final(c: SlurmClient, job_id: int) -> Job:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        job = c.get_job(job_id)
        if job.is_final or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def wait_state(c: SlurmClient, job_id: int, states: set[str]) -> Job:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        job = c.get_job(job_id)
        if job.state in states or job.is_final or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_submit_list_describe_cancel(slurm_target: Any) -> None:
    c = client(slurm_target)
    tag = uuid.uuid4().hex[:8]
    ok = c.submit(submission(slurm_target, f"{tag}-ok", 'echo "hello $CLIENT_TEST"'))
    fail = c.submit(submission(slurm_target, f"{tag}-fail", "exit 3"))
    long = c.submit(submission(slurm_target, f"{tag}-long", "sleep 300"))
    assert len({ok.job_id, fail.job_id, long.job_id}) == 3

    listed = {j.job_id for j in c.list_jobs().jobs}
    assert {ok.job_id, fail.job_id, long.job_id} <= listed
    assert {j.job_id for j in c.find_jobs_by_comment(f"client-test {tag}")} == {ok.job_id, fail.job_id, long.job_id}

    running = wait_state(c, long.job_id, {"RUNNING"})
    assert running.state in {"PENDING", "RUNNING"} and running.exit_code is None
    c.cancel_job(long.job_id)

    done = wait_final(c, ok.job_id)
    assert (done.state, done.exit_code, done.signal) == ("COMPLETED", 0, None)
    assert done.user == slurm_target.user and done.partition
    assert done.comment == f"client-test {tag}-ok"
    assert done.working_directory == slurm_target.workdir
    assert done.submit_time and done.start_time and done.end_time
    assert done.submit_time.tzinfo is not None and done.end_time >= done.start_time
    assert done.standard_output == f"{slurm_target.workdir}/client-{tag}-ok-{ok.job_id}.out"
    out = slurm_target.host_path(done.standard_output)
    deadline = time.monotonic() + WAIT_SECONDS
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"hello {tag}-ok" in out.read_text()

    failed = wait_final(c, fail.job_id)
    assert (failed.state, failed.exit_code, failed.reason) == ("FAILED", 3, "NonZeroExitCode")

    cancelled = wait_final(c, long.job_id)
    assert cancelled.state == "CANCELLED" and cancelled.is_final
    c.cancel_job(long.job_id)  # again: already ended, not an error


def test_update_time(slurm_target: Any) -> None:
    c = client(slurm_target)
    page = c.list_jobs(update_time=int(time.time()) + 3600)
    assert page.changed is False and page.jobs == ()
    page = c.list_jobs(update_time=int(time.time()) - 3600 * 24)
    assert page.changed is True


def test_unknown_job(slurm_target: Any) -> None:
    with pytest.raises(SlurmNotFoundError):
        client(slurm_target).get_job(987654321)


def test_bad_token(slurm_target: Any) -> None:
    bad = "not-a-valid-token-" + uuid.uuid4().hex
    c = client(slurm_target, token=bad)
    with pytest.raises(SlurmAuthError) as exc:
        c.list_jobs()
    assert bad not in str(exc.value)
    with pytest.raises(SlurmAuthError):
        c.ping()
    with pytest.raises(SlurmAuthError):
        c.submit(submission(slurm_target, "bad-token", "true"))


@pytest.mark.parametrize("kw", [{"partition": "no-such-partition"}, {"working_directory": None}])
def test_rejected_body(slurm_target: Any, kw: dict) -> None:
    sub = submission(slurm_target, "rejected", "true")
    for k, v in kw.items():
        setattr(sub, k, v)
    if sub.working_directory is None and slurm_target.version == "v0.0.38":
        sub.extra = {"bogus_field": 1}  # 22.05 defaults the cwd; an unknown key is refused
    with pytest.raises(SlurmRejectedError) as exc:
        client(slurm_target).submit(sub)
    assert exc.value.errors and not exc.value.transient


def test_negotiates_newest_served(slurm_target: Any) -> None:
    c = client(slurm_target, pin=False)
    served = c.served_versions()
    assert slurm_target.version in served
    assert c.version == newest(served)
    assert c.version == {"host": "v0.0.38", "chroot": "v0.0.42", "forky": "v0.0.45"}[slurm_target.name]
    assert c.ping()["pings"]
    assert c.accounting is slurm_target.accounting  # detected from /openapi/v3, no setting


def test_accounting(slurm_target: Any) -> None:
    """slurmdbd's record of finished jobs; a takeover finds a job that left slurmctld."""
    c = client(slurm_target)
    assert c.accounting is slurm_target.accounting
    if not slurm_target.accounting:
        assert c.get_accounting_job(1) is None and c.list_accounting_jobs(0) == []
        return
    tag = uuid.uuid4().hex[:8]
    ok = c.submit(submission(slurm_target, f"{tag}-ok", "echo accounted"))
    fail = c.submit(submission(slurm_target, f"{tag}-fail", "exit 3"))
    wait_final(c, ok.job_id), wait_final(c, fail.job_id)
    deadline = time.monotonic() + WAIT_SECONDS  # slurmdbd learns of the end ~1 s later
    while True:
        done, failed = c.get_accounting_job(ok.job_id), c.get_accounting_job(fail.job_id)
        if (done and done.is_final and failed and failed.is_final) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done and failed
    assert (done.state, done.exit_code, done.signal) == ("COMPLETED", 0, None)
    assert (failed.state, failed.exit_code) == ("FAILED", 3)  # slurmdbd keeps no reason here
    assert done.comment == f"client-test {tag}-ok" and done.user == slurm_target.user
    assert done.name == f"client-{tag}-ok" and done.partition
    assert done.submit_time and done.start_time and done.end_time and done.end_time >= done.start_time
    assert done.working_directory == slurm_target.workdir
    assert done.standard_output == f"{slurm_target.workdir}/client-{tag}-ok-{ok.job_id}.out"
    assert c.get_accounting_job(987654321) is None  # unknown: 200, jobs [] and a warning

    # a takeover after MinJobAge: slurmctld no longer lists the job, accounting does
    c.list_jobs = lambda update_time=None: JobsPage(jobs=())  # type: ignore[method-assign]
    found = c.find_jobs_by_comment(f"client-test {tag}")
    assert [j.job_id for j in found] == sorted([ok.job_id, fail.job_id])
    assert c.find_jobs_by_comment(f"client-test {tag}-none") == []
    # the trigger passes the job's name: slurmdbd returns only jobs of that name
    named = c.find_jobs_by_comment(f"client-test {tag}", name=f"client-{tag}-ok")
    assert [j.job_id for j in named] == [ok.job_id]

    bad = client(slurm_target, token="not-a-valid-token-" + uuid.uuid4().hex)
    bad._served, bad._served_db = c.served_versions(), [slurm_target.version]  # skip /openapi/v3
    with pytest.raises(SlurmAuthError) as exc:  # slurmdbd: 502 "Unable to connect to database"
        bad.get_accounting_job(ok.job_id)
    assert exc.value.status == 502 and "slurmdbd" in str(exc.value)
