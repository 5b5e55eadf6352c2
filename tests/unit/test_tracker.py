"""Tracker logic on moto's DynamoDB with a scripted Slurm (cases a real cluster cannot
stage on demand: a crash between publish and save, a job Slurm forgot, a reused id).
The same paths run against real Slurm in tests/integration/test_tracker_real.py."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest

from slurm_trigger import provenance
from slurm_trigger.eventbus import EventBus, EventBusError
from slurm_trigger.jobstore import LOST, DynamoDBJobStore, create_table
from slurm_trigger.provenance import Source
from slurm_trigger.slurm.errors import SlurmNotFoundError, SlurmUnavailableError
from slurm_trigger.slurm.models import Job, JobsPage, LazyJobs, job_key
from slurm_trigger.tracker import LOST_REASON, REQUEUED, Tracker, event_id

CLUSTER = "c1"
T0 = datetime(2026, 11, 25, 4, 0, 0, tzinfo=timezone.utc)
SRC = Source(bucket="in", key="runs/a b.csv", pipeline="align", version_id="v1")


class FakeSlurm:
    """Answers like slurmctld: every job once anything changed since ``update_time``,
    with ``last_update`` its own clock (``skew`` seconds off ours) when it answered."""

    def __init__(self, clock: list[float]) -> None:
        self.jobs: dict[int, Job] = {}
        self.clock = clock
        self.skew = 0
        self.changed_at = 0  # slurmctld's last_job_update
        self.calls: list[Any] = []
        self.lookups: list[int] = []

    def now(self) -> int:
        return int(self.clock[0]) + self.skew

    def set(self, job_id: int, state: str, ours: bool = True, **kw: Any) -> None:
        kw.setdefault("submit_time", T0)
        comment = provenance.encode(SRC) if ours else "someone else's"
        self.jobs[job_id] = Job(job_id=job_id, name=f"job{job_id}", state=state, comment=comment, user="u", partition="debug", **kw)
        self.changed_at = self.now()

    def forget(self, job_id: int) -> None:
        del self.jobs[job_id]
        self.changed_at = self.now()

    def list_jobs(self, update_time: int | None = None) -> JobsPage:
        self.calls.append(update_time)
        if update_time is not None and update_time - 1 >= self.changed_at:  # slurmctld's test
            return JobsPage((), changed=False)
        return JobsPage(tuple(self.jobs.values()), changed=True, last_update=self.now())

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
    clock[0] += 5
    tracker().poll()
    assert store.load_cursor(CLUSTER).update_time == slurm.now()
    clock[0] += 60
    quiet = tracker().poll()  # nothing changed: Slurm says so without jobs, the cursor stays
    assert slurm.calls[-1] == slurm.now() - 60
    assert not quiet.changed and quiet.jobs_seen == 0 and quiet.running == 1
    assert store.load_cursor(CLUSTER).update_time == slurm.now() - 60
    slurm.set(1, "COMPLETED")
    clock[0] += 60
    result = tracker().poll()
    assert result.changed and result.transitions[0]["state"] == "COMPLETED"
    assert store.load_cursor(CLUSTER).update_time == slurm.now()
    assert len(events.entries) == 2


@pytest.mark.parametrize("skew", [-3600, -120, 0, 120, 3600])
def test_the_cursor_is_slurms_clock_whatever_ours_says(env, skew: int) -> None:
    """With our clock minus a margin as the cursor, a head node 2 minutes behind would be
    asked for changes "since" a time still in its future: every change of those minutes
    missed until the next sweep."""
    slurm, events, store, tracker, clock = env
    slurm.skew = skew
    slurm.set(1, "RUNNING")
    tracker(sweep_seconds=10**6).poll()
    assert store.load_cursor(CLUSTER).update_time == slurm.now()
    for step, state in enumerate(["SUSPENDED", "RUNNING", "COMPLETED"]):
        clock[0] += 30
        slurm.set(1, state)
        result = tracker(sweep_seconds=10**6).poll()
        assert not result.sweep and [t["state"] for t in result.transitions] == [state], (step, slurm.calls)
    assert [s for _, _, s in events.transitions()] == ["RUNNING", "SUSPENDED", "RUNNING", "COMPLETED"]


def test_a_change_in_the_second_of_the_answer_is_not_missed(env) -> None:
    """``last_update`` is the second slurmctld built the answer in; a change later in that
    same second is still listed next time (slurmctld answers "no change" only when
    ``update_time - 1`` is not older than its last change)."""
    slurm, events, store, tracker, clock = env
    slurm.set(1, "RUNNING")
    tracker().poll()
    slurm.set(1, "FAILED")  # same second as the answer
    assert [t["state"] for t in tracker().poll().transitions] == ["FAILED"]


class NoLastUpdate(FakeSlurm):
    """v0.0.38 / v0.0.39: no ``last_update`` in /jobs; diag's ``req_time`` is Slurm's clock."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(clock)
        self.diags = 0

    def list_jobs(self, update_time: int | None = None) -> JobsPage:
        page = super().list_jobs(update_time)
        return JobsPage(page.jobs, page.changed, None)

    def diag(self) -> dict[str, Any]:
        self.diags += 1
        return {"statistics": {"req_time": self.now(), "req_time_start": 1}}


