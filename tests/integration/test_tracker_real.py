"""The tracker against the REAL local Slurm (every API version served) and moto's
EventBridge, DynamoDB and SQS. Events are read where a consumer reads them: an
EventBridge rule with an SQS target."""
from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import jsonschema
from atomic_dynamodb import AtomicDynamoDB  # sibling helper module
import pytest
from conftest import read_clusters

from slurm_trigger import provenance
from slurm_trigger.eventbus import EventBus
from slurm_trigger.jobstore import DynamoDBJobStore, create_table
from slurm_trigger.provenance import Source
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from slurm_trigger.slurm.errors import SlurmNotFoundError
from slurm_trigger.slurm.models import FINAL_STATES, JobSubmission
from slurm_trigger.tracker import DETAIL_TYPE, REQUEUED, Tracker

pytestmark = pytest.mark.real_slurm

CLUSTER = "tracker-test"
TABLE = "tracker-jobs"
SOURCE = "slurm-trigger"
POLL_EVERY = 0.5
POLL_LIMIT = 60.0
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "slurm-job-state-change.schema.json").read_text())


class RefuseFirstTime:
    """An events client that refuses every entry the first time it is sent (as
    PutEvents does under throttling: HTTP 200, ``FailedEntryCount`` > 0)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: set[str] = set()
        self.refused = 0
        self.lock = threading.Lock()

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        results: list[dict[str, Any] | None] = []
        passed = []
        with self.lock:
            for entry in Entries:
                eid = json.loads(entry["Detail"])["eventId"]
                if eid in self.seen:
                    results.append(None)
                    passed.append(entry)
                else:
                    self.seen.add(eid)
                    self.refused += 1
                    results.append({"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"})
        accepted = iter(self.inner.put_events(Entries=passed)["Entries"] if passed else [])
        entries = [r if r is not None else next(accepted) for r in results]
        return {"FailedEntryCount": sum(1 for r in results if r is not None), "Entries": entries}


class OnlyTheseJobs:
    """The real client with its listings narrowed to this test's jobs. The local
    clusters are shared with other tests whose jobs carry provenance too; without
    this a first poll would publish thousands of them."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ids: set[int] = set()
        self.purged: set[int] = set()  # as if slurmctld had dropped them after MinJobAge

    def list_jobs(self, update_time: int | None = None) -> Any:
        page = self.client.list_jobs(update_time)
        ours = self.ids - self.purged  # an array's tasks split off under new ids: theirs by their array
        return replace(page, jobs=tuple(j for j in page.jobs if j.job_id in ours or j.array_job_id in ours))

    def job_states(self, job_ids: Any = None) -> dict[int, str]:
        """/jobs/state from this test's first job on (an array's tasks get later ids);
        ``get_jobs`` keeps only this test's."""
        first = min(self.ids - self.purged, default=None)
        states = self.client.job_states(job_ids)
        return {} if first is None else {i: s for i, s in states.items() if i >= first and i not in self.purged}

    def get_jobs(self, job_ids: Any) -> Any:
        page = self.client.get_jobs(job_ids)
        ours = self.ids - self.purged
        return replace(page, jobs=tuple(j for j in page.jobs if j.job_id in ours or j.array_job_id in ours))

    def list_accounting_jobs(self, since: int, **kw: Any) -> list[Any]:
        ours = self.ids  # purged or not: slurmdbd keeps them
        return [j for j in self.client.list_accounting_jobs(since, **kw) if j.job_id in ours or j.array_job_id in ours]

    def get_job(self, job_id: int) -> Any:
        if job_id in self.purged:
            raise SlurmNotFoundError(f"Slurm does not know job {job_id}", status=404)
        return self.client.get_job(job_id)

    def __getattr__(self, name: str) -> Any:  # diag, accounting, ...: the client's own
        return getattr(self.client, name)


