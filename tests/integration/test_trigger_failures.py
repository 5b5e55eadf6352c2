"""The trigger's failure branches that a healthy local Slurm cannot produce on demand
(a POST whose answer is lost, a proxy's 5xx, a job made despite errors, EventBridge
refusing), with a scripted stand-in for the Slurm client and moto for AWS."""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import boto3
import pytest

from slurm_trigger.eventbus import EventBus, EventBusError
from slurm_trigger.idempotency import ClaimInProgressError, DynamoDBIdempotencyStore, create_table, idempotency_key
from slurm_trigger.pipelines import parse
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.slurm.errors import SlurmAuthError, SlurmRejectedError, SlurmUnavailableError
from slurm_trigger.slurm.models import Job, SubmitResult
from slurm_trigger.trigger import DeadlinePassedError, Trigger

PIPELINE = {"name": "p", "match": {"prefix": "in/"}, "job": {"script": "#!/bin/bash\ntrue\n"}}


class FakeSlurm:
    """Keeps the jobs it "accepted"; ``fail`` decides what the next submit does."""

    version = "v0.0.42"

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.fail: Callable[[int], None] | None = None  # called with the new job's id, may raise
        self.during: Callable[[], None] | None = None  # called once the job exists, before the answer
        self.submits = 0
        self.finds = 0

    def submit(self, sub: Any) -> SubmitResult:
        self.submits += 1
        self.last_comment = sub.comment
        self.last = sub
        fail, self.fail = self.fail, None
        job_id = 100 + self.submits - 1
        if fail is None:
            self.jobs.append(Job(job_id, comment=sub.comment))
            during, self.during = self.during, None
            if during:
                during()
            return SubmitResult(job_id)
        fail(job_id)  # raises; appends first when the job "was made"
        raise AssertionError("fail() must raise")

    def find_jobs_by_comment(self, substring: str, *, name: str | None = None, since: float | None = None) -> list[Job]:
        self.finds += 1
        self.since = since
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