def test_without_last_update_the_cursor_is_slurms_clock_from_diag(env) -> None:
    _, events, store, _, clock = env
    slurm = NoLastUpdate(clock)
    slurm.skew = -300
    bus = EventBus(events, "default", "slurm-trigger", attempts=1)
    tracker = lambda: Tracker(slurm, store, bus, CLUSTER, clock=lambda: clock[0], sweep_seconds=10**6)  # noqa: E731
    slurm.set(1, "RUNNING")
    clock[0] += 5
    tracker().poll()
    assert store.load_cursor(CLUSTER).update_time == slurm.now() - 1
    clock[0] += 60
    assert not tracker().poll().changed and slurm.diags == 1  # unchanged answer: no diag
    slurm.set(1, "COMPLETED")
    assert [t["state"] for t in tracker().poll().transitions] == ["COMPLETED"]
    assert store.load_cursor(CLUSTER).update_time == slurm.now() - 1 and slurm.diags == 2


def test_without_last_update_or_diag_the_cursor_stays(env) -> None:
    _, events, store, _, clock = env
    slurm = NoLastUpdate(clock)
    slurm.diag = lambda: (_ for _ in ()).throw(SlurmUnavailableError("diag refused", status=503))
    bus = EventBus(events, "default", "slurm-trigger", attempts=1)
    slurm.set(1, "RUNNING")
    Tracker(slurm, store, bus, CLUSTER, clock=lambda: clock[0]).poll()
    assert store.load_cursor(CLUSTER).update_time is None  # every poll lists all: slower, never blind
    assert events.transitions() == [(1, None, "RUNNING")]


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


def test_foreign_jobs_are_never_parsed_and_a_job_that_gains_our_comment_is_tracked(env) -> None:
    """Without TRACK_ALL_JOBS a job is ours by the marker in its comment, read from the
    listing's key: other users' jobs are parsed on no poll and take no room in the
    cursor; ``scontrol update comment=`` that stamps a job makes it tracked next poll."""
    slurm, events, store, tracker, clock = env
    parsed: list[int] = []

    def parse(job: Job) -> Job:
        parsed.append(job.job_id)
        return job

    slurm.list_jobs = lambda update_time=None: JobsPage(  # type: ignore[method-assign]
        LazyJobs(list(slurm.jobs.values()), parse, job_key), last_update=slurm.now())
    slurm.set(1, "RUNNING")
    for job_id in (2, 3, 4):
        slurm.set(job_id, "RUNNING", ours=False)
    slurm.jobs[4] = msgspec.structs.replace(slurm.jobs[4], comment="see slurm-trigger: the docs")  # the marker, no payload
    first = tracker().poll()
    assert parsed == [1] and events.transitions() == [(1, None, "RUNNING")]
    assert (first.jobs_seen, first.tracked_seen) == (4, 1)
    assert set(store.load_cursor(CLUSTER).known) == {1}

    clock[0] += 60
    slurm.set(2, "COMPLETED", ours=False)  # something changed: Slurm lists every job again
    parsed.clear()
    tracker().poll()
    assert parsed == [] and len(events.entries) == 1

    clock[0] += 60
    stamped = Source(bucket="in", key="later.csv", pipeline="align")
    slurm.jobs[3] = msgspec.structs.replace(slurm.jobs[3], comment=provenance.encode(stamped))
    slurm.changed_at = slurm.now()
    tracker().poll()
    assert parsed == [3] and events.transitions()[1:] == [(3, None, "RUNNING")]
    assert events.details()[-1]["source"]["key"] == "later.csv"
    assert set(store.load_cursor(CLUSTER).known) == {1, 3}


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
    monkeypatch.setattr(chalice_app, "_trackers", lambda: (tracker(),))
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
    from slurm_trigger.observability import metrics
    from slurm_trigger.tracker import PollResult, record_metrics

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