@dataclass
class World:
    target: Any
    client: Any
    store: DynamoDBJobStore
    events: Any
    sqs: Any
    queue: str
    scoped: OnlyTheseJobs

    def tracker(self, events_client: Any = None, track_all: bool = False) -> Tracker:
        bus = EventBus(events_client or self.events, "default", SOURCE, sleep=lambda _: None)
        return Tracker(self.scoped, self.store, bus, CLUSTER, track_all=track_all)

    def submit(self, script: str, tag: str, key: str | None = None, template_comment: str | None = None,
               array: str | None = None, step: str | None = None) -> int:
        key = key or f"tracker/{tag}-{uuid.uuid4().hex[:8]}.txt"
        src = Source(bucket="in-bucket", key=key, pipeline="tracker-test", version_id="v1", step=step)
        sub = JobSubmission(
            script=f"#!/bin/bash\n{script}\n",
            name=f"tracker-{tag}",
            partition="debug",
            working_directory=self.target.workdir,
            standard_output="/dev/null",
            environment={"PATH": "/usr/bin:/bin"},
            time_limit=2,
            comment=provenance.encode(src, template_comment),
            array=array,
        )
        job_id = self.client.submit(sub).job_id
        self.scoped.ids.add(job_id)
        return job_id

    def received(self) -> list[dict[str, Any]]:
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])

    def wait_tracked_final(self, job_ids: list[int], poll: Any) -> None:
        """Poll every 0.5 s until the store has every job in a final state (≤ 60 s)."""
        deadline = time.monotonic() + POLL_LIMIT
        while True:
            poll()
            stored = self.store.get_jobs(CLUSTER, job_ids)
            if all(i in stored and stored[i].final for i in job_ids):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"not final after {POLL_LIMIT}s: { {i: stored.get(i) for i in job_ids} }")
            time.sleep(POLL_EVERY)


@pytest.fixture
def world(slurm_target, aws) -> World:
    settings = Settings(
        cluster_name=CLUSTER,
        slurm_url=slurm_target.url,
        slurm_user=slurm_target.user,
        api_version=slurm_target.version,
        slurm_scheme="http",
        token=slurm_target.token(),
        read_timeout=15,
    )
    db = AtomicDynamoDB(boto3.client("dynamodb"))
    create_table(db, TABLE)
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="job-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(Name="state-changes", EventPattern=json.dumps({"source": [SOURCE], "detail-type": [DETAIL_TYPE]}))
    events.put_targets(Rule="state-changes", Targets=[{"Id": "q", "Arn": arn}])
    client = build_client(settings)
    return World(slurm_target, client, DynamoDBJobStore(db, TABLE), events, sqs, queue, OnlyTheseJobs(client))