class Clock:
    """Wall-clock time that a test can move forward (leases run out without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


SETTLE = 90.0  # the trigger's settle_seconds (read timeout + slurmctld's slowest answer)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def setup(aws, tmp_path, clock):
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
        store=DynamoDBIdempotencyStore(ddb, "idem", clock=clock),
        bus=bus,
        cluster="c",
        settle_seconds=SETTLE,
        clock=clock,
    )

    def published() -> list[dict[str, Any]]:
        msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in msgs]

    return trigger, slurm, bus, published


REF = ObjectRef("b", "in/x", version_id="v1")


def test_answer_lost_after_the_job_was_made_adopts_it(setup, clock):
    trigger, slurm, _, published = setup
    slurm.fail = slurm.made_then(SlurmUnavailableError("read timeout", maybe_submitted=True))
    first = clock()
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    with pytest.raises(ClaimInProgressError):
        trigger.handle(REF)  # held: slurmctld may still be making the job
    clock.offset += SETTLE + 1
    [outcome] = trigger.handle(REF)  # the retry: taken over, Slurm asked, job adopted
    assert (outcome.status, outcome.job_id) == ("adopted", 100) and len(slurm.jobs) == 1
    assert first <= slurm.since < first + 5  # asked for jobs since the first claim only
    [event] = published()
    assert event["detail"]["adopted"] is True and event["detail"]["jobId"] == 100


def test_proxy_5xx_without_a_job_submits_on_retry(setup, clock):
    trigger, slurm, _, _ = setup

    def bad_gateway(_: int) -> None:
        raise SlurmUnavailableError("bad gateway", status=502, maybe_submitted=True)

    slurm.fail = bad_gateway
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    clock.offset += SETTLE + 1  # the claim was held; then the retry asks Slurm: no job
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
    from slurm_trigger.provenance import decode
    from slurm_trigger.provenance import MAX_COMMENT
    from slurm_trigger.trigger import render_job

    assert len(key.encode()) <= 1024
    pipeline = parse({**PIPELINE, "job": {**PIPELINE["job"], "comment": "a template comment"}}, tmp_path / "p.yaml")
    job = render_job(ObjectRef("b", key, version_id="v"), pipeline)
    assert len(job.comment.encode()) <= MAX_COMMENT
    source = decode(job.comment)
    assert source.idempotency_key == idempotency_key("p", ObjectRef("b", key, version_id="v"))
    assert source.key.endswith("...") and key.startswith(source.key[:-3])
    assert job.environment["SLURM_TRIGGER_KEY"] == key


# ------------------------------------------------------------------ the outbox and owned claims

KEY = idempotency_key("p", REF)


def record_of(key: str = KEY) -> dict[str, Any] | None:
    return boto3.client("dynamodb").get_item(TableName="idem", Key={"id": {"S": key}}, ConsistentRead=True).get("Item")


def test_publish_fails_then_the_retry_publishes_the_record_and_never_submits(setup):
    trigger, slurm, bus, published = setup
    bus.refuse_next = True
    with pytest.raises(EventBusError):
        trigger.handle(REF)
    assert record_of()["status"]["S"] == "SUBMITTED" and record_of()["job_id"]["N"] == "100"
    slurm.jobs.clear()  # the job ended and left /jobs: the record is what keeps it
    [outcome] = trigger.handle(REF)  # handed over at once: no wait
    assert (outcome.status, outcome.job_id) == ("adopted", 100)
    assert (slurm.submits, slurm.finds) == (1, 0)
    [event] = published()
    assert event["detail-type"] == "Slurm Job Submitted" and event["detail"]["jobId"] == 100
    assert event["detail"]["eventId"] == KEY
    assert record_of()["status"]["S"] == "COMPLETED"
    assert trigger.handle(REF)[0].status == "duplicate"


def test_a_job_made_despite_errors_goes_through_the_outbox_too(setup):
    trigger, slurm, bus, published = setup
    slurm.fail = slurm.made_then(SlurmRejectedError("partition config", status=200, job_id=100))
    bus.refuse_next = True
    with pytest.raises(EventBusError):
        trigger.handle(REF)
    [outcome] = trigger.handle(REF)
    assert (outcome.status, outcome.job_id) == ("failed", 100) and "partition config" in outcome.reason
    [event] = published()
    assert event["detail-type"] == "Slurm Job Submission Failed" and event["detail"]["jobId"] == 100
    assert slurm.submits == 1


class RecordFails:
    """A store whose ``record`` fails as DynamoDB does after botocore's retries."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.fail_record = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def record(self, *args: Any) -> None:
        if self.fail_record:
            self.fail_record = False
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
        self.store.record(*args)


def test_record_fails_the_retry_adopts_the_job_by_its_comment(setup):
    """The residual window: the job exists but the table refused its record. The claim
    is handed over at once, so the retry asks Slurm while the job is still there."""
    trigger, slurm, _, published = setup
    trigger.store = RecordFails(trigger.store)
    with pytest.raises(Exception, match="Could not connect"):
        trigger.handle(REF)
    [outcome] = trigger.handle(REF)
    assert (outcome.status, outcome.job_id) == ("adopted", 100)
    assert (slurm.submits, slurm.finds, len(slurm.jobs)) == (1, 1, 1)
    assert published()[0]["detail"]["adopted"] is True


def test_late_owner_is_superseded_and_changes_nothing(setup, clock, tmp_path):
    """The first attempt's submit outlives its lease; a second delivery takes the claim
    over, finds the job by its comment and completes. The first attempt's record then
    fails: it reports "superseded" and writes nothing."""
    trigger, slurm, _, published = setup
    taker_outcomes: list[Any] = []

    def second_delivery() -> None:
        clock.offset += 10 + SETTLE + 1  # past the first attempt's lease
        taker_outcomes.extend(trigger.handle(REF))

    slurm.during = second_delivery
    [late] = trigger.handle(REF, deadline=clock() + 10)
    [taker] = taker_outcomes
    assert (taker.status, taker.job_id) == ("adopted", 100)
    assert (late.status, late.job_id) == ("superseded", 100)
    assert (slurm.submits, len(slurm.jobs)) == (1, 1)
    assert record_of()["status"]["S"] == "COMPLETED" and record_of()["job_id"]["N"] == "100"
    assert len(published()) == 1