def test_jobs_past_the_bound_are_counted_not_parsed(env, monkeypatch) -> None:
    """A first poll over a big cluster pays for the jobs it publishes, not for the rest:
    their provenance is not decoded, nor are they parsed (a first poll at 100,000 jobs
    with the default bound parses 2,000)."""
    slurm, events, store, tracker, clock = env
    for i in range(25):
        slurm.set(i, "RUNNING")
    decoded = []
    real = provenance.decode
    monkeypatch.setattr(provenance, "decode", lambda comment: decoded.append(comment) or real(comment))
    first = tracker(max_changes=10).poll()
    assert (len(first.transitions), first.deferred, first.tracked_seen, len(decoded)) == (10, 15, 25, 10)


# --------------------------------------------------------------------------- vanished jobs: bounded, checkpointed


def purged(slurm: FakeSlurm, tracker: Any, *job_ids: int) -> None:
    """Jobs tracked RUNNING, then purged by slurmctld while nobody looked."""
    for job_id in job_ids:
        slurm.set(job_id, "RUNNING")
    tracker().poll()
    for job_id in job_ids:
        slurm.forget(job_id)


def test_a_mass_purge_is_looked_up_a_bounded_share_per_poll(env) -> None:
    """An outage let slurmctld purge 300 running jobs (1,000s in real life): each poll looks up at most
    ``max_lookups`` of them and the next goes on where it stopped; none twice."""
    slurm, events, store, tracker, clock = env
    for i in range(1, 301):
        slurm.set(i, "RUNNING")
    tracker(max_changes=0).poll()
    for i in range(1, 301):
        slurm.forget(i)
    slurm.set(5000, "RUNNING")  # the cluster goes on meanwhile
    clock[0] += 600  # the next poll sweeps
    polls = []
    while True:
        clock[0] += 60
        result = tracker(max_lookups=40, sweep_seconds=600).poll()
        polls.append((result.looked_up, result.lost, result.to_look_up))
        if not result.to_look_up:
            break
    assert polls[0] == (40, 40, 260) and len(polls) == 8
    assert all(looked <= 40 for looked, _, _ in polls)
    assert sorted(slurm.lookups) == list(range(1, 301))  # each once
    assert sum(lost for _, lost, _ in polls) == 300
    assert store.load_cursor(CLUSTER).known.keys() == {5000}


def test_lookups_stop_when_a_third_of_the_lease_is_gone(env) -> None:
    slurm, events, store, tracker, clock = env
    purged(slurm, tracker, *range(1, 11))
    real_get = slurm.get_job

    def slow(job_id: int) -> Job:
        clock[0] += 8  # a head node answering in 8 s
        return real_get(job_id)

    slurm.get_job = slow
    first = tracker().poll(sweep=True, lease_seconds=60)
    assert (first.looked_up, first.lost, first.to_look_up) == (3, 3, 7)  # 0, 8, 16 s < 20 s
    second = tracker().poll(lease_seconds=60)
    assert (second.looked_up, second.to_look_up) == (3, 4)
    assert slurm.lookups == [1, 2, 3, 4, 5, 6]


def test_a_failing_lookup_stops_the_lookups_and_the_next_poll_retries_it(env) -> None:
    slurm, events, store, tracker, clock = env
    purged(slurm, tracker, 1, 2, 3)
    real_get = slurm.get_job
    slurm.get_job = lambda job_id: (_ for _ in ()).throw(SlurmUnavailableError("503", status=503))
    first = tracker().poll(sweep=True)
    assert (first.looked_up, first.lost, first.to_look_up) == (1, 0, 3) and events.transitions()[3:] == []
    slurm.get_job = real_get
    second = tracker().poll()
    assert (second.lost, second.to_look_up) == (3, 0)
    assert [s for _, _, s in events.transitions()[3:]] == [LOST] * 3


