"""``GET /jobs/state`` and the detail fetches behind it, over HTTP: the client's parsing of a
recorded answer, a tracker's steady polls (the same events, ids and content, whether a job
came from ``/jobs`` or from ``/jobs/state`` + ``/job/{id}``), and the takeover search
bounded by when the key was first claimed. Real clusters: tests/integration/test_job_states_real.py."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from slurm_trigger import provenance
from slurm_trigger.eventbus import EventBus
from slurm_trigger.jobstore import DynamoDBJobStore, create_table
from slurm_trigger.provenance import Source
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.client import SlurmClient, details_budget
from slurm_trigger.slurm.dialects import DIALECTS
from slurm_trigger.slurm.errors import SlurmVersionError
from slurm_trigger.tracker import Tracker
from tests.unit.fakeslurm import FakeSlurm, Reply, Seen

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "recorded"
VERSION = "v0.0.42"
T0 = 1_795_000_000
SRC = Source(bucket="in", key="runs/a b.csv", pipeline="align", version_id="v1")


def test_a_recorded_answer_parses_to_base_states_one_per_job() -> None:
    body = json.loads((RECORDED / VERSION / "job-states.json").read_text())
    # 24.11: task 1 split off as 6386 ("6386_1"), the remainder "6385_2".."6385_4" is one job
    assert DIALECTS[VERSION].parse_job_states(body) == {6386: "RUNNING", 6385: "PENDING"}
    flagged = {"jobs": [{"job_id": "7", "state": ["COMPLETED", "COMPLETING"]}, {"job_id": "8+0", "state": ["PENDING", "REQUEUED"]}]}
    assert DIALECTS["v0.0.45"].parse_job_states(flagged) == {7: "COMPLETED", 8: "PENDING"}


def test_ids_are_repeated_job_id_parameters_and_old_versions_have_none() -> None:
    assert DIALECTS["v0.0.40"].job_states_params([3, 4]) == [("job_id", "3"), ("job_id", "4")]
    assert not any(DIALECTS[v].job_states for v in ("v0.0.38", "v0.0.39", "v0.0.40"))  # v0.0.40: array ids, see dialects
    assert all(DIALECTS[v].job_states for v in ("v0.0.41", "v0.0.42", "v0.0.45"))
    with pytest.raises(SlurmVersionError, match="no usable /jobs/state"):
        SlurmClient("http://127.0.0.1:1", StaticToken("t"), user="u", api_version="v0.0.38").job_states()


class Cluster:
    """slurmctld's jobs as raw v0.0.42 answers (built from a recorded job), served at
    ``/jobs`` (every job, as ``update_time`` gives them once anything changed),
    ``/jobs/state`` (ids may be asked for) and ``/job/{id}``."""

    def __init__(self) -> None:
        self.template = json.loads((RECORDED / VERSION / "job-pending.json").read_text())["jobs"][0]
        self.jobs: dict[int, dict[str, Any]] = {}
        self.fake = FakeSlurm()
        self.fake.add("GET", f"/slurm/{VERSION}/jobs", self._jobs)
        self.fake.add("GET", f"/slurm/{VERSION}/jobs/state", self._states)
        self.fake.add("GET", "/openapi/v3", Reply.json(200, {"paths": {f"/slurm/{VERSION}/ping": {}}}))

    def set(self, job_id: int, state: str, *flags: str, ours: bool = True, submitted: int = T0, restarts: int = 0, **kw: Any) -> None:
        raw = copy.deepcopy(self.template)
        kw.setdefault("comment", provenance.encode(SRC) if ours else "someone else's")
        raw.update(job_id=job_id, name=f"job{job_id}", job_state=[state, *flags], restart_cnt=restarts, **kw)
        raw["submit_time"] = {"set": True, "infinite": False, "number": submitted}
        self.jobs[job_id] = raw
        self.fake.add("GET", f"/slurm/{VERSION}/job/{job_id}", lambda seen, i=job_id: self._job(i))

    def _envelope(self, jobs: list[dict[str, Any]], **kw: Any) -> Reply:
        return Reply.json(200, {"jobs": jobs, "warnings": [], "errors": [], **kw})

    def _jobs(self, seen: Seen) -> Reply:
        return self._envelope(list(self.jobs.values()), last_update={"set": True, "infinite": False, "number": T0 + 100})

    def _states(self, seen: Seen) -> Reply:
        return self._envelope([{"job_id": str(i), "state": j["job_state"]} for i, j in self.jobs.items()])

    def _job(self, job_id: int) -> Reply:
        if job_id not in self.jobs:
            return Reply.json(404, {"errors": [{"error_number": 2017, "error": "Invalid job id specified"}]})
        return self._envelope([self.jobs[job_id]])

    def asked(self) -> list[str]:
        paths = [s.path.split("?")[0] for s in self.fake.seen]
        self.fake.seen.clear()
        return [p.replace(f"/slurm/{VERSION}/", "") for p in paths if p != "/openapi/v3"]


class Events:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries += Entries
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(i)} for i in range(len(Entries))]}

    def published(self) -> list[tuple[str, dict[str, Any]]]:
        """(eventId, detail) of each event (an entry's Detail carries the eventId)."""
        out = [(json.loads(e["Detail"])["eventId"], json.loads(e["Detail"])) for e in self.entries]
        self.entries.clear()
        return out


class NoStates(SlurmClient):
    """The same client as a cluster without /jobs/state would have it (v0.0.38/v0.0.39)."""

    serves_job_states = False


@pytest.fixture
def two(aws):
    """One cluster, two trackers (own tables and buses): one asks /jobs/state on steady
    polls, the other lists /jobs as before."""
    cluster = Cluster()
    db = boto3.client("dynamodb", region_name="us-east-1")
    trackers = {}
    for name, kind in (("states", SlurmClient), ("jobs", NoStates)):
        create_table(db, name)
        events = Events()
        client = kind(cluster.fake.url, StaticToken("t"), user="u", api_version=VERSION)
        tracker = Tracker(client, DynamoDBJobStore(db, name), EventBus(events, "default", "slurm-trigger", attempts=1),
                          "c1", sweep_seconds=10**9)
        trackers[name] = (tracker, events)
    yield cluster, trackers
    cluster.fake.close()


def poll_both(cluster: Cluster, trackers: dict[str, Any]) -> tuple[list[Any], dict[str, list[str]]]:
    """Poll with each tracker; the events each published (must be equal) and what each asked."""
    published, asked, seen = {}, {}, {}
    for name, (tracker, events) in trackers.items():
        cluster.asked()
        result = tracker.poll()
        asked[name] = cluster.asked()
        published[name] = events.published()
        seen[name] = (result.jobs_seen, result.tracked_seen) if result.changed else None
        assert result.listing == ("jobs" if name == "jobs" or result.sweep else "states"), name
    assert published["states"] == published["jobs"]
    if seen["states"] and seen["jobs"]:  # JobsSeenPerPoll: Slurm's jobs, however they were asked
        assert seen["states"] == seen["jobs"]
    return published["states"], asked


def test_steady_polls_ask_states_then_details_and_publish_the_same_events(two) -> None:
    cluster, trackers = two
    cluster.set(1, "PENDING")
    cluster.set(2, "RUNNING", ours=False)
    for i in range(3, 8):
        cluster.set(i, "PENDING", ours=False)
    events, asked = poll_both(cluster, trackers)  # the first poll is a full listing in both
    assert [d["jobId"] for _, d in events] == [1] and asked["states"] == ["jobs"]

    cluster.set(1, "RUNNING", start_time={"set": True, "infinite": False, "number": T0 + 5})
    cluster.set(2, "COMPLETED", ours=False)  # not ours: seen in the states, never fetched
    cluster.set(8, "PENDING")  # new and ours
    cluster.set(9, "PENDING", ours=False)  # new, not ours: fetched once, then known to be below the top
    events, asked = poll_both(cluster, trackers)
    assert sorted((d["jobId"], d["state"], d["previousState"]) for _, d in events) == [(1, "RUNNING", "PENDING"), (8, "PENDING", None)]
    assert asked["states"] == ["jobs/state", "job/1", "job/8", "job/9"] and asked["jobs"] == ["jobs"]

    events, asked = poll_both(cluster, trackers)  # nothing moved: the states only
    assert events == [] and asked["states"] == ["jobs/state"]

    cluster.set(1, "COMPLETED", exit_code={"status": ["SUCCESS"], "return_code": {"set": True, "infinite": False, "number": 0}},
                end_time={"set": True, "infinite": False, "number": T0 + 60})
    events, asked = poll_both(cluster, trackers)
    assert [(d["jobId"], d["state"], d["exitCode"]) for _, d in events] == [(1, "COMPLETED", 0)]
    assert asked["states"] == ["jobs/state", "job/1"]


def test_many_moved_jobs_fall_back_to_the_full_listing(two) -> None:
    cluster, trackers = two
    tracker, events = trackers["states"]
    assert tracker.max_details is None and details_budget(100) == 20 and details_budget(100_000) == 1000
    tracker.max_details = 5
    cluster.set(1, "PENDING")
    tracker.poll()
    for i in range(2, 3 + tracker.max_details):
        cluster.set(i, "PENDING")
    cluster.asked()
    result = tracker.poll()
    assert result.listing == "jobs" and cluster.asked() == ["jobs/state", "jobs"]
    assert len(events.published()) == 2 + tracker.max_details


def test_a_requeue_seen_while_completing_is_fetched_again_until_it_runs_anew(two) -> None:
    """24.11: ``scontrol requeue`` shows PENDING+COMPLETING with the old submit time for
    ~0.1 s, then PENDING with the new one: the same base state, so the poll that saw the
    first must not take it as known."""
    cluster, trackers = two
    cluster.set(1, "RUNNING")
    poll_both(cluster, trackers)
    cluster.set(1, "PENDING", "COMPLETING", restarts=1)
    assert poll_both(cluster, trackers)[0] == []  # the event waits for the new submit time
    cluster.set(1, "PENDING", submitted=T0 + 50, restarts=1)
    (_, detail), = poll_both(cluster, trackers)[0]
    assert (detail["previousState"], detail["state"], detail["stateFlags"]) == ("RUNNING", "PENDING", ["REQUEUED"])


def test_a_requeue_back_in_the_same_state_waits_for_the_sweep(two) -> None:
    """/jobs/state has no submit time: a job requeued and running again between two polls
    looks unchanged to it; the sweep's full listing publishes the requeue (same event as
    a full listing would have published at once)."""
    cluster, trackers = two
    tracker, events = trackers["states"]
    cluster.set(1, "RUNNING")
    tracker.poll()
    events.published()
    cluster.set(1, "RUNNING", submitted=T0 + 50, restarts=1)
    assert tracker.poll().listing == "states" and events.published() == []
    assert tracker.poll(sweep=True).listing == "jobs"
    (_, detail), = events.published()
    assert (detail["state"], detail["stateFlags"]) == ("RUNNING", ["REQUEUED"])


# --- the takeover's search


def test_a_bounded_search_fetches_only_jobs_newer_than_the_claim(two) -> None:
    cluster, _ = two
    client = SlurmClient(cluster.fake.url, StaticToken("t"), user="u", api_version=VERSION)
    for i in range(1, 201):  # 200 jobs, one a second; the claim was taken at job 190's second
        cluster.set(i, "PENDING", ours=False, submitted=T0 + i)
    cluster.set(195, "PENDING", submitted=T0 + 195, comment="st-key " + provenance.encode(SRC))
    cluster.asked()
    found = client.find_jobs_by_comment("st-key", since=T0 + 190 + 60)  # 60 s skew allowed for
    assert [j.job_id for j in found] == [195]
    asked = cluster.asked()
    assert "jobs" not in asked and asked[0] == "jobs/state"
    fetched = [int(p.split("/")[1]) for p in asked if p.startswith("job/")]
    assert max(fetched) == 200 and min(fetched) < 190 and len(fetched) <= 20  # the newest, and the lowest (wrap check)


def test_a_search_with_too_many_newer_jobs_or_no_bound_lists_all(two) -> None:
    cluster, _ = two
    client = SlurmClient(cluster.fake.url, StaticToken("t"), user="u", api_version=VERSION)
    for i in range(1, details_budget(0) + 20):
        cluster.set(i, "PENDING", ours=False, submitted=T0 + i)
    cluster.asked()
    assert client.find_jobs_by_comment("st-key", since=T0) == []
    assert cluster.asked()[-1] == "jobs"
    assert client.find_jobs_by_comment("st-key") == [] and cluster.asked() == ["jobs"]


def test_a_requeued_or_split_job_never_ends_the_walk(two) -> None:
    """Their submit time is not their creation: a requeue moves it later, an array task
    split off keeps the array's. Older-looking, they are not where older ids begin."""
    cluster, _ = two
    client = SlurmClient(cluster.fake.url, StaticToken("t"), user="u", api_version=VERSION)
    for i in range(1, 11):
        cluster.set(i, "PENDING", ours=False, submitted=T0 + i)
    cluster.set(8, "PENDING", submitted=T0 + 50, comment="st-key " + provenance.encode(SRC))  # the one made after the claim
    cluster.set(9, "RUNNING", ours=False, submitted=T0 + 1, array_job_id={"set": True, "infinite": False, "number": 1},
                array_task_id={"set": True, "infinite": False, "number": 3})
    cluster.set(10, "PENDING", ours=False, submitted=T0 + 2, restarts=1)  # requeued: its submit time says nothing
    assert [j.job_id for j in client.find_jobs_by_comment("st-key", since=T0 + 100)] == [8]
    assert "jobs" not in cluster.asked()


def test_wrapped_job_ids_fall_back_to_the_full_listing(two) -> None:
    """After MaxJobId, ids start again from the bottom: the newest job is not the highest."""
    cluster, _ = two
    client = SlurmClient(cluster.fake.url, StaticToken("t"), user="u", api_version=VERSION)
    for i in range(1000, 1010):
        cluster.set(i, "RUNNING", ours=False, submitted=T0 + i - 1000)
    cluster.set(3, "PENDING", submitted=T0 + 5000, comment="st-key " + provenance.encode(SRC))
    assert [j.job_id for j in client.find_jobs_by_comment("st-key", since=T0 + 4990)] == [3]
    assert cluster.asked()[-1] == "jobs"


def test_a_job_gone_from_jobs_state_is_looked_up_without_waiting_for_the_sweep(two) -> None:
    """A tracked RUNNING job that leaves slurmctld (MinJobAge) before a poll saw its end:
    ``/jobs/state`` lists every job, so the steady poll that no longer finds it looks it
    up at once (here: no accounting, LOST) instead of ten minutes later at the sweep."""
    cluster, trackers = two
    tracker, events = trackers["states"]
    cluster.set(1, "RUNNING")
    cluster.set(2, "RUNNING")
    tracker.poll()
    tracker.poll()
    events.published()
    del cluster.jobs[1]  # ended and purged between two polls
    result = tracker.poll()
    assert result.listing == "states" and not result.sweep
    assert [(d["jobId"], d["previousState"], d["state"]) for _, d in events.published()] == [(1, "RUNNING", "LOST")]
    assert set(tracker.store.load_cursor("c1").known) == {2}
