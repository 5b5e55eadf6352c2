"""The trigger's failure branches that a healthy local Slurm cannot produce on demand
(a POST whose answer is lost, a proxy's 5xx, a job made despite errors, EventBridge
refusing), with a scripted stand-in for the Slurm client and moto for AWS."""
from __future__ import annotations

import json
from typing import Any, Callable

import boto3
import pytest

from chalicelib.eventbus import EventBus, EventBusError
from chalicelib.idempotency import ClaimInProgressError, DynamoDBIdempotencyStore, create_table, idempotency_key
from chalicelib.pipelines import parse
from chalicelib.s3events import ObjectRef
from chalicelib.slurm.errors import SlurmRejectedError, SlurmUnavailableError
from chalicelib.slurm.models import Job, SubmitResult
from chalicelib.trigger import Trigger

PIPELINE = {"name": "p", "match": {"prefix": "in/"}, "job": {"script": "#!/bin/bash\ntrue\n"}}


class FakeSlurm:
    """Keeps the jobs it "accepted"; ``fail`` decides what the next submit does."""

    version = "v0.0.42"

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.fail: Callable[[int], None] | None = None  # called with the new job's id, may raise

    def submit(self, sub: Any) -> SubmitResult:
        self.last_comment = sub.comment
        self.last = sub
        fail, self.fail = self.fail, None
        job_id = 100 + len(self.jobs)
        if fail is None:
            self.jobs.append(Job(job_id, comment=sub.comment))
            return SubmitResult(job_id)
        fail(job_id)  # raises; appends first when the job "was made"
        raise AssertionError("fail() must raise")

    def find_jobs_by_comment(self, substring: str) -> list[Job]:
        return [j for j in self.jobs if substring in (j.comment or "")]

    def made_then(self, exc: Exception) -> Callable[[int], None]:
        def fail(job_id: int) -> None:
            self.jobs.append(Job(job_id, comment=self.last_comment))
            raise exc
        return fail


class FlakyBus(EventBus):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.refuse_next = False

    def put(self, events: Any) -> int:
        if self.refuse_next:
            self.refuse_next = False
            raise EventBusError([])
        return super().put(events)


@pytest.fixture
def setup(aws, tmp_path):
    ddb = boto3.client("dynamodb")
    create_table(ddb, "idem")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(Name="all", EventPattern=json.dumps({"source": ["slurm-trigger"]}))
    events.put_targets(Rule="all", Targets=[{"Id": "q", "Arn": arn}])
    slurm = FakeSlurm()
    bus = FlakyBus(events, "default", "slurm-trigger", sleep=lambda _: None)
    trigger = Trigger(
        pipelines=[parse(PIPELINE, tmp_path / "p.yaml")],
        client=slurm,
        store=DynamoDBIdempotencyStore(ddb, "idem"),
        bus=bus,
        cluster="c",
    )

    def published() -> list[dict[str, Any]]:
        msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in msgs]

    return trigger, slurm, bus, published


REF = ObjectRef("b", "in/x", version_id="v1")


def test_answer_lost_after_the_job_was_made_adopts_it(setup):
    trigger, slurm, _, published = setup
    slurm.fail = slurm.made_then(SlurmUnavailableError("read timeout", maybe_submitted=True))
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    [outcome] = trigger.handle(REF)  # the retry: taken over, Slurm asked, job adopted
    assert (outcome.status, outcome.job_id) == ("adopted", 100) and len(slurm.jobs) == 1
    [event] = published()
    assert event["detail"]["adopted"] is True and event["detail"]["jobId"] == 100


def test_proxy_5xx_without_a_job_submits_on_retry(setup):
    trigger, slurm, _, _ = setup

    def bad_gateway(_: int) -> None:
        raise SlurmUnavailableError("bad gateway", status=502)

    slurm.fail = bad_gateway
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    [outcome] = trigger.handle(REF)
    assert outcome.status == "submitted" and len(slurm.jobs) == 1


def test_unreachable_releases_the_claim(setup):
    trigger, slurm, _, _ = setup

    def refused(_: int) -> None:
        raise SlurmUnavailableError("connection refused")

    slurm.fail = refused
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    claim = trigger.store.claim("probe")  # the store works; REF's claim is gone, not expired:
    assert not claim.taken_over
    assert trigger.handle(REF)[0].status == "submitted" and len(slurm.jobs) == 1