def test_a_queued_job_listed_again_leaves_the_queue(env) -> None:
    slurm, events, store, tracker, clock = env
    slurm.set(1, "RUNNING")
    slurm.set(2, "RUNNING")
    tracker().poll()
    hidden = slurm.jobs.pop(1), slurm.jobs.pop(2)
    slurm.changed_at = slurm.now()
    assert tracker(max_lookups=1).poll(sweep=True).to_look_up == 1
    slurm.jobs[2] = msgspec.structs.replace(hidden[1], state="COMPLETED")  # back in the listing
    slurm.changed_at = slurm.now()
    clock[0] += 60
    result = tracker(max_lookups=1).poll()
    assert result.to_look_up == 0 and result.looked_up == 0
    assert sorted(events.transitions()[2:]) == [(1, "RUNNING", LOST), (2, "RUNNING", "COMPLETED")]


# --------------------------------------------------------------------------- accounting (slurmdbd)


class WithAccounting(FakeSlurm):
    """slurmdbd behind the same server: ``accounting`` knows the jobs ``record`` gave it."""

    accounting = True

    def __init__(self, clock: list[float]) -> None:
        super().__init__(clock)
        self.db: dict[int, Job] = {}
        self.db_lookups: list[int] = []
        self.db_error: Exception | None = None

    def get_accounting_job(self, job_id: int) -> Job | None:
        self.db_lookups.append(job_id)
        if self.db_error:
            raise self.db_error
        return self.db.get(job_id)


@pytest.fixture
def acct(env):
    _, events, store, _, clock = env
    slurm = WithAccounting(clock)
    bus = EventBus(events, "default", "slurm-trigger", attempts=1)

    def tracker(**kw: Any) -> Tracker:
        return Tracker(slurm, store, bus, CLUSTER, clock=lambda: clock[0], **kw)

    return slurm, events, store, tracker, clock


def _ended(job_id: int, state: str, exit_code: int | None, **kw: Any) -> Job:
    return Job(job_id=job_id, name=f"job{job_id}", state=state, exit_code=exit_code, comment=provenance.encode(SRC),
               submit_time=T0, start_time=T0, end_time=datetime(2026, 11, 25, 4, 5, tzinfo=timezone.utc),
               user="u", partition="debug", **kw)


def test_a_job_gone_from_slurmctld_gets_its_end_from_accounting(acct) -> None:
    slurm, events, store, tracker, clock = acct
    purged(slurm, tracker, 1, 2)
    slurm.db[1] = _ended(1, "FAILED", 3, reason="NonZeroExitCode")
    slurm.db[2] = _ended(2, "COMPLETED", 0)
    result = tracker().poll(sweep=True)
    assert (result.lost, result.to_look_up) == (0, 0)
    assert sorted(events.transitions()[2:]) == [(1, "RUNNING", "FAILED"), (2, "RUNNING", "COMPLETED")]
    failed = next(d for d in events.details() if d["state"] == "FAILED")
    assert (failed["exitCode"], failed["reason"], failed["endedAt"]) == (3, "NonZeroExitCode", "2026-11-25T04:05:00Z")
    assert failed["source"]["key"] == SRC.key
    assert failed["eventId"] == event_id(CLUSTER, 1, "FAILED", "2026-11-25T04:00:00Z")
    assert store.load_cursor(CLUSTER).known == {} and store.get_jobs(CLUSTER, [1])[1].final
    tracker().poll(sweep=True)
    assert len(events.entries) == 4 and slurm.lookups == [1, 2]


def test_slurmdbd_lag_is_waited_for_in_later_polls_not_declared_lost(acct) -> None:
    slurm, events, store, tracker, clock = acct
    purged(slurm, tracker, 1)
    first = tracker().poll(sweep=True)
    assert (first.looked_up, first.lost, first.to_look_up) == (1, 0, 1) and len(events.entries) == 1
    slurm.db[1] = _ended(1, "COMPLETED", 0)  # slurmdbd caught up
    clock[0] += 60
    second = tracker().poll()
    assert (second.lost, second.to_look_up) == (0, 0)
    assert events.transitions()[-1] == (1, "RUNNING", "COMPLETED")
    assert slurm.lookups == [1] and slurm.db_lookups == [1, 1]  # slurmctld asked once