def test_claim_follows_the_deadline(setup, clock):
    trigger, slurm, _, _ = setup
    deadline = clock() + 300
    seen: list[float] = []
    slurm.during = lambda: seen.append(float(record_of()["in_progress_until"]["N"]))
    trigger.handle(REF, deadline=deadline)
    assert seen == [pytest.approx(deadline + SETTLE, abs=0.01)]


def test_lambda_context_sets_the_deadline(setup, clock):
    from slurm_trigger.trigger import lambda_deadline

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 42_000

    assert lambda_deadline(Context()) == pytest.approx(time.time() + 42, abs=1)
    assert lambda_deadline(None) is None
    trigger, slurm, _, _ = setup
    seen: list[float] = []
    slurm.during = lambda: seen.append(float(record_of()["in_progress_until"]["N"]))
    body = json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                      "s3": {"bucket": {"name": "b"}, "object": {"key": "in/x", "versionId": "v1"}}}]})
    record = {"messageId": "m", "receiptHandle": "r", "body": body, "attributes": {}, "messageAttributes": {},
              "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"}
    assert trigger.handle_sqs({"Records": [record]}, Context()) == {"batchItemFailures": []}
    assert seen == [pytest.approx(time.time() + 42 + SETTLE, abs=2)]


def test_no_submit_after_the_deadline(setup, clock):
    trigger, slurm, _, _ = setup
    with pytest.raises(DeadlinePassedError) as info:
        trigger.handle(REF, deadline=clock() - 1)
    assert info.value.transient and slurm.submits == 0
    assert record_of() is None  # nothing was sent: given back
    assert trigger.handle(REF)[0].status == "submitted"


def raiser(exc: BaseException) -> Callable[..., None]:
    def fail(*_: Any, **__: Any) -> None:
        raise exc
    return fail