def test_job_made_despite_errors_is_kept_and_reported(setup):
    trigger, slurm, _, published = setup
    slurm.fail = slurm.made_then(SlurmRejectedError("partition config", status=200, job_id=100))
    [outcome] = trigger.handle(REF)
    assert (outcome.status, outcome.job_id) == ("failed", 100)
    [event] = published()
    assert event["detail-type"] == "Slurm Job Submission Failed" and event["detail"]["jobId"] == 100
    assert trigger.handle(REF)[0].status == "duplicate" and len(slurm.jobs) == 1


def test_eventbridge_refusing_after_submit_publishes_on_retry(setup):
    trigger, slurm, bus, published = setup
    bus.refuse_next = True
    with pytest.raises(EventBusError):
        trigger.handle(REF)
    [outcome] = trigger.handle(REF)
    assert (outcome.status, outcome.job_id) == ("adopted", 100) and len(slurm.jobs) == 1
    [event] = published()
    assert event["detail"]["eventId"] == outcome.idempotency_key


def test_claim_in_progress_is_transient(setup):
    trigger, _, _, _ = setup
    trigger.store.claim(idempotency_key("p", REF))  # another container, right now
    with pytest.raises(ClaimInProgressError) as info:
        trigger.handle(REF)
    assert info.value.transient


def test_one_transient_pipeline_does_not_stop_the_others(setup, tmp_path):
    trigger, slurm, _, _ = setup
    trigger.pipelines.append(parse({**PIPELINE, "name": "q"}, tmp_path / "q.yaml"))

    def refused(_: int) -> None:
        raise SlurmUnavailableError("connection refused")

    slurm.fail = refused  # the first pipeline's submit fails, the second's goes through
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    assert [o.status for o in trigger.handle(REF)] == ["submitted", "duplicate"]
    assert len(slurm.jobs) == 2


def test_metadata_opt_in_reads_the_version_it_was_told(setup, tmp_path):
    trigger, slurm, _, _ = setup
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bkt")
    s3.put_bucket_versioning(Bucket="bkt", VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket="bkt", Key="in/m", Body=b"1", Metadata={"run-id": "r7"})["VersionId"]
    s3.put_object(Bucket="bkt", Key="in/m", Body=b"2", Metadata={"run-id": "r8"})
    job = {**PIPELINE["job"], "environment": {"RUN": "${metadata_run_id}"}}
    trigger.pipelines = [parse({**PIPELINE, "metadata": True, "job": job}, tmp_path / "m.yaml")]
    trigger.s3 = s3
    assert trigger.handle(ObjectRef("bkt", "in/m", version_id=first))[0].status == "submitted"
    assert slurm.last.environment["RUN"] == "r7"
    # an object without that metadata: reported, not retried
    s3.put_object(Bucket="bkt", Key="in/bare", Body=b"3")
    [outcome] = trigger.handle(ObjectRef("bkt", "in/bare"))
    assert outcome.status == "failed" and "${metadata_run_id}" in outcome.reason


def test_metrics(setup):
    trigger, _, _, _ = setup
    counted: list[str] = []

    class Recorder:
        def add_metric(self, name: str, **_: Any) -> None:
            counted.append(name)

    trigger.metrics = Recorder()
    trigger.handle(ObjectRef("b", "elsewhere/x"))
    trigger.handle(REF)
    trigger.handle(REF)
    trigger.handle(ObjectRef("b", "in/bad\nkey"))
    assert counted == ["UnmatchedObjects", "JobsSubmitted", "DuplicateObjectsSkipped", "SubmissionFailures"]


@pytest.mark.parametrize("key", ["in/" + "k" * 1021, "in/" + "\u2603" * 340, "in/" + "\U0001f600" * 255])
def test_long_keys_fit_slurms_comment(tmp_path, key):
    from chalicelib.provenance import decode
    from chalicelib.provenance import MAX_COMMENT
    from chalicelib.trigger import render_job

    assert len(key.encode()) <= 1024
    pipeline = parse({**PIPELINE, "job": {**PIPELINE["job"], "comment": "a template comment"}}, tmp_path / "p.yaml")
    job = render_job(ObjectRef("b", key, version_id="v"), pipeline)
    assert len(job.comment.encode()) <= MAX_COMMENT
    source = decode(job.comment)
    assert source.idempotency_key == idempotency_key("p", ObjectRef("b", key, version_id="v"))
    assert source.key.endswith("...") and key.startswith(source.key[:-3])
    assert job.environment["SLURM_TRIGGER_KEY"] == key