def test_a_job_accounting_does_not_know_is_lost_after_the_grace(acct) -> None:
    slurm, events, store, tracker, clock = acct
    purged(slurm, tracker, 1)
    tracker(lost_after=300).poll(sweep=True)
    clock[0] += 240
    assert tracker(lost_after=300).poll().lost == 0
    slurm.db[1] = Job(job_id=1, state="RUNNING", submit_time=T0)  # accounting still says running: not an end
    clock[0] += 50
    assert tracker(lost_after=300).poll().lost == 0
    clock[0] += 20
    last = tracker(lost_after=300).poll()
    assert (last.lost, last.to_look_up) == (1, 0)
    assert events.transitions()[-1] == (1, "RUNNING", LOST) and len(slurm.db_lookups) == 4


def test_failing_accounting_holds_the_lookups_then_gives_lost(acct) -> None:
    slurm, events, store, tracker, clock = acct
    purged(slurm, tracker, 1, 2)
    slurm.db_error = SlurmUnavailableError("502 from slurmdbd", status=502)
    first = tracker(lost_after=300).poll(sweep=True)
    assert (first.looked_up, first.lost, first.to_look_up) == (1, 0, 2)
    clock[0] += 301
    assert tracker(lost_after=300).poll().lost == 1  # job 1 past its grace; job 2's grace runs from now
    clock[0] += 301
    assert tracker(lost_after=300).poll().lost == 1
    assert [s for _, _, s in events.transitions()[2:]] == [LOST, LOST]