@pytest.mark.parametrize(
    "exc,verdict",
    [
        (SlurmUnavailableError("read timeout", maybe_submitted=True), "held"),
        (SlurmUnavailableError("502 from a proxy", status=502, maybe_submitted=True), "held"),
        (SlurmAuthError("22.05 5005", status=500, maybe_submitted=True), "held"),
        (SlurmUnavailableError("connection refused"), "released"),
        (SlurmAuthError("token refused twice", status=511), "released"),
        (SlurmRejectedError("bad partition", status=500), "released"),
        (RuntimeError("a bug after sending"), "held"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__ + ":" + str(v),
)
def test_each_verdict_keeps_or_gives_back_the_claim(setup, clock, exc, verdict):
    """A maybe keeps the claim for the settle time, then a retry asks Slurm first; a
    certain "no job" gives it back and the retry submits at once."""
    trigger, slurm, _, published = setup
    slurm.fail = raiser(exc)
    permanent = isinstance(exc, SlurmRejectedError)
    if permanent:
        assert trigger.handle(REF)[0].status == "failed"
        assert published()[0]["detail-type"] == "Slurm Job Submission Failed"
    else:
        with pytest.raises(type(exc)):
            trigger.handle(REF)
    if verdict == "held":
        with pytest.raises(ClaimInProgressError):
            trigger.handle(REF)
        clock.offset += SETTLE - 5
        with pytest.raises(ClaimInProgressError):
            trigger.handle(REF)
        clock.offset += 6
        assert trigger.handle(REF)[0].status == "submitted"
        assert slurm.finds == 1  # taken over: Slurm was asked first
    else:
        assert record_of() is None
        assert trigger.handle(REF)[0].status == "submitted"
        assert slurm.finds == 0
    assert len(slurm.jobs) == 1


def test_a_maybe_that_made_a_job_is_adopted_after_the_hold(setup, clock):
    trigger, slurm, _, _ = setup
    slurm.fail = slurm.made_then(SlurmAuthError("22.05 5005: token or socket", status=500, maybe_submitted=True))
    with pytest.raises(SlurmAuthError):
        trigger.handle(REF)
    clock.offset += SETTLE + 1
    assert [(o.status, o.job_id) for o in trigger.handle(REF)] == [("adopted", 100)]
    assert slurm.submits == 1


def test_asking_slurm_fails_the_next_attempt_asks_again(setup, clock):
    trigger, slurm, _, _ = setup
    slurm.fail = raiser(SlurmUnavailableError("read timeout", maybe_submitted=True))
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    clock.offset += SETTLE + 1
    real_find = slurm.find_jobs_by_comment
    slurm.find_jobs_by_comment = raiser(SlurmUnavailableError("GET /jobs: unreachable"))  # type: ignore[assignment]
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)
    slurm.find_jobs_by_comment = real_find  # type: ignore[assignment]
    assert trigger.handle(REF)[0].status == "submitted"  # handed over at once, asked again
    assert slurm.finds == 1 and len(slurm.jobs) == 1


def test_a_takeover_adopts_only_the_job_stamped_with_its_own_key(setup, clock):
    """Slurm's comment search matches substrings: another object's job whose key or
    template comment carries this key is not this object's job."""
    from slurm_trigger import provenance
    from slurm_trigger.provenance import Source

    trigger, slurm, _, _ = setup
    key = idempotency_key("p", REF)
    impostor = Source("b", f"in/{key}.fastq", "p", "v9", idempotency_key=idempotency_key("p", ObjectRef("b", "in/y", version_id="v9")))
    slurm.jobs.append(Job(7, comment=provenance.encode(impostor, f"align {key}")))
    slurm.fail = raiser(SlurmUnavailableError("read timeout", maybe_submitted=True))
    with pytest.raises(SlurmUnavailableError):
        trigger.handle(REF)  # no job made, but the outcome is unknown: held
    clock.offset += SETTLE + 1
    [outcome] = trigger.handle(REF)  # taken over: Slurm asked, the impostor is not adopted
    assert (outcome.status, outcome.job_id) == ("submitted", 101)
    assert slurm.finds == 1


# ------------------------------------------------------------------ backpressure


def test_busy_answers_are_sent_again_after_a_pause_and_never_dropped(setup):
    """slurmctld's "not now" (EAGAIN, job queue full) made no job: the same job goes
    again after the pacer's pause, within the deadline; when it stays busy the claim is
    given back and the failure is transient, so the object comes back."""
    from slurm_trigger.pacing import BUSY_TRIES, Pacer
    from slurm_trigger.slurm.errors import SlurmBusyError

    trigger, slurm, _, published = setup
    trigger.pacers["c"] = pacer = Pacer(4, pause=0.01)
    busy = raiser(SlurmBusyError("Resource temporarily unavailable", status=500))
    answers = iter([busy, busy])
    real_submit = slurm.submit

    def submit(sub: Any) -> SubmitResult:
        slurm.fail = next(answers, None)
        return real_submit(sub)

    slurm.submit = submit  # type: ignore[method-assign]
    [outcome] = trigger.handle(REF)
    assert outcome.status == "submitted" and (slurm.submits, len(slurm.jobs), pacer.busy_answers) == (3, 1, 2)
    assert pacer.window < 4  # slowed down, growing back
    # busy on every try: given back, transient
    answers = iter([busy] * BUSY_TRIES)
    other = ObjectRef("b", "in/y", version_id="v1")
    with pytest.raises(SlurmBusyError) as info:
        trigger.handle(other)
    assert info.value.transient and not info.value.maybe_submitted
    assert record_of(idempotency_key("p", other)) is None and len(slurm.jobs) == 1
    assert trigger.handle(other)[0].status == "submitted" and len(published()) == 2
