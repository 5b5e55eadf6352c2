"""Tracker logic on moto's DynamoDB with a scripted Slurm (cases a real cluster cannot
stage on demand: a crash between publish and save, a job Slurm forgot, a reused id).
The same paths run against real Slurm in tests/integration/test_tracker_real.py."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest

from chalicelib import provenance
from chalicelib.eventbus import EventBus, EventBusError
from chalicelib.jobstore import LOST, DynamoDBJobStore, create_table
from chalicelib.provenance import Source
from chalicelib.slurm.errors import SlurmNotFoundError
from chalicelib.slurm.models import Job, JobsPage
from chalicelib.tracker import LOST_REASON, Tracker, event_id

CLUSTER = "c1"
T0 = datetime(2026, 11, 25, 4, 0, 0, tzinfo=timezone.utc)
SRC = Source(bucket="in", key="runs/a b.csv", pipeline="align", version_id="v1")


class FakeSlurm:
    """Answers like slurmrestd: every job once anything changed since ``update_time``."""

    def __init__(self, clock: list[float]) -> None:
        self.jobs: dict[int, Job] = {}
        self.clock = clock
        self.last_update = 0
        self.calls: list[Any] = []
        self.lookups: list[int] = []

    def set(self, job_id: int, state: str, ours: bool = True, **kw: Any) -> None:
        kw.setdefault("submit_time", T0)
        comment = provenance.encode(SRC) if ours else "someone else's"
        self.jobs[job_id] = Job(job_id=job_id, name=f"job{job_id}", state=state, comment=comment, user="u", partition="debug", **kw)
        self.last_update = int(self.clock[0])

    def forget(self, job_id: int) -> None:
        del self.jobs[job_id]
        self.last_update = int(self.clock[0])

    def list_jobs(self, update_time: int | None = None) -> JobsPage:
        self.calls.append(update_time)
        if update_time is not None and update_time - 1 >= self.last_update:  # slurmctld's test
            return JobsPage((), changed=False)
        return JobsPage(tuple(self.jobs.values()), changed=True, last_update=self.last_update)

    def get_job(self, job_id: int) -> Job:
        self.lookups.append(job_id)
        if job_id not in self.jobs:
            raise SlurmNotFoundError(f"job {job_id} not found", status=404)
        return self.jobs[job_id]


class FakeEvents:
    """An events client that keeps the entries it accepted; ``refuse`` ids fail once."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.refuse: set[str] = set()

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        out = []
        for e in Entries:
            eid = json.loads(e["Detail"])["eventId"]
            if eid in self.refuse:
                out.append({"ErrorCode": "InternalFailure", "ErrorMessage": "no"})
            else:
                self.entries.append(e)
                out.append({"EventId": eid})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in out), "Entries": out}

    def details(self) -> list[dict[str, Any]]:
        return [json.loads(e["Detail"]) for e in self.entries]

    def transitions(self) -> list[tuple[int, str | None, str]]:
        return [(d["jobId"], d["previousState"], d["state"]) for d in self.details()]


class Counting:
    """Counts the store calls that cost DynamoDB requests."""

    def __init__(self, inner: DynamoDBJobStore) -> None:
        self.inner = inner
        self.counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return attr(*a, **kw)

        return call


@pytest.fixture
def env(aws):
    db = boto3.client("dynamodb", region_name="us-east-1")
    create_table(db, "jobs")
    store = Counting(DynamoDBJobStore(db, "jobs"))
    clock = [T0.timestamp() + 3600]
    slurm, events = FakeSlurm(clock), FakeEvents()
    bus = EventBus(events, "default", "slurm-trigger", attempts=1)

    def tracker(**kw: Any) -> Tracker:
        return Tracker(slurm, store, bus, CLUSTER, clock=lambda: clock[0], **kw)

    return slurm, events, store, tracker, clock


def test_each_transition_once_foreign_jobs_ignored(env) -> None:
    slurm, events, store, tracker, _ = env
    slurm.set(1, "PENDING")
    slurm.set(2, "RUNNING")
    slurm.set(3, "RUNNING", ours=False)
    first = tracker().poll()
    assert first.sweep and slurm.calls == [None]
    assert sorted(events.transitions()) == [(1, None, "PENDING"), (2, None, "RUNNING")]
    assert (first.pending, first.running, first.jobs_seen, first.tracked_seen) == (1, 1, 3, 2)

    tracker().poll()  # nothing moved
    assert len(events.entries) == 2
    slurm.set(1, "RUNNING")
    slurm.set(2, "COMPLETED", exit_code=0, end_time=T0)
    slurm.set(3, "COMPLETED", ours=False)
    third = tracker().poll()
    assert sorted(events.transitions()[2:]) == [(1, "PENDING", "RUNNING"), (2, "RUNNING", "COMPLETED")]
    assert third.by_state() == {"RUNNING": 1, "COMPLETED": 1}
    assert [j.state for j in store.list_jobs(CLUSTER)] == ["RUNNING", "COMPLETED"]

    detail = events.details()[-1]
    assert detail["exitCode"] == 0 and detail["endedAt"] == "2026-11-25T04:00:00Z"
    assert detail["source"] == {"bucket": "in", "key": "runs/a b.csv", "versionId": "v1", "s3Uri": "s3://in/runs/a b.csv", "pipeline": "align"}
    assert detail["eventId"] == event_id(CLUSTER, 2, "COMPLETED", "2026-11-25T04:00:00Z")
    assert events.entries[-1]["Resources"] == ["slurm:c1:job/2", "arn:aws:s3:::in/runs/a b.csv"]