def test_accounting_of_an_earlier_job_with_the_same_id_is_not_ours(acct) -> None:
    slurm, events, store, tracker, clock = acct
    purged(slurm, tracker, 1)
    slurm.db[1] = msgspec.structs.replace(_ended(1, "COMPLETED", 0), submit_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    tracker(lost_after=0).poll(sweep=True)
    assert events.transitions()[-1] == (1, "RUNNING", LOST)


def test_a_client_without_accounting_attributes_gives_lost_at_once(env) -> None:
    slurm, events, store, tracker, clock = env
    assert not hasattr(slurm, "accounting") and not hasattr(slurm, "get_accounting_job")
    purged(slurm, tracker, 1)
    assert tracker().poll(sweep=True).lost == 1


# --------------------------------------------------------------------------- requeue (recorded answers)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "requeue"
RECORDED = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def recorded(release: str, name: str) -> Job:
    """A job as the dialect of the recording parses it."""
    from slurm_trigger.slurm.dialects import DIALECTS

    body = json.loads((FIXTURES / release / f"{name}.json").read_text())
    return DIALECTS[release.split("-")[1]].parse_job(body["jobs"][0])


def replay(env, release: str, steps: list[str]) -> list[dict[str, Any]]:
    slurm, events, store, tracker, clock = env
    for step in steps:
        job = recorded(release, step)
        slurm.jobs = {job.job_id: job}
        slurm.changed_at = slurm.now()
        clock[0] += 60
        tracker().poll(sweep=True)
    assert slurm.lookups == []  # never taken for vanished, never LOST
    return events.details()


@pytest.mark.parametrize("release", RECORDED)
def test_a_requeued_running_job_is_followed(env, release: str) -> None:
    details = replay(env, release, ["running", "requeue-window", "requeued", "requeued-cancelled"])
    chain = [(d["previousState"], d["state"], REQUEUED in d["stateFlags"]) for d in details]
    # 22.05 shows the window as COMPLETING (still RUNNING), later versions as PENDING+COMPLETING
    assert chain == [(None, "RUNNING", False), ("RUNNING", "PENDING", True), ("PENDING", "CANCELLED", False)]
    requeue = details[1]
    assert REQUEUED in requeue["stateFlags"] and requeue["source"]["key"] == "requeue/probe.txt"
    assert details[1]["submittedAt"] > details[0]["submittedAt"]  # the new run's, not the old one's
    assert len({d["eventId"] for d in details}) == 3


@pytest.mark.parametrize("release", RECORDED)
def test_the_requeue_event_has_one_id_whichever_moment_the_poll_saw(env, release: str) -> None:
    slurm, events, store, tracker, clock = env
    with_window = replay(env, release, ["running", "requeue-window", "requeued"])
    store.inner._db.delete_item(TableName="jobs", Key={"pk": {"S": f"job#{CLUSTER}#{with_window[0]['jobId']}"}})
    store.inner._db.delete_item(TableName="jobs", Key={"pk": {"S": f"cursor#{CLUSTER}"}})
    events.entries.clear()
    without = replay(env, release, ["running", "requeued"])
    assert with_window[1]["eventId"] == without[1]["eventId"]
    assert (without[1]["previousState"], without[1]["state"]) == ("RUNNING", "PENDING")


@pytest.mark.parametrize("release", RECORDED)
def test_a_final_state_followed_by_a_requeue_is_not_the_end(env, release: str) -> None:
    """FAILED (or NODE_FAIL, PREEMPTED) was published as final; Slurm requeued the job:
    the events go on for the same job id, never as a new job nor LOST."""
    details = replay(env, release, ["failed", "failed-requeued"])
    assert [(d["previousState"], d["state"]) for d in details] == [(None, "FAILED"), ("FAILED", "PENDING")]
    assert details[0]["exitCode"] == 3 and details[1]["exitCode"] is None and REQUEUED in details[1]["stateFlags"]


@pytest.mark.parametrize("final", ["NODE_FAIL", "PREEMPTED"])
def test_node_fail_or_preempted_then_requeued_then_run_again(env, final: str) -> None:
    slurm, events, store, tracker, clock = env
    rerun = datetime(2026, 11, 25, 4, 3, tzinfo=timezone.utc)
    for state, kw in [("RUNNING", {}), (final, {}), ("PENDING", {"restarts": 1, "submit_time": rerun}),
                      ("RUNNING", {"restarts": 1, "submit_time": rerun}), ("COMPLETED", {"restarts": 1, "submit_time": rerun, "exit_code": 0})]:
        slurm.set(1, state, **kw)
        clock[0] += 60
        tracker().poll(sweep=True)
    assert events.transitions() == [(1, None, "RUNNING"), (1, "RUNNING", final), (1, final, "PENDING"),
                                    (1, "PENDING", "RUNNING"), (1, "RUNNING", "COMPLETED")]
    assert store.get_jobs(CLUSTER, [1])[1].restarts == 1 and slurm.lookups == []


def test_a_requeue_that_ran_again_between_two_polls_still_makes_an_event(env) -> None:
    slurm, events, store, tracker, clock = env
    slurm.set(1, "COMPLETED", exit_code=0)
    tracker().poll()
    slurm.set(1, "COMPLETED", exit_code=0, restarts=1, submit_time=datetime(2026, 11, 26, tzinfo=timezone.utc))
    tracker().poll()
    assert events.transitions() == [(1, None, "COMPLETED"), (1, "COMPLETED", "COMPLETED")]
    assert REQUEUED in events.details()[-1]["stateFlags"]


def test_jobs_waiting_for_accounting_do_not_hold_up_the_queue(acct) -> None:
    slurm, events, store, tracker, clock = acct
    purged(slurm, tracker, *range(1, 7))
    for job_id in (4, 5, 6):
        slurm.db[job_id] = _ended(job_id, "COMPLETED", 0)
    first = tracker(max_lookups=3).poll(sweep=True)  # 1-3: accounting does not know them yet
    assert (first.looked_up, len(first.transitions), first.to_look_up) == (3, 0, 6)
    second = tracker(max_lookups=3).poll()  # 4-6 next, not 1-3 again
    assert sorted(t["jobId"] for t in second.transitions) == [4, 5, 6] and second.to_look_up == 3
    assert slurm.db_lookups == [1, 2, 3, 4, 5, 6]


def test_the_requeue_event_never_takes_the_id_of_the_first_runs_pending(env) -> None:
    """eventId is the state entered and the submit time: while the requeue completes,
    Slurm shows PENDING with the old submit time, which is the first run's PENDING."""
    slurm, events, store, tracker, clock = env
    rerun = datetime(2026, 11, 25, 4, 3, tzinfo=timezone.utc)
    for state, kw in [("PENDING", {}), ("RUNNING", {}), ("PENDING", {"restarts": 1, "state_flags": ("COMPLETING",)}),
                      ("PENDING", {"restarts": 1, "submit_time": rerun})]:
        slurm.set(1, state, **kw)
        clock[0] += 60
        tracker().poll()
    assert events.transitions() == [(1, None, "PENDING"), (1, "PENDING", "RUNNING"), (1, "RUNNING", "PENDING")]
    assert len({d["eventId"] for d in events.details()}) == 3
    assert events.details()[-1]["eventId"] == event_id(CLUSTER, 1, "PENDING", "2026-11-25T04:03:00Z")


def test_array_tasks_and_steps_carry_their_ids_through_poll_store_and_lookup(env) -> None:
    """An array's pending remainder, then its tasks (each its own job id, as Slurm
    splits them off), of a step: every event names the array, the task and the step;
    the stored item keeps them, so the LOST event of a forgotten task still does."""
    slurm, events, store, tracker, clock = env
    step_src = provenance.encode(replace(SRC, step="align"))

    def task(job_id: int, state: str, index: int | None) -> Job:
        return Job(job_id=job_id, name="arr", state=state, comment=step_src, submit_time=T0, array_job_id=10, array_task_id=index)

    slurm.jobs[10] = task(10, "PENDING", None)  # the remainder: no one task yet
    slurm.jobs[20] = Job(job_id=20, name="plain", state="PENDING", comment=provenance.encode(SRC), submit_time=T0)
    slurm.changed_at = slurm.now()
    tracker().poll()
    slurm.jobs[10], slurm.jobs[11] = task(10, "RUNNING", 1), task(11, "RUNNING", 0)
    slurm.changed_at = slurm.now()
    tracker().poll()
    by_job = {(d["jobId"], d["state"]): d for d in events.details()}
    assert (by_job[10, "PENDING"]["arrayJobId"], by_job[10, "PENDING"]["arrayTaskId"]) == (10, None)
    assert (by_job[10, "RUNNING"]["arrayJobId"], by_job[10, "RUNNING"]["arrayTaskId"]) == (10, 1)
    assert (by_job[11, "RUNNING"]["arrayJobId"], by_job[11, "RUNNING"]["arrayTaskId"]) == (10, 0)
    assert by_job[10, "RUNNING"]["source"]["step"] == "align"
    plain = by_job[20, "PENDING"]
    assert plain["arrayJobId"] is None and plain["arrayTaskId"] is None and "step" not in plain["source"]
    stored = {j.job_id: j for j in store.list_jobs(CLUSTER)}
    assert (stored[11].array_job_id, stored[11].array_task_id, stored[11].step) == (10, 0, "align")

    slurm.forget(11)
    clock[0] += 3600
    tracker(lost_after=0).poll(sweep=True)
    lost = events.details()[-1]
    assert (lost["jobId"], lost["state"], lost["arrayJobId"], lost["arrayTaskId"], lost["source"]["step"]) == (11, LOST, 10, 0, "align")


def test_build_tracker_takes_its_clients_as_build_trigger_does(aws) -> None:
    """Keyword-only boto3 clients; the Slurm client is built from the same settings (its
    token secret read through the Secrets Manager client handed in), so the cluster it
    asks is the one the events and keys name."""
    import secrets as secrets_module

    from slurm_trigger.settings import Settings
    from slurm_trigger.tracker import build_tracker

    token = ".".join(secrets_module.token_urlsafe(16) for _ in range(3))  # JWT-shaped, made here, never committed
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name="slurm_token_c9", SecretString=token)
    settings = Settings(cluster_name="c9", slurm_url="http://127.0.0.1:9", slurm_user="u", jobs_table="t")
    with pytest.raises(TypeError):
        build_tracker(settings, boto3.client("dynamodb"), boto3.client("events"))  # type: ignore[misc]
    tracker = build_tracker(settings, dynamodb_client=boto3.client("dynamodb"), events_client=boto3.client("events"),
                            secrets_client=secrets)
    assert (tracker.cluster, tracker.client.base_url) == ("c9", "http://127.0.0.1:9")
    assert tracker.client._auth.token().reveal() == token


