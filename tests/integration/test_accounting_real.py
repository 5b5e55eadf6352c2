"""A job that really left slurmctld (after MinJobAge) is still known to slurmdbd: the client
reads its final state from accounting, a takeover finds it by comment, and ``describe-job``
falls back to it. Against the local 26.05 cluster with slurmdbd (``forky``, MinJobAge=60:
slurmctld purges a finished job 60-120 s after it ends)."""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from slurm_trigger_cli import main
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import SlurmClient
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.errors import SlurmNotFoundError
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.slurm.transport import build_session
from conftest import not_available

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.real_slurm, pytest.mark.timeout(600)]
LEAVE_SECONDS = 300  # bound: MinJobAge (60 s) + slurmctld's purge interval (60 s) + load


def _client(cluster: dict[str, Any], token: str, version: str | None = None) -> SlurmClient:
    return SlurmClient(cluster["url"], StaticToken(token), user=cluster["user"],
                       session=build_session(Settings(retries=2)), api_version=version)


def test_job_that_left_slurmctld_comes_from_accounting(slurm_clusters: dict[str, Any],
                                                       capsys: pytest.CaptureFixture) -> None:
    cluster = next((c for c in slurm_clusters.values() if c.get("accounting")), None)
    if cluster is None:
        not_available("no local cluster with accounting (scripts/local-slurm start forky)")
    token = subprocess.run([str(REPO / "scripts" / "local-slurm"), "token", cluster["name"], "3600"],
                           check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    client = _client(cluster, token)
    assert client.accounting and client.version == cluster["versions"][-1]
    tag = f"accounting-test {uuid.uuid4().hex[:8]}"
    job_id = client.submit(JobSubmission(
        script="#!/bin/bash\necho leaving\nexit 4\n", name="accounting-test", comment=tag,
        working_directory=cluster["workdir"], environment={"PATH": "/usr/bin:/bin"}, time_limit=5,
    )).job_id

    deadline = time.monotonic() + LEAVE_SECONDS
    left = False
    while time.monotonic() < deadline:
        try:
            client.get_job(job_id)
        except SlurmNotFoundError:
            left = True
            break
        time.sleep(2)
    assert left, f"job {job_id} still in slurmctld after {LEAVE_SECONDS} s (MinJobAge?)"
    assert job_id not in {j.job_id for j in client.list_jobs().jobs}

    for version in cluster["versions"]:  # v0.0.42 … v0.0.45, each under /slurmdb/
        job = _client(cluster, token, version).get_accounting_job(job_id)
        assert job is not None, version
        assert (job.state, job.exit_code, job.is_final, job.comment) == ("FAILED", 4, True, tag), version
        assert job.end_time and job.start_time and job.end_time >= job.start_time

    found = client.find_jobs_by_comment(tag)  # the takeover's search, no stub: accounting only
    assert [(j.job_id, j.state) for j in found] == [(job_id, "FAILED")]

    code = main(["describe-job", "-j", str(job_id), "--url", cluster["url"], "--token", token,
                 "-u", cluster["user"]])
    out = capsys.readouterr().out
    assert code == 0
    described = json.loads(out)
    assert (described["source"], described["state"], described["exit_code"]) == ("accounting", "FAILED", 4)
