"""Retry policies: parsing, the decision, the Retrier's use of the exactly-once path,
and the tracker's one call (a retry that fails for now is redone by the next poll).
Real Slurm runs the same in tests/integration/test_retry_real.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from slurm_trigger import provenance
from slurm_trigger.eventbus import EventBus
from slurm_trigger.idempotency import DynamoDBIdempotencyStore, create_table as create_claims
from slurm_trigger.jobstore import DynamoDBJobStore, TrackedJob, create_table as create_jobs
from slurm_trigger.outcome import Outcome
from slurm_trigger.pipelines import PipelineError, parse as parse_pipeline
from slurm_trigger.provenance import Source
from slurm_trigger.retry import DEFAULT_STATES, EXHAUSTED, Retrier, RetryPolicy, attempt_key, parse
from slurm_trigger.slurm.models import Job, JobsPage, JobSubmission, SubmitResult
from slurm_trigger.tracker import Tracker
from slurm_trigger.trigger import Trigger


# --- the policy
def test_defaults_retry_lost_capacity_and_no_exit_code() -> None:
    policy = parse({"attempts": 3})
    assert policy == RetryPolicy(3, frozenset(), DEFAULT_STATES, 0)
    assert DEFAULT_STATES == {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"}
    assert policy.matches("NODE_FAIL", None) and policy.matches("PREEMPTED", 0)
    assert not policy.matches("FAILED", 3) and not policy.matches("TIMEOUT", None)


def test_exit_codes_and_states() -> None:
    policy = parse({"attempts": 2, "exit_codes": [3, 75], "states": ["TIMEOUT"], "delay": "5m"})
    assert policy.delay == 300
    assert policy.matches("FAILED", 3) and policy.matches("FAILED", 75) and policy.matches("TIMEOUT", None)
    assert not policy.matches("FAILED", 4) and not policy.matches("COMPLETED", 0) and not policy.matches("NODE_FAIL", None)
    only_codes = parse({"attempts": 2, "exit_codes": [3], "states": []})
    assert only_codes.matches("FAILED", 3) and not only_codes.matches("NODE_FAIL", None)
    assert parse({"attempts": 2, "delay": 90}).delay == 90 and parse({"attempts": 2, "delay": 0}).delay == 0


@pytest.mark.parametrize("retry, says", [
    ({"attempts": 1}, "'retry.attempts' must be an integer from 2 to 10"),
    ({"attempts": 11}, "from 2 to 10"),
    ({"attempts": True}, "'retry.attempts'"),
    ({}, "'retry.attempts'"),
    ({"attempts": 3, "exit_codes": [0]}, "'retry.exit_codes' must be a list of exit codes from 1 to 255 (0 is success)"),
    ({"attempts": 3, "exit_codes": "3"}, "'retry.exit_codes'"),
    ({"attempts": 3, "states": ["CANCELLED"]}, "'retry.states' cannot name CANCELLED"),
    ({"attempts": 3, "states": ["LOST", "COMPLETED"]}, "cannot name COMPLETED, LOST"),
    ({"attempts": 3, "delay": "soon"}, "'retry.delay' must be a duration"),
    ({"attempts": 3, "states": []}, "nothing would be retried"),
    ({"attempts": 3, "tries": 2}, "unknown retry field(s) tries"),
    ([3], "'retry' must be an object"),
])
def test_bad_policies_are_refused_naming_file_pipeline_and_field(tmp_path: Path, retry: Any, says: str) -> None:
    data = {"name": "p1", "match": {"prefix": "in/"}, "retry": retry,
            "job": {"script": "#!/bin/bash\ntrue\n", "partition": "debug"}}
    with pytest.raises(PipelineError) as err:
        parse_pipeline(data, tmp_path / "p1.yaml")
    assert str(err.value).startswith(f"{tmp_path / 'p1.yaml'}: pipeline 'p1': ") and says in str(err.value)


def test_steps_and_arrays_cannot_retry_yet(tmp_path: Path) -> None:
    job = {"script": "#!/bin/bash\ntrue\n"}
    steps = {"name": "s", "match": {"prefix": "a/"}, "retry": {"attempts": 2},
             "steps": [{"name": "a", "job": job}, {"name": "b", "job": job, "after": ["a"]}]}
    array = {"name": "s", "match": {"prefix": "a/"}, "retry": {"attempts": 2},
             "collect": {"pattern": "a/(?P<s>[^/]+)_(?P<r>R[12])", "member": "r", "members": ["R1", "R2"], "as": "array"},
             "job": job}
    for data in (steps, array):
        with pytest.raises(PipelineError, match="'retry' resubmits one job"):
            parse_pipeline(data, tmp_path / "s.yaml")


def test_attempt_in_the_comment_round_trips() -> None:
    src = Source("b", "k", "p", idempotency_key="st-1#attempt-2", attempt=2, max_attempts=3, original_key="st-1")
    stamped = provenance.comment(src, "my comment")
    assert provenance.decode(stamped) == src and stamped.startswith("my comment ")
    again = provenance.restamp(stamped, Source("b", "k", "p", idempotency_key="st-1#attempt-3", attempt=3))
    assert again.startswith("my comment slurm-trigger:") and provenance.decode(again).attempt == 3
    assert provenance.decode(stamped.replace('"attempt":2', '"attempt":"2"')) is None  # a number, or not ours
    assert src.to_detail()["attempt"] == 2 and src.to_detail()["originalKey"] == "st-1"
    assert "attempt" not in Source("b", "k", "p").to_detail()


# --- the Retrier, with a trigger that records what it is asked
class FakeTrigger:
    def __init__(self) -> None:
        self.submitted: list[tuple[Source, JobSubmission, Any]] = []
        self.events: list[Any] = []
        self.fail: Exception | None = None
        self.metrics = NoMetrics()
        self.bus = self

    def submit_rendered(self, source: Source, job: JobSubmission, detail: Any = None) -> Outcome:
        if self.fail:
            raise self.fail
        self.submitted.append((source, job, detail))
        return Outcome("submitted", source.bucket, source.key, source.pipeline, 100 + len(self.submitted))

    def put(self, events: Any) -> int:
        self.events.extend(events)
        return len(self.events)


class NoMetrics:
    def __init__(self) -> None:
        self.added: list[str] = []

    def add_metric(self, name: str, **_: Any) -> None:
        self.added.append(name)


class Kept:
    def __init__(self, jobs: dict[str, Any]) -> None:
        self.jobs = jobs

    def kept_job(self, key: str) -> Any:
        return self.jobs.get(key)


KEPT = JobSubmission(script="#!/bin/bash\nexit 3\n", name="j", comment=provenance.comment(
    Source("b", "in/x", "p", idempotency_key="st-1", attempt=1, max_attempts=3), "template says"))


def tracked(state: str, exit_code: int | None, attempt: int, pipeline: str = "p") -> TrackedJob:
    key = "st-1" if attempt == 1 else attempt_key("st-1", attempt)
    return TrackedJob("c1", 7, state, pipeline=pipeline, bucket="b", key="in/x", exit_code=exit_code,
                      idempotency_key=key, attempt=attempt, max_attempts=3, original_key=None if attempt == 1 else "st-1")


def retrier(policy: RetryPolicy, kept: Any = None) -> tuple[Retrier, FakeTrigger]:
    trigger = FakeTrigger()
    return Retrier(trigger, Kept({"st-1": (kept or KEPT).to_dict()}), {"p": policy}, clock=lambda: 1000.0), trigger  # type: ignore[arg-type]


def test_a_matching_failure_submits_the_kept_job_as_the_next_attempt() -> None:
    r, trigger = retrier(RetryPolicy(3, frozenset({3}), frozenset(), 60))
    assert r.after([tracked("FAILED", 3, 1)]) == set()
    (source, job, detail), = trigger.submitted
    assert (source.idempotency_key, source.attempt, source.max_attempts, source.original_key) == ("st-1#attempt-2", 2, 3, "st-1")
    assert provenance.decode(job.comment) == source and job.comment.startswith("template says ")
    assert job.script == KEPT.script and job.begin_time == 1060  # the delay: Slurm holds it
    assert detail == {"retryOf": {"jobId": 7, "state": "FAILED", "exitCode": 3}}


def test_no_retry_for_success_unlisted_codes_other_pipelines_or_unfinished_jobs() -> None:
    r, trigger = retrier(RetryPolicy(3, frozenset({3}), frozenset()))
    r.after([tracked("COMPLETED", 0, 1), tracked("FAILED", 4, 1), tracked("FAILED", 3, 1, pipeline="other"),
             tracked("RUNNING", None, 1), tracked("CANCELLED", None, 1)])
    assert trigger.submitted == [] and trigger.events == []


def test_the_last_attempt_is_reported_once_and_not_retried() -> None:
    r, trigger = retrier(RetryPolicy(3, frozenset({3}), frozenset()))
    r.after([tracked("FAILED", 3, 3)])
    assert trigger.submitted == []
    (event,) = trigger.events
    assert event.detail_type == EXHAUSTED and event.event_id == "st-1:retries-exhausted"
    assert event.detail["source"]["attempt"] == 3 and event.detail["exitCode"] == 3
    assert trigger.metrics.added == ["RetriesExhausted"]


def test_a_job_not_kept_is_reported_not_retried() -> None:
    trigger = FakeTrigger()
    r = Retrier(trigger, Kept({}), {"p": RetryPolicy(3, frozenset({3}), frozenset())})  # type: ignore[arg-type]
    r.after([tracked("FAILED", 3, 1)])
    assert trigger.submitted == [] and "was not kept" in trigger.events[0].detail["reason"]


def test_a_retry_that_fails_for_now_is_handed_back() -> None:
    r, trigger = retrier(RetryPolicy(3, frozenset({3}), frozenset()))
    trigger.fail = ConnectionError("slurmrestd went away")
    assert r.after([tracked("FAILED", 3, 1)]) == {7}


# --- the trigger keeps the first attempt's job; the tracker redoes a retry that failed
class Slurm:
    version = "v0.0.42"

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}

    def submit(self, sub: JobSubmission) -> SubmitResult:
        job_id = 10 + len(self.jobs)
        self.jobs[job_id] = Job(job_id, sub.name or "", "PENDING", comment=sub.comment, user="u")
        return SubmitResult(job_id)

    def list_jobs(self, update_time: int | None = None) -> JobsPage:
        return JobsPage(tuple(self.jobs.values()), changed=True, last_update=int(1e9) + len(self.jobs))

    def get_job(self, job_id: int) -> Job:
        return self.jobs[job_id]

    def find_jobs_by_comment(self, key: str, name: str | None = None, since: float | None = None) -> list[Job]:
        return [j for j in self.jobs.values() if key in (j.comment or "")]


class Events:
    def __init__(self) -> None:
        self.details: list[tuple[str, dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.details += [(e["DetailType"], json.loads(e["Detail"])) for e in Entries]
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"} for _ in Entries]}


def retrying_pipeline(tmp_path: Path) -> Any:
    """A pipeline whose jobs exit 3 and are tried twice."""
    return parse_pipeline(yaml.safe_load("""