# --------------------------------------------------------------------------- found in the user-style audit


def test_a_resumed_job_gets_an_event_id_of_its_own(env) -> None:
    """``scontrol suspend`` then ``resume``: RUNNING -> SUSPENDED -> RUNNING. The resume
    is a change of its own: a consumer that drops repeats by eventId must not drop it as
    a repeat of the first RUNNING. The first RUNNING keeps the id the head node's hook
    gives it (no suspend yet)."""
    slurm, events, _, tracker, _ = env
    submitted = "2026-11-25T04:00:00Z"
    slurm.set(1, "RUNNING", start_time=T0)
    tracker().poll()
    for state, at in (("SUSPENDED", 10), ("RUNNING", 20), ("SUSPENDED", 30), ("RUNNING", 40)):
        slurm.set(1, state, start_time=T0, suspend_time=datetime.fromtimestamp(T0.timestamp() + at, timezone.utc))
        tracker().poll()
        tracker().poll()  # a poll more changes nothing
    slurm.set(1, "COMPLETED", start_time=T0, exit_code=0, end_time=T0, suspend_time=datetime.fromtimestamp(T0.timestamp() + 40, timezone.utc))
    tracker().poll()
    details = events.details()
    assert [(d["previousState"], d["state"]) for d in details] == [
        (None, "RUNNING"), ("RUNNING", "SUSPENDED"), ("SUSPENDED", "RUNNING"),
        ("RUNNING", "SUSPENDED"), ("SUSPENDED", "RUNNING"), ("RUNNING", "COMPLETED")]
    assert len({d["eventId"] for d in details}) == len(details), details
    assert details[0]["eventId"] == event_id(CLUSTER, 1, "RUNNING", submitted)
    assert details[-1]["eventId"] == event_id(CLUSTER, 1, "COMPLETED", submitted)