def test_store_work_follows_changes_not_jobs(env) -> None:
    slurm, events, store, tracker, _ = env
    for i in range(300):
        slurm.set(i, "RUNNING")
    tracker().poll()
    store.counts.clear()
    slurm.set(7, "COMPLETED")
    result = tracker().poll()
    assert result.jobs_seen == 300 and len(result.transitions) == 1
    assert store.counts == {"acquire_lease": 1, "load_cursor": 1, "get_jobs": 1, "save_job": 1, "save_cursor": 1, "release_lease": 1}


def test_incremental_update_time_and_unchanged_answer(env) -> None:
    slurm, events, store, tracker, clock = env
    slurm.set(1, "RUNNING")
    tracker().poll()
    assert store.load_cursor(CLUSTER).update_time == max(slurm.last_update, int(clock[0]) - 10)
    clock[0] += 60
    result = tracker().poll()  # the change of the last poll's second is listed again
    assert slurm.calls[-1] == slurm.last_update and result.changed
    assert store.load_cursor(CLUSTER).update_time == int(clock[0]) - 10
    clock[0] += 60
    quiet = tracker().poll()  # nothing changed for 2 minutes: Slurm says so without jobs
    assert slurm.calls[-1] == int(clock[0]) - 70
    assert not quiet.changed and quiet.jobs_seen == 0 and quiet.running == 1
    assert result.transitions == [] and len(events.entries) == 1


def test_a_crash_between_publish_and_save_publishes_again_with_the_same_id(env) -> None:
    slurm, events, store, tracker, _ = env
    slurm.set(1, "RUNNING")
    tracker().poll()
    slurm.set(1, "FAILED", exit_code=3)
    real_save = store.inner.save_job
    store.inner.save_job = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Lambda died"))
    with pytest.raises(RuntimeError):
        tracker().poll()
    store.inner.save_job = real_save
    tracker().poll()
    tracker().poll()
    ids = [d["eventId"] for d in events.details() if d["state"] == "FAILED"]
    assert len(ids) == 2 and ids[0] == ids[1]  # once more, never lost, same id
    assert store.get_jobs(CLUSTER, [1])[1].state == "FAILED"


def test_refused_events_are_not_saved_and_come_again(env) -> None:
    slurm, events, store, tracker, _ = env
    slurm.set(1, "RUNNING")
    slurm.set(2, "RUNNING")
    tracker().poll()
    before = store.load_cursor(CLUSTER).update_time
    slurm.set(1, "COMPLETED")
    slurm.set(2, "CANCELLED")
    refused = event_id(CLUSTER, 2, "CANCELLED", "2026-11-25T04:00:00Z")
    events.refuse = {refused}
    with pytest.raises(EventBusError):
        tracker().poll()
    assert store.get_jobs(CLUSTER, [1, 2])[2].state == "RUNNING"
    assert store.get_jobs(CLUSTER, [1])[1].state == "COMPLETED"
    assert store.load_cursor(CLUSTER).update_time == before
    events.refuse = set()
    tracker().poll()
    assert sorted(events.transitions()[2:]) == [(1, "RUNNING", "COMPLETED"), (2, "RUNNING", "CANCELLED")]


def test_a_held_lease_skips_quietly(env) -> None:
    slurm, events, store, tracker, _ = env
    slurm.set(1, "RUNNING")
    assert store.acquire_lease(CLUSTER, "someone", 60)
    result = tracker().poll()
    assert result.skipped and slurm.calls == [] and events.entries == []
    store.release_lease(CLUSTER, "someone")
    assert not tracker().poll().skipped


