"""``GET /jobs/state``, the detail fetches and the bounded takeover search against the REAL
local Slurm, every version served (v0.0.38 has no /jobs/state: it keeps the full listing).
The clusters are shared: everything is scoped to this test's jobs (a unique comment)."""
from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from slurm_trigger.slurm.client import SlurmClient, details_budget
from slurm_trigger.slurm.errors import SlurmVersionError
from slurm_trigger.slurm.models import JobSubmission

pytestmark = pytest.mark.real_slurm


class Counted(SlurmClient):
    """The real client, counting the paths it asks (minus the version prefix)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.asked: list[str] = []

    def _send(self, method: str, path: str, *a: Any, **kw: Any) -> Any:
        self.asked.append(path.split("/", 3)[-1] if path.startswith("/slurm/") else path)
        return super()._send(method, path, *a, **kw)


@pytest.fixture
def client(slurm_target) -> Counted:
    settings = Settings(slurm_url=slurm_target.url, slurm_user=slurm_target.user, api_version=slurm_target.version,
                        token=slurm_target.token(), read_timeout=30)
    real = build_client(settings)
    return Counted(real.base_url, real._auth, user=real.user, session=real._session, api_version=slurm_target.version)


def held(client: SlurmClient, target: Any, comment: str, n: int = 1) -> list[int]:
    """``n`` held jobs (never run) with ``comment``."""
    sub = JobSubmission(script="#!/bin/bash\nexit 0\n", name="jobstate-test", partition="debug",
                        working_directory=target.workdir, standard_output="/dev/null",
                        environment={"PATH": "/usr/bin:/bin"}, comment=comment, extra={"hold": True})
    return [client.submit(sub).job_id for _ in range(n)]


def test_states_and_details_of_a_few_jobs(client: Counted, slurm_target) -> None:
    tag = f"jobstate-{uuid.uuid4().hex[:10]}"
    ids = held(client, slurm_target, tag, 3)
    try:
        if not client.serves_job_states:
            assert client.version in ("v0.0.38", "v0.0.40")
            with pytest.raises(SlurmVersionError):
                client.job_states()
            return
        assert client.job_states(ids[:2] + [99_999_999]) == {ids[0]: "PENDING", ids[1]: "PENDING"}
        assert {i: s for i, s in client.job_states().items() if i in ids} == dict.fromkeys(ids, "PENDING")
        assert client.job_states([]) == {}
        fetched = client.get_jobs(ids + [99_999_999]).jobs
        listed = [j for j in client.list_jobs().jobs if j.job_id in ids]
        assert list(fetched) == sorted(listed, key=lambda j: j.job_id)  # the same Job, whichever way
        assert {j.comment for j in fetched} == {tag} and all(j.state == "PENDING" for j in fetched)
    finally:
        for i in ids:
            client.cancel_job(i)


def test_a_takeover_asks_for_the_newest_jobs_only(client: Counted, slurm_target) -> None:
    """The search bounded by the claim's time finds what the full listing finds, and asks
    for /jobs only when the walk through the newest jobs used its budget (other tests'
    jobs submitted meanwhile) or could not rule out a wrap-around of the ids."""
    tag = f"jobstate-takeover-{uuid.uuid4().hex[:10]}"
    claimed = time.time()
    [mine] = held(client, slurm_target, f"{tag} st-key", 1)
    try:
        client.asked.clear()
        bounded = client.find_jobs_by_comment(tag, since=claimed)
        asked = list(client.asked)
        assert [j.job_id for j in bounded] == [mine] == [j.job_id for j in client.find_jobs_by_comment(tag)]
        if not client.serves_job_states:
            assert "jobs" in asked
            return
        assert asked[0] == "jobs/state" and f"job/{mine}" in asked
        fetched = [int(p.split("/")[1]) for p in asked if p.startswith("job/")]
        states = client.job_states()
        if "jobs" in asked:
            assert len(fetched) >= details_budget(len(states)) or min(fetched) <= min(states), asked
    finally:
        client.cancel_job(mine)