def test_foreign_jobs_tracked_under_track_all_are_let_go_when_it_is_switched_off(env) -> None:
    """TRACK_ALL_JOBS on, then off (the same table): the other users' jobs it was
    following give no more events, neither their end nor, once slurmctld forgot them, LOST."""
    slurm, events, store, tracker, _ = env
    slurm.set(1, "RUNNING")
    slurm.set(3, "RUNNING", ours=False)
    slurm.set(4, "PENDING", ours=False)
    tracker(track_all=True).poll()
    assert sorted(events.transitions()) == [(1, None, "RUNNING"), (3, None, "RUNNING"), (4, None, "PENDING")]
    slurm.set(3, "COMPLETED", ours=False, exit_code=0, end_time=T0)
    slurm.set(1, "COMPLETED", exit_code=0, end_time=T0)
    tracker().poll()
    slurm.forget(4)
    slurm.forget(3)
    tracker().poll(sweep=True)
    tracker().poll()
    assert events.transitions()[3:] == [(1, "RUNNING", "COMPLETED")]
    cursor = store.load_cursor(CLUSTER)
    assert 3 not in cursor.known and 4 not in cursor.known and not cursor.vanished


class WithAccountingListing(WithAccounting):
    """…and ``list_accounting_jobs``: this user's jobs that ran or ended since an epoch."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(clock)
        self.listed_since: list[int] = []

    def list_accounting_jobs(self, since: int, *, name: str | None = None) -> list[Job]:
        self.listed_since.append(since)
        return [j for j in self.db.values() if j.end_time is None or j.end_time.timestamp() >= since]


def test_a_job_that_came_and_went_between_two_polls_gets_its_end_from_accounting(env) -> None:
    """The tracker never saw the job: submitted, ended and dropped by slurmctld
    (MinJobAge) while the polls were failing. Where the cluster has slurmdbd the next
    sweep finds it in accounting and publishes its end once; another user's job, a job
    it already published and a job slurmctld still lists are not published again."""
    _, events, store, _, clock = env
    slurm = WithAccountingListing(clock)
    bus = EventBus(events, "default", "slurm-trigger", attempts=1)
    tracker = lambda: Tracker(slurm, store, bus, CLUSTER, clock=lambda: clock[0])  # noqa: E731
    slurm.set(1, "RUNNING")
    tracker().poll()  # the first poll: a sweep (history before it is not published)
    ended = datetime.fromtimestamp(clock[0] + 30, timezone.utc)
    slurm.set(1, "COMPLETED", exit_code=0, end_time=ended)
    tracker().poll()
    slurm.db[1] = msgspec.structs.replace(_ended(1, "COMPLETED", 0), end_time=ended)  # seen ending: already published
    slurm.db[5] = msgspec.structs.replace(_ended(5, "FAILED", 3, reason="NonZeroExitCode"), end_time=ended)  # never seen
    slurm.db[6] = msgspec.structs.replace(_ended(6, "COMPLETED", 0), end_time=ended, comment="someone else's")
    clock[0] += 700
    tracker().poll()  # a sweep
    tracker().poll(sweep=True)
    assert events.transitions() == [(1, None, "RUNNING"), (1, "RUNNING", "COMPLETED"), (5, None, "FAILED")]
    failed = events.details()[-1]
    assert (failed["exitCode"], failed["reason"], failed["source"]["key"]) == (3, "NonZeroExitCode", SRC.key)
    assert failed["eventId"] == event_id(CLUSTER, 5, "FAILED", "2026-11-25T04:00:00Z")
    assert slurm.listed_since and 5 not in store.load_cursor(CLUSTER).known