name: p
match: {prefix: "in/"}
retry: {attempts: 2, exit_codes: [3]}
job: {script: "#!/bin/bash\\nexit 3\\n", comment: mine}
"""), tmp_path / "p.yaml")


def test_trigger_and_tracker_make_one_job_per_attempt(aws, tmp_path: Path) -> None:
    from slurm_trigger.s3events import ObjectRef

    db = boto3.client("dynamodb", region_name="us-east-1")
    create_claims(db, "claims")
    create_jobs(db, "jobs")
    pipeline = retrying_pipeline(tmp_path)
    slurm, events = Slurm(), Events()
    store = DynamoDBIdempotencyStore(db, "claims")
    trigger = Trigger(pipelines=[pipeline], client=slurm, store=store, bus=EventBus(events, "default", "s"), cluster="c1")
    (first,) = trigger.handle(ObjectRef("b", "in/x", size=1, etag="e", version_id="v1"))
    assert provenance.decode(slurm.jobs[first.job_id].comment).attempt == 1
    assert store.kept_job(first.idempotency_key)["comment"].startswith("mine slurm-trigger:")

    failing = FakeTrigger()
    failing.fail = ConnectionError("for now")
    redo = Retrier(failing, store, {"p": pipeline.retry})  # type: ignore[arg-type]
    tracker = Tracker(slurm, DynamoDBJobStore(db, "jobs"), EventBus(events, "default", "s"), "c1", retry=redo)
    slurm.jobs[first.job_id] = Job(first.job_id, "j", "FAILED", exit_code=3, comment=slurm.jobs[first.job_id].comment, user="u")
    tracker.poll()
    assert DynamoDBJobStore(db, "jobs").get_jobs("c1", [first.job_id]) == {}  # not saved: the next poll redoes it
    tracker.retry = Retrier(trigger, store, {"p": pipeline.retry})
    tracker.poll()
    tracker.poll()
    attempts = sorted(provenance.decode(j.comment).attempt for j in slurm.jobs.values())
    assert attempts == [1, 2]
    second = max(slurm.jobs)
    slurm.jobs[second] = Job(second, "j", "FAILED", exit_code=3, comment=slurm.jobs[second].comment, user="u")
    tracker.poll()
    tracker.poll()
    assert len(slurm.jobs) == 2
    assert [d["source"]["attempt"] for t, d in events.details if t == EXHAUSTED] == [2]
    states = [(d["jobId"], d["source"]["attempt"]) for t, d in events.details if t == "Slurm Job State Change" and d["state"] == "FAILED"]
    assert sorted(set(states)) == [(first.job_id, 1), (second, 2)]


def test_an_sqs_batch_stamps_and_keeps_a_retrying_pipelines_first_attempt(aws, tmp_path: Path) -> None:
    """The SQS route batches single-job pipelines (submit_rendered_many): a retrying
    pipeline's jobs there are stamped attempt 1 and kept, as on the single path."""
    from slurm_trigger.idempotency import idempotency_key
    from slurm_trigger.s3events import ObjectRef
    from slurm_trigger.trigger import render_job

    db = boto3.client("dynamodb", region_name="us-east-1")
    create_claims(db, "claims")
    pipeline = retrying_pipeline(tmp_path)
    slurm, store = Slurm(), DynamoDBIdempotencyStore(db, "claims")
    trigger = Trigger(pipelines=[pipeline], client=slurm, store=store, bus=EventBus(Events(), "default", "s"), cluster="c1")
    refs = [ObjectRef("b", f"in/{n}", size=1, etag="e", version_id="v1") for n in "xy"]
    sources = [Source(r.bucket, r.key, "p", r.version_id, r.etag, idempotency_key=idempotency_key("p", r)) for r in refs]
    made = trigger.submit_rendered_many([(src, render_job(r, pipeline, None, src)) for r, src in zip(refs, sources)])
    assert [o.status for o in made] == ["submitted", "submitted"]  # type: ignore[union-attr]
    for outcome in made:
        assert provenance.decode(slurm.jobs[outcome.job_id].comment).attempt == 1  # type: ignore[union-attr]
        assert store.kept_job(outcome.idempotency_key)["comment"].startswith("mine slurm-trigger:")  # type: ignore[union-attr]


def test_the_tracker_builds_its_retrier_only_for_a_job_with_an_attempt() -> None:
    from slurm_trigger.retry import OnDemand

    built: list[int] = []
    r, trigger = retrier(RetryPolicy(3, frozenset({3}), frozenset()))
    lazy = OnDemand(lambda: built.append(1) or r)
    assert lazy.after([TrackedJob("c1", 1, "FAILED", exit_code=3, pipeline="p", bucket="b", key="k")]) == set()
    assert built == []  # no attempt stamped: no pipeline loaded
    lazy.after([tracked("FAILED", 3, 1)])
    lazy.after([tracked("FAILED", 3, 2)])
    assert built == [1] and len(trigger.submitted) == 2
