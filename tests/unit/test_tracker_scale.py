"""A cluster past what one cursor item held (~57,000 live tracked jobs, after which the
save failed after publishing and stopped the tracker for good): 120,000 jobs, the cursor
in moto's DynamoDB. Job items live in a dict here (120,000 conditional puts to moto
take minutes; they were never the problem: one item a job)."""
from __future__ import annotations

from typing import Any, Iterable

import boto3
import msgspec

from slurm_trigger.eventbus import EventBus
from slurm_trigger.jobstore import DynamoDBJobStore, TrackedJob, create_table
from slurm_trigger.tracker import Tracker
from tests.unit.test_tracker import CLUSTER, T0, FakeEvents, FakeSlurm

JOBS = 120_000


class JobsInMemory(DynamoDBJobStore):
    """DynamoDB for the lease and the cursor; the job items in a dict."""

    def __init__(self, db: Any, table: str) -> None:
        super().__init__(db, table)
        self.items: dict[int, TrackedJob] = {}
        self.cursor_puts: list[str] = []
        db.meta.events.register("provide-client-params.dynamodb.PutItem", lambda params, **_: self.cursor_puts.append(params["Item"]["pk"]["S"]))

    def get_jobs(self, cluster: str, job_ids: Iterable[int]) -> dict[int, TrackedJob]:
        return {i: self.items[i] for i in job_ids if i in self.items}

    def save_job(self, job: TrackedJob, expected: TrackedJob | None) -> bool:
        current = self.items.get(job.job_id)
        if (current.state if current else None) != (expected.state if expected else None):
            return False
        self.items[job.job_id] = job
        return True


def test_120000_tracked_jobs_poll_and_save_their_cursor(aws) -> None:
    db = boto3.client("dynamodb", region_name="us-east-1")
    create_table(db, "jobs")
    store = JobsInMemory(db, "jobs")
    clock = [T0.timestamp() + 3600]
    slurm, events = FakeSlurm(clock), FakeEvents()
    for i in range(JOBS):
        slurm.set(1_000_000 + i, "RUNNING" if i % 3 else "PENDING")
    bus = EventBus(events, "default", "slurm-trigger", attempts=1)

    def tracker() -> Tracker:
        return Tracker(slurm, store, bus, CLUSTER, clock=lambda: clock[0], max_changes=0)

    first = tracker().poll()
    assert len(first.transitions) == JOBS and len(events.entries) == JOBS and first.published == JOBS
    assert store.load_cursor(CLUSTER).update_time == slurm.now()  # saved: the poll did not fail on size
    assert len(store.load_cursor(CLUSTER).known) == JOBS

    clock[0] += 60
    for i in range(0, 300, 3):  # 100 jobs move
        slurm.jobs[1_000_000 + i] = msgspec.structs.replace(slurm.jobs[1_000_000 + i], state="RUNNING", start_time=T0)
    slurm.changed_at = slurm.now()
    store.cursor_puts.clear()
    second = tracker().poll()
    assert sorted(t["jobId"] for t in second.transitions) == [1_000_000 + i for i in range(0, 300, 3)]
    assert len(events.entries) == JOBS + 100
    shards = [pk for pk in store.cursor_puts if pk.startswith(f"known#{CLUSTER}#")]
    assert 0 < len(shards) <= 100 and f"cursor#{CLUSTER}" in store.cursor_puts  # only the shards that changed
    assert store.load_cursor(CLUSTER).known[1_000_000].startswith("RUNNING|")

    clock[0] += 60
    third = tracker().poll()  # nothing moved: nothing published, nothing saved but the cursor item
    assert third.transitions == [] and len(events.entries) == JOBS + 100