def test_a_job_slurm_forgot_becomes_lost_once(env) -> None:
    slurm, events, store, tracker, clock = env
    slurm.set(1, "RUNNING")
    slurm.set(2, "RUNNING")
    slurm.set(3, "COMPLETED")
    tracker(sweep_seconds=600).poll()
    slurm.forget(1)  # purged after MinJobAge while we were not looking
    slurm.forget(3)  # final: expected to go, no lookup
    clock[0] += 60
    tracker(sweep_seconds=600).poll()  # not a sweep: nothing noticed yet
    assert slurm.lookups == [] and len(events.entries) == 3
    clock[0] += 600
    result = tracker(sweep_seconds=600).poll()
    assert result.sweep and result.lost == 1 and slurm.lookups == [1]
    lost = events.details()[-1]
    assert (lost["jobId"], lost["previousState"], lost["state"], lost["reason"]) == (1, "RUNNING", LOST, LOST_REASON)
    assert lost["source"]["pipeline"] == "align"
    assert store.get_jobs(CLUSTER, [1])[1].final
    assert sorted(store.load_cursor(CLUSTER).known) == [2]
    tracker().poll(sweep=True)
    assert len(events.entries) == 4 and slurm.lookups == [1]


def test_a_vanished_job_found_by_id_is_diffed_normally(env) -> None:
    slurm, events, store, tracker, _ = env
    slurm.set(1, "RUNNING")
    tracker().poll()
    hidden = Job(job_id=1, state="TIMEOUT", comment=provenance.encode(SRC), submit_time=T0)
    slurm.jobs.clear()
    slurm.get_job = lambda job_id: hidden  # not listed, but known by id
    tracker().poll(sweep=True)
    assert events.transitions()[-1] == (1, "RUNNING", "TIMEOUT")


def test_a_reused_job_id_is_a_new_job(env) -> None:
    slurm, events, store, tracker, _ = env
    slurm.set(1, "COMPLETED")
    tracker().poll()
    slurm.set(1, "COMPLETED", submit_time=datetime(2026, 11, 26, tzinfo=timezone.utc))
    tracker().poll()
    assert events.transitions() == [(1, None, "COMPLETED"), (1, None, "COMPLETED")]
    assert len({d["eventId"] for d in events.details()}) == 2


def test_track_all_jobs(env) -> None:
    slurm, events, store, tracker, _ = env
    slurm.set(3, "RUNNING", ours=False)
    tracker(track_all=True).poll()
    detail = events.details()[0]
    assert detail["jobId"] == 3 and detail["source"] is None
    assert events.entries[0]["Resources"] == ["slurm:c1:job/3"]


def test_scheduled_handler_polls_and_emits_metrics(env, monkeypatch, capsys) -> None:
    """app.poll_jobs through Chalice's test client: one poll, EMF metrics on stdout."""
    import importlib.util
    from pathlib import Path

    from chalice.test import Client

    spec = importlib.util.spec_from_file_location("app", Path(__file__).resolve().parents[2] / "app.py")
    chalice_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chalice_app)

    slurm, events, store, tracker, _ = env
    slurm.set(1, "RUNNING")
    slurm.set(2, "FAILED", exit_code=3)
    monkeypatch.setattr(chalice_app, "_tracker", lambda: tracker())
    with Client(chalice_app.app) as client:
        event = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])
        answer = client.lambda_.invoke("poll_jobs", event).payload
    assert answer["skipped"] is False and len(answer["transitions"]) == 2
    emf = [_emf(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    by_state = {m["State"]: m["JobStateTransitions"] for m in emf if "State" in m}
    assert by_state == {"FAILED": 1.0, "RUNNING": 1.0}
    assert all(m["service"] == "slurm-trigger" for m in emf)
    main = next(m for m in emf if "JobsRunning" in m)
    assert (main["JobsRunning"], main["JobsPending"], main["JobsSeenPerPoll"]) == (1.0, 0.0, 2.0)
    assert main["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "SlurmTrigger"
    assert "PollDuration" in main


def test_record_metrics_counts_a_skipped_poll(capsys) -> None:
    from chalicelib.observability import metrics
    from chalicelib.tracker import PollResult, record_metrics

    record_metrics(PollResult(CLUSTER, skipped=True), metrics)
    metrics.flush_metrics()
    emf = _emf(capsys.readouterr().out.strip().splitlines()[-1])
    assert emf["PollsSkipped"] == 1.0


def _emf(line: str) -> dict[str, Any]:
    """One EMF record with single-element value lists flattened."""
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in json.loads(line).items()}


def test_a_big_first_poll_is_spread_over_polls(env) -> None:
    slurm, events, store, tracker, clock = env
    for i in range(25):
        slurm.set(i, "RUNNING")
    first = tracker(max_changes=10).poll()
    assert (len(first.transitions), first.deferred) == (10, 15)
    assert store.load_cursor(CLUSTER).update_time is None  # not advanced: the rest come next
    clock[0] += 60
    tracker(max_changes=10).poll()
    third = tracker(max_changes=10).poll()
    assert third.deferred == 0
    assert sorted(j for j, _, _ in events.transitions()) == list(range(25))
    assert tracker(max_changes=10).poll().transitions == []
