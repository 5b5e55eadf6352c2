"""Steps chained with Slurm dependencies, submitted exactly once as a unit: moto for AWS,
the REAL local Slurm, and the dependencies read back from Slurm."""
from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest

from slurm_trigger import setstore
from slurm_trigger.slurm.errors import SlurmUnavailableError
from slurm_trigger.steps import step_key
from test_sets import SETS_TABLE, check_schema, ref, set_jobs, wait_file  # sibling modules
from test_trigger import World, make_world, notification

pytestmark = pytest.mark.real_slurm

JOB = """
      partition: debug
      working_directory: WORKDIR
      standard_output: /dev/null
      environment: {PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: OUTDIR}
      time_limit: 2"""

CHAIN = f"""
name: chain
match: {{prefix: "chain/"}}
steps:
  - name: first
    job:
      name: step-first
      script: "#!/bin/bash\\nuntil [ -e \\"$OUT_DIR/go\\" ]; do sleep 0.5; done\\n"{JOB}
  - name: second
    after: {{first: afterok}}
    job:
      name: step-second
      script: "#!/bin/bash\\ntrue\\n"{JOB}
  - name: third
    after: {{second: afterany}}
    singleton: true
    job:
      name: step-third
      script: "#!/bin/bash\\ntrue\\n"{JOB}
"""

FANOUT = f"""
name: fanout
match: {{prefix: "fan/"}}
collect: {{count: 2}}
steps:
  - name: split
    as: array
    job:
      script: "#!/bin/bash\\nsleep 2\\n"{JOB}
  - name: each
    as: array
    after: {{split: aftercorr}}
    job:
      script: |
        #!/bin/bash
        V=SLURM_TRIGGER_MEMBER_$SLURM_ARRAY_TASK_ID
        printf '%s' "${{!V}}" > "$OUT_DIR/each-$SLURM_ARRAY_JOB_ID-$SLURM_ARRAY_TASK_ID"{JOB}
  - name: gather
    after: {{each: afterany}}
    job:
      script: "#!/bin/bash\\ntrue\\n"{JOB}
"""


class FailOnce:
    """The Slurm client, except that the first submit of the job named ``name`` fails
    as an unreachable head node does (Slurm certainly made nothing)."""

    def __init__(self, client: Any, name: str) -> None:
        self._client, self._name, self.failed = client, name, False

    def submit(self, sub: Any) -> Any:
        if sub.name == self._name and not self.failed:
            self.failed = True
            raise SlurmUnavailableError("connection refused (injected)")
        return self._client.submit(sub)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def world(aws, slurm_target, tmp_path) -> World:
    setstore.create_table(boto3.client("dynamodb"), SETS_TABLE)
    return make_world(slurm_target, tmp_path, CHAIN, FANOUT)


def test_a_transient_failure_halfway_ends_with_each_step_once_and_the_dependencies_right(world):
    r = ref(f"chain/{uuid.uuid4().hex[:8]}.dat")
    world.trigger.client = FailOnce(world.trigger.client, "step-second")
    with pytest.raises(SlurmUnavailableError):
        world.trigger.handle_event(notification(r))
    outcome = world.trigger.handle_event(notification(r))[0]  # the redelivery
    assert outcome.status == "submitted" and set(outcome.steps) == {"first", "second", "third"}
    key = outcome.idempotency_key
    ids = {}
    for step in ("first", "second", "third"):
        jobs = world.jobs_with(step_key(key, step))  # counted in Slurm
        assert [j.job_id for j in jobs] == [outcome.steps[step]], step
        ids[step] = jobs[0]
    assert str(ids["first"].job_id) in (ids["second"].dependency or ""), ids["second"]
    assert "afterok" in ids["second"].dependency
    # (Slurm drops a dependency once it holds: singleton does at once when no other
    # job of that name runs, so only the afterany is left to read back)
    assert f"afterany:{ids['second'].job_id}" in (ids["third"].dependency or ""), ids["third"]
    # the first step waits for this file, so the dependencies above are read while they
    # hold, however slow the machine (Slurm drops a dependency once it is satisfied)
    world.target.host_path(f"{world.outdir}/go").write_text("", encoding="utf-8")
    assert world.trigger.handle_event(notification(r))[0].status == "duplicate"
    submitted = [e for e in world.events() if e["detail-type"] == "Slurm Job Submitted"]
    for event in submitted:
        check_schema(event, "slurm-job-submitted")
    details = [e["detail"] for e in submitted]
    assert sorted(d["source"]["step"] for d in details) == ["first", "second", "third"]
    for step in ("second", "third"):
        assert world.wait_final(ids[step].job_id).state == "COMPLETED"


def test_a_set_fans_out_as_arrays_chained_task_by_task(world):
    folder = f"fan/{uuid.uuid4().hex[:8]}"
    keys = [f"{folder}/b.csv", f"{folder}/a.csv"]
    outcomes = [world.trigger.handle_event(notification(ref(k)))[0] for k in keys]
    assert [o.status for o in outcomes] == ["collected", "submitted"]
    steps = outcomes[-1].steps
    for task, key in enumerate(sorted(keys)):
        assert wait_file(world, f"each-{steps['each']}-{task}") == key
    for step, job_id in steps.items():
        assert set_jobs(world, step_key(outcomes[-1].idempotency_key, step)) == {job_id}