def by_job(received: list[dict[str, Any]], job_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in received:
        if event["detail"]["jobId"] in job_ids and event["detail"]["cluster"] == CLUSTER:
            out[event["detail"]["jobId"]].append(event["detail"])
    return out


def assert_chain(details: list[dict[str, Any]], final: str) -> None:
    """One event per transition, each starting where the last one ended."""
    ids = [d["eventId"] for d in details]
    assert len(ids) == len(set(ids)), f"duplicates: {details}"
    nxt = {d["previousState"]: d["state"] for d in details}
    assert len(nxt) == len(details), f"two events leave the same state: {details}"
    chain, state = [], None
    while state in nxt:
        state = nxt[state]
        chain.append(state)
    assert len(chain) == len(details), f"broken chain: {details}"
    assert chain[-1] == final and all(s not in FINAL_STATES for s in chain[:-1]), chain


def test_completed_failed_and_cancelled_jobs_each_transition_once(world: World) -> None:
    tracker = world.tracker()
    done = world.submit("sleep 2; exit 0", "ok")
    failed = world.submit("sleep 1; exit 3", "exit3")
    cancelled = world.submit("sleep 120", "cancel")
    jobs = [done, failed, cancelled]
    listings: list[str] = []

    def poll() -> None:
        listings.append(tracker.poll().listing)
        stored = world.store.get_jobs(CLUSTER, [cancelled])
        if cancelled in stored and stored[cancelled].state in ("PENDING", "RUNNING"):
            world.client.cancel_job(cancelled)

    world.wait_tracked_final(jobs, poll)
    for _ in range(3):  # more polls after the end publish nothing more
        tracker.poll()
        time.sleep(POLL_EVERY)
    events = by_job(world.received(), jobs)
    assert_chain(events[done], "COMPLETED")
    assert_chain(events[failed], "FAILED")
    assert_chain(events[cancelled], "CANCELLED")
    assert events[done][-1]["exitCode"] == 0
    assert events[failed][-1]["exitCode"] == 3
    last = events[done][-1]
    assert last["source"]["pipeline"] == "tracker-test" and last["source"]["s3Uri"].startswith("s3://in-bucket/tracker/ok-")
    assert last["jobName"] == "tracker-ok" and last["user"] == world.target.user
    assert last["submittedAt"].endswith("Z") and last["endedAt"].endswith("Z")
    # the first poll lists /jobs; later ones ask /jobs/state and fetch what moved (v0.0.40+)
    assert listings[0] == "jobs" and set(listings[1:]) == ({"states"} if world.client.serves_job_states else {"jobs"})


def test_overlapping_polls_and_refused_entries_double_and_lose_nothing(world: World) -> None:
    flaky = RefuseFirstTime(world.events)
    job_ids = [world.submit("sleep 2; exit 0", "ok"), world.submit("sleep 1; exit 3", "exit3")]

    assert world.store.acquire_lease(CLUSTER, "someone-else", 60)
    held = world.tracker(flaky).poll()
    assert held.skipped and not world.received()
    world.store.release_lease(CLUSTER, "someone-else")

    a, b = world.tracker(flaky), world.tracker(flaky)
    skipped: list[bool] = []

    def both() -> None:
        results: list[Any] = [None, None]
        threads = [threading.Thread(target=lambda i=i, t=t: results.__setitem__(i, t.poll())) for i, t in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        skipped.extend(r.skipped for r in results if r is not None)

    world.wait_tracked_final(job_ids, both)
    both()
    events = by_job(world.received(), job_ids)
    assert_chain(events[job_ids[0]], "COMPLETED")
    assert_chain(events[job_ids[1]], "FAILED")
    assert events[job_ids[1]][-1]["exitCode"] == 3
    assert flaky.refused >= 4  # every one of those events was refused once, then delivered
    assert any(skipped), "the two threads never overlapped"  # ~10 rounds; each overlaps in practice


def test_cli_poll_then_status(world: World, monkeypatch, capsys) -> None:
    """``slurm-trigger poll`` and ``status`` (table and --live) as a user runs them,
    over every tracked job of the shared cluster (no scoping here)."""
    import argparse

    from slurm_trigger_cli import common_options, tracker_commands

    def cli(*argv: str) -> str:
        parser = argparse.ArgumentParser()
        tracker_commands.register(parser.add_subparsers(dest="command", required=True), common_options())
        args = parser.parse_args(list(argv))
        assert args.handler(args) == 0
        return capsys.readouterr().out

    target = world.target
    for name, value in {"SLURM_URL": target.url, "SLURM_USER": target.user, "SLURM_TOKEN": target.token(),
                        "SLURM_API_VERSION": target.version, "SLURM_CLUSTER_NAME": CLUSTER, "JOBS_TABLE": TABLE}.items():
        monkeypatch.setenv(name, value)
    job_id = world.submit("exit 3", "cli")
    deadline = time.monotonic() + 2 * POLL_LIMIT  # unscoped: the first poll takes every tracked job of the cluster
    while True:
        polled = json.loads(cli("poll"))
        stored = world.store.get_jobs(CLUSTER, [job_id]).get(job_id)
        if stored and stored.final:
            break
        assert time.monotonic() < deadline, polled
        time.sleep(POLL_EVERY)
    rows = json.loads(cli("status", "--format", "json"))
    mine = next(r for r in rows if r["job_id"] == job_id)
    assert (mine["state"], mine["exit_code"], mine["pipeline"]) == ("FAILED", 3, "tracker-test")
    live = json.loads(cli("status", "--live", "--format", "json"))
    assert any(r["job_id"] == job_id and r["state"] == "FAILED" for r in live)
    assert target.token() not in json.dumps(rows) + json.dumps(live)


def slurm_command(target: Any, *args: str) -> None:
    """Run a Slurm command on the target's cluster, as scripts/local-slurm does (as root)."""
    pre = [] if target.root == "/" else ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "chroot", target.root]
    done = subprocess.run([*pre, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def wait_stored(world: World, tracker: Tracker, job_id: int, until: Any, sweep: bool | None = None) -> Any:
    """Poll until the stored job satisfies ``until`` (≤ 60 s)."""
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        tracker.poll(sweep=sweep)
        job = world.store.get_jobs(CLUSTER, [job_id]).get(job_id)
        if job is not None and until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id}: {job}"
        time.sleep(POLL_EVERY)


HOSTILE_KEYS = [
    'runs/slurm-trigger:{"bucket":"evil","key":"stolen","pipeline":"p"}',
    'runs/q"uo\'te\\back{slash}}',
    "runs/new\nline\ttab slurm-trigger:",
    "runs/ünï 🙂 slurm-trigger:slurm-trigger:",
]


def test_keys_holding_the_marker_keep_their_jobs_visible(world: World) -> None:
    """Keys with the marker, braces, quotes and backslashes, under a template comment that
    holds the key (as the shipped templates do with ${basename}): each job gets its
    events, with its own key, through Slurm's real comment."""
    tracker = world.tracker()
    jobs = {world.submit("exit 0", "hostile", key=k, template_comment=f"align {k.rsplit('/', 1)[-1]}"): k for k in HOSTILE_KEYS}
    world.wait_tracked_final(list(jobs), tracker.poll)
    events = by_job(world.received(), list(jobs))
    for job_id, key in jobs.items():
        assert events[job_id], f"no events for the job of {key!r}"
        assert {d["source"]["key"] for d in events[job_id]} == {key}
        assert events[job_id][-1]["state"] == "COMPLETED"


def test_the_cursor_is_slurms_clock(world: World) -> None:
    before = int(time.time())
    job_id = world.submit("exit 0", "cursor")
    tracker = world.tracker()
    tracker.poll()
    cursor = world.store.load_cursor(CLUSTER)
    after = int(time.time())
    # the same machine's clock: Slurm's last_update (v0.0.40+) or diag's time (v0.0.38) of this poll
    assert cursor.update_time is not None and before - 2 <= cursor.update_time <= after, (before, cursor.update_time, after)
    world.wait_tracked_final([job_id], tracker.poll)
    assert world.store.load_cursor(CLUSTER).update_time >= cursor.update_time


def test_a_requeued_job_is_followed_not_lost(world: World) -> None:
    """``scontrol requeue`` of a running job and of a FAILED one: the same job id comes
    back PENDING with a restart more and a new submit time. The events follow it
    (REQUEUED flagged, the new run's submit time) to its real end; never a new job, never LOST."""
    tracker = world.tracker()
    running = world.submit("sleep 60", "requeue")
    failed = world.submit("exit 3", "requeue-failed")
    wait_stored(world, tracker, running, lambda j: j.state == "RUNNING")
    wait_stored(world, tracker, failed, lambda j: j.state == "FAILED")
    slurm_command(world.target, "scontrol", "requeue", str(running))
    slurm_command(world.target, "scontrol", "requeue", str(failed))
    for job_id in (running, failed):  # requeued jobs wait ~2 minutes (BeginTime): cancel them
        wait_stored(world, tracker, job_id, lambda j: j.restarts == 1 and j.state == "PENDING")
        world.client.cancel_job(job_id)
    world.wait_tracked_final([running, failed], lambda: tracker.poll(sweep=True))
    events = by_job(world.received(), [running, failed])
    for job_id, before in ((running, "RUNNING"), (failed, "FAILED")):
        details = events[job_id]
        chain = [(d["previousState"], d["state"]) for d in details]
        requeues = [i for i, d in enumerate(details) if REQUEUED in d["stateFlags"]]
        assert len(requeues) == 1, chain
        at = requeues[0]
        assert chain[at:] == [(before, "PENDING"), ("PENDING", "CANCELLED")] and chain[at - 1][1] == before, chain
        first_run, second_run = ({d["submittedAt"] for d in part} for part in (details[:at], details[at:]))
        assert len(first_run) == len(second_run) == 1 and second_run.pop() > first_run.pop(), details
        assert len({d["eventId"] for d in details}) == len(details) and "LOST" not in {d["state"] for d in details}


def test_a_job_gone_from_slurmctld_gets_its_end_from_accounting_else_lost(world: World) -> None:
    """The tracker saw the job run, then not again until slurmctld had dropped it (hidden
    here from listing and lookup, as MinJobAge would, without waiting minutes). Where the
    cluster has slurmdbd the event is its real end from accounting; elsewhere LOST."""
    served = next(c for c in read_clusters() if c["name"] == world.target.name)
    expect_accounting = bool(served.get("accounting")) and world.target.version >= "v0.0.40"
    assert bool(getattr(world.client, "accounting", False)) == expect_accounting
    tracker = world.tracker()
    job_id = world.submit("sleep 2; exit 3", "gone")
    wait_stored(world, tracker, job_id, lambda j: j.state == "RUNNING")
    deadline = time.monotonic() + POLL_LIMIT
    while not world.client.get_job(job_id).is_final:
        assert time.monotonic() < deadline
        time.sleep(POLL_EVERY)
    world.scoped.purged.add(job_id)
    wait_stored(world, tracker, job_id, lambda j: j.final, sweep=True)  # slurmdbd may lag a poll
    details = by_job(world.received(), [job_id])[job_id]
    last = details[-1]
    assert last["previousState"] == "RUNNING" and last["source"]["pipeline"] == "tracker-test"
    if expect_accounting:
        assert (last["state"], last["exitCode"]) == ("FAILED", 3), last
        assert last["endedAt"] and last["endedAt"] >= last["startedAt"]
    else:
        assert (last["state"], last["exitCode"], last["reason"]) == ("LOST", None, "job no longer known to Slurm")


def test_each_task_of_a_job_array_names_its_array_task_and_step(world: World) -> None:
    """A two-task array of a step: Slurm splits the tasks off under their own job ids;
    every event names the array, the task (null only while no task of it ran) and the
    step, and matches the schema."""
    tracker = world.tracker()
    array_id = world.submit("sleep 1; exit 0", "array", array="0-1", step="align")
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        tracker.poll()
        tasks = [j for j in world.store.list_jobs(CLUSTER) if j.array_job_id == array_id]
        if len(tasks) == 2 and all(j.final for j in tasks):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"array {array_id} not final after {POLL_LIMIT}s: {tasks}")
        time.sleep(POLL_EVERY)
    assert sorted(j.array_task_id for j in tasks) == [0, 1] and {j.step for j in tasks} == {"align"}
    received = [e for e in world.received() if e["detail"]["cluster"] == CLUSTER]
    details = [e["detail"] for e in received if e["detail"]["arrayJobId"] == array_id]
    assert len(details) == len(received), "an event of this test's only job lacks its array"
    for event in received:
        jsonschema.validate(event, SCHEMA, cls=jsonschema.Draft202012Validator)
    per_task = by_job(received, [j.job_id for j in tasks])
    assert sorted(per_task) == sorted(j.job_id for j in tasks)
    for job in tasks:
        chain = per_task[job.job_id]
        assert_chain(chain, "COMPLETED")
        assert chain[-1]["arrayTaskId"] == job.array_task_id
        assert all(d["arrayTaskId"] in (None, job.array_task_id) for d in chain)
        assert all(d["arrayTaskId"] is not None for d in chain if d["state"] != "PENDING")
        assert all(d["source"]["step"] == "align" for d in chain)


def wait_in_slurm(world: World, job_id: int, until: Any) -> None:
    deadline = time.monotonic() + POLL_LIMIT
    while not until(world.client.get_job(job_id)):
        assert time.monotonic() < deadline, world.client.get_job(job_id)
        time.sleep(POLL_EVERY)


def test_a_suspended_and_resumed_job_gives_each_change_its_own_id(world: World) -> None:
    """``scontrol suspend`` and ``resume``: RUNNING -> SUSPENDED -> RUNNING -> its end.
    A consumer that drops repeats by eventId gets every one of these changes: the
    resume is not a repeat of the start."""
    tracker = world.tracker()
    job_id = world.submit("sleep 60", "suspend")
    try:  # a suspended job keeps its CPUs: never leave one behind on the shared cluster
        wait_stored(world, tracker, job_id, lambda j: j.state == "RUNNING")
        slurm_command(world.target, "scontrol", "suspend", str(job_id))
        wait_stored(world, tracker, job_id, lambda j: j.state == "SUSPENDED")
        slurm_command(world.target, "scontrol", "resume", str(job_id))
        wait_stored(world, tracker, job_id, lambda j: j.state == "RUNNING")
    finally:
        if world.client.get_job(job_id).state == "SUSPENDED":
            slurm_command(world.target, "scontrol", "resume", str(job_id))
        world.client.cancel_job(job_id)
    world.wait_tracked_final([job_id], tracker.poll)
    details = by_job(world.received(), [job_id])[job_id]
    chain = [(d["previousState"], d["state"]) for d in details]
    assert chain[-3:] == [("RUNNING", "SUSPENDED"), ("SUSPENDED", "RUNNING"), ("RUNNING", "CANCELLED")], chain
    assert len({d["eventId"] for d in details}) == len(details), details


def test_jobs_followed_under_track_all_are_let_go_when_it_is_switched_off(world: World) -> None:
    """TRACK_ALL_JOBS on follows a job slurm-trigger did not submit (``sbatch`` as root);
    switched off (the same table), that job gives no more events: not its end, and not
    LOST once slurmctld forgot it."""
    out = subprocess.run(
        ([] if world.target.root == "/" else ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "chroot", world.target.root])
        + ["sbatch", "--parsable", "-J", "tracker-foreign", "-o", "/dev/null", "-D", "/tmp", "-t", "2", "--wrap", "sleep 3"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    foreign = int(out.stdout.strip().split(";")[0])
    world.scoped.ids.add(foreign)
    mine = world.submit("sleep 3; exit 0", "mine")
    wait_stored(world, world.tracker(track_all=True), foreign, lambda j: j.source is None)
    off = world.tracker()
    seen = len(by_job(world.received(), [foreign])[foreign])
    assert seen >= 1
    wait_in_slurm(world, foreign, lambda j: j.is_final)
    world.wait_tracked_final([mine], off.poll)
    world.scoped.purged.add(foreign)  # as slurmctld after MinJobAge
    off.poll(sweep=True)
    off.poll()
    events = by_job(world.received(), [foreign, mine])
    assert events[foreign] == [], events[foreign]
    assert events[mine][-1]["state"] == "COMPLETED"


def test_a_job_no_poll_saw_gets_its_end_from_accounting(world: World) -> None:
    """Submitted, ended and dropped by slurmctld (hidden here, as MinJobAge would) while
    no poll ran. Where the cluster has slurmdbd the next sweep publishes its real end
    (previousState null); without accounting nothing can tell of it (docs/tracker.md)."""
    tracker = world.tracker()
    tracker.poll()  # the first sweep: history before it is not published
    job_id = world.submit("exit 3", "unseen")
    wait_in_slurm(world, job_id, lambda j: j.is_final)
    world.scoped.purged.add(job_id)
    deadline = time.monotonic() + POLL_LIMIT
    while True:  # slurmdbd learns of the end about a second after slurmctld
        tracker.poll(sweep=True)
        details = by_job(world.received(), [job_id])[job_id]
        if details or not world.client.accounting or time.monotonic() > deadline:
            break
        time.sleep(POLL_EVERY)
    if world.client.accounting:
        assert [(d["previousState"], d["state"], d["exitCode"]) for d in details] == [(None, "FAILED", 3)], details
        assert details[0]["source"]["key"].startswith("tracker/unseen-") and details[0]["endedAt"]
        tracker.poll(sweep=True)
        assert not by_job(world.received(), [job_id])[job_id]  # once
    else:
        assert details == []


def test_a_job_gone_before_its_end_was_seen_is_looked_up_by_the_next_steady_poll(world: World) -> None:
    """Seen RUNNING, then ended and dropped by slurmctld (hidden, as MinJobAge would)
    before a poll saw the end. Where slurmctld serves /jobs/state (v0.0.41+) the next
    steady poll, not the sweep ten minutes later, publishes the end (accounting's) or LOST."""
    tracker = world.tracker()
    job_id = world.submit("sleep 2; exit 3", "gone-steady")
    wait_stored(world, tracker, job_id, lambda j: j.state == "RUNNING")
    wait_in_slurm(world, job_id, lambda j: j.is_final)
    world.scoped.purged.add(job_id)
    deadline = time.monotonic() + (POLL_LIMIT if world.client.serves_job_states else 3 * POLL_EVERY)
    while True:
        result = tracker.poll(sweep=False)
        job = world.store.get_jobs(CLUSTER, [job_id])[job_id]
        if job.final or time.monotonic() > deadline:
            break
        time.sleep(POLL_EVERY)
    if world.client.serves_job_states:
        assert result.listing == "states" and job.state == ("FAILED" if world.client.accounting else "LOST"), job
    else:  # a steady poll lists only what changed: the sweep finds it
        assert job.state == "RUNNING"
