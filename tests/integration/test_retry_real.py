"""Retry policies against the REAL local Slurm, with moto for AWS: the trigger makes
the first attempt, the tracker the next ones. Jobs are counted in Slurm (by the key
in their comment, accounting included where slurmdbd runs), events where a consumer
reads them (an EventBridge rule with an SQS target).

Both run on every version served: a run of three attempts takes a few seconds (three
jobs that exit at once), and ``begin_time`` is written differently by each version.
"""
from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from atomic_dynamodb import AtomicDynamoDB  # sibling helper module

from slurm_trigger import provenance
from slurm_trigger.eventbus import EventBus
from slurm_trigger.idempotency import create_table as create_claims
from slurm_trigger.jobstore import DynamoDBJobStore, create_table as create_jobs
from slurm_trigger.retry import EXHAUSTED, build_retrier
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.tracker import DETAIL_TYPE, Tracker
from slurm_trigger.trigger import SUBMITTED, build_trigger

pytestmark = pytest.mark.real_slurm

CLUSTER = "retry-test"
SOURCE = "slurm-trigger"
LIMIT = 300.0  # seconds for the whole run of attempts: CI machines are slow
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

PIPELINE = """
name: {name}
match: {{prefix: "{name}/"}}
retry: {{attempts: 3, exit_codes: [3]}}
job:
  name: {name}
  script: "#!/bin/bash\\nexit {code}\\n"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {{PATH: /usr/bin:/bin}}
  time_limit: 1
"""


class OnlyOurs:
    """The real client with its listings narrowed to this test's jobs (by the tag in
    their comment): the clusters are shared with other tests' tracked jobs."""

    def __init__(self, client: Any, tag: str) -> None:
        self.client, self.tag = client, tag

    def list_jobs(self, update_time: int | None = None) -> Any:
        page = self.client.list_jobs(update_time)
        return replace(page, jobs=tuple(j for j in page.jobs if j.comment and self.tag in j.comment))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@dataclass
class World:
    target: Any
    settings: Settings
    client: Any
    tag: str
    sqs: Any
    queue: str
    seen: list[dict[str, Any]]

    def tracker(self, table: str) -> Tracker:
        """A tracker container: its own Retrier and trigger, the jobs table ``table``."""
        db = AtomicDynamoDB(boto3.client("dynamodb"))
        bus = EventBus(boto3.client("events"), "default", SOURCE)
        retry = build_retrier(self.settings, self.client, dynamodb_client=db, events_client=boto3.client("events"))
        return Tracker(OnlyOurs(self.client, self.tag), DynamoDBJobStore(db, table), bus, CLUSTER, retry=retry)

    def events(self) -> list[dict[str, Any]]:
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return self.seen
            for m in got:
                self.seen.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])

    def jobs(self, key: str) -> list[Any]:
        """The jobs in Slurm stamped with ``key`` or one of its attempts' keys."""
        stamped = [(j, provenance.decode(j.comment)) for j in self.client.find_jobs_by_comment(key)]
        return [j for j, s in stamped if s and (s.idempotency_key == key or s.original_key == key)]


@pytest.fixture
def world(aws, slurm_target, tmp_path) -> World:
    target = slurm_target
    tag = f"rt{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "pipelines"
    folder.mkdir()
    for what, code in (("three", 3), ("zero", 0), ("four", 4)):
        text = PIPELINE.format(name=f"{tag}-{what}", code=code).replace("WORKDIR", target.workdir)
        (folder / f"{what}.yaml").write_text(textwrap.dedent(text))
    boto3.client("secretsmanager").create_secret(Name=f"slurm_token_{CLUSTER}", SecretString=target.token())
    ddb = boto3.client("dynamodb")
    create_claims(ddb, "claims")
    for table in ("jobs", "jobs-amnesiac"):
        create_jobs(ddb, table)
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(Name="all", EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="all", Targets=[{"Id": "q", "Arn": arn}])
    settings = Settings(
        cluster_name=CLUSTER, slurm_url=target.url, slurm_user=target.user, api_version=target.version,
        slurm_scheme="http", token=target.token(), pipelines_path=str(folder), idempotency_table="claims",
        event_source=SOURCE,
    )
    return World(target, settings, build_client(settings), tag, sqs, queue, [])


def _submit(world: World, what: str) -> str:
    trigger = build_trigger(world.settings, dynamodb_client=AtomicDynamoDB(boto3.client("dynamodb")),
                            events_client=boto3.client("events"), secrets_client=boto3.client("secretsmanager"))
    ref = ObjectRef("bkt", f"{world.tag}-{what}/sample.txt", size=3, etag="e1", version_id=uuid.uuid4().hex, sequencer="00A1")
    (outcome,) = trigger.handle(ref)
    assert outcome.status == "submitted", outcome
    return outcome.idempotency_key


def _of(events: list[dict[str, Any]], detail_type: str, pipeline: str) -> list[dict[str, Any]]:
    return [e for e in events if e["detail-type"] == detail_type and e["detail"]["source"]["pipeline"] == pipeline]


def test_failed_job_runs_exactly_as_often_as_its_policy_says(world: World) -> None:
    """exit 3 under attempts 3, exit_codes [3]: three jobs in Slurm, attempts 1..3 in
    the events, one exhaustion; exit 0 and an unlisted exit 4 run once. Two tracker
    containers share the jobs table and alternate; a third with an empty table (a
    tracker that lost its state) goes over the same jobs at the end and makes nothing."""
    keys = {what: _submit(world, what) for what in ("three", "zero", "four")}
    three = f"{world.tag}-three"
    trackers = [world.tracker("jobs"), world.tracker("jobs")]
    deadline = time.monotonic() + LIMIT
    polls = 0
    while True:
        trackers[polls % 2].poll()
        polls += 1
        events = world.events()
        done = _of(events, EXHAUSTED, three) and all(
            any(e["detail"]["state"] in ("COMPLETED", "FAILED") for e in _of(events, DETAIL_TYPE, f"{world.tag}-{w}"))
            for w in ("zero", "four")
        )
        if done:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no exhaustion after {LIMIT}s and {polls} polls; jobs {world.jobs(keys['three'])}")
        time.sleep(1)
    for tracker in trackers:  # a repeated poll changes nothing
        tracker.poll(sweep=True)
    before = len(_of(world.events(), EXHAUSTED, three))
    amnesiac = world.tracker("jobs-amnesiac")
    amnesiac.poll(sweep=True)
    amnesiac.poll(sweep=True)
    events = world.events()

    # in Slurm: three jobs, attempts 1, 2, 3 of the one key
    jobs = world.jobs(keys["three"])
    stamps = sorted((provenance.decode(j.comment).attempt, j.exit_code, j.state) for j in jobs)
    assert stamps == [(1, 3, "FAILED"), (2, 3, "FAILED"), (3, 3, "FAILED")], jobs
    assert len(world.jobs(keys["zero"])) == 1 and len(world.jobs(keys["four"])) == 1

    # events: one "Submitted" per attempt, one final state per attempt, one exhaustion
    submitted = _of(events, SUBMITTED, three)
    assert sorted(e["detail"]["source"]["attempt"] for e in submitted) == [1, 2, 3], submitted
    assert {e["detail"]["source"]["originalKey"] for e in submitted} == {keys["three"]}
    assert all(e["detail"]["source"]["maxAttempts"] == 3 for e in submitted)
    finals = [e["detail"] for e in _of(events, DETAIL_TYPE, three) if e["detail"]["state"] == "FAILED"]
    assert Counter(d["source"]["attempt"] for d in {d["eventId"]: d for d in finals}.values()) == {1: 1, 2: 1, 3: 1}
    assert {d["source"]["originalKey"] for d in finals} == {keys["three"]}
    schema = json.loads((SCHEMAS / "slurm-job-state-change.schema.json").read_text())
    for event in _of(events, DETAIL_TYPE, three):
        jsonschema.validate(event, schema)
    exhausted = _of(events, EXHAUSTED, three)
    for event in exhausted:
        jsonschema.validate(event, json.loads((SCHEMAS / "slurm-job-retries-exhausted.schema.json").read_text()))
    for event in submitted:
        jsonschema.validate(event, json.loads((SCHEMAS / "slurm-job-submitted.schema.json").read_text()))
    assert before == 1, "the trackers sharing a table report the exhaustion once"
    assert len({e["detail"]["eventId"] for e in exhausted}) == 1, "the amnesiac's repeat has the same eventId"
    assert exhausted[0]["detail"]["exitCode"] == 3 and exhausted[0]["detail"]["source"]["attempt"] == 3

    # exit 0 and an unlisted exit code: one attempt, no retry, no exhaustion
    for what, state in (("zero", "COMPLETED"), ("four", "FAILED")):
        assert [e["detail"]["source"]["attempt"] for e in _of(events, SUBMITTED, f"{world.tag}-{what}")] == [1]
        assert {e["detail"]["state"] for e in _of(events, DETAIL_TYPE, f"{world.tag}-{what}")} >= {state}
        assert not _of(events, EXHAUSTED, f"{world.tag}-{what}")


def test_begin_time_holds_a_job(slurm_target: Any) -> None:
    """A delayed attempt carries ``begin_time``: every version takes it and holds the job."""
    client = build_client(Settings(cluster_name="begin", slurm_url=slurm_target.url, slurm_user=slurm_target.user,
                                   api_version=slurm_target.version, slurm_scheme="http", token=slurm_target.token()))
    job_id = client.submit(JobSubmission(
        script="#!/bin/bash\ntrue\n", name="retry-begin-time", partition="debug", working_directory=slurm_target.workdir,
        standard_output="/dev/null", environment={"PATH": "/usr/bin:/bin"}, time_limit=1,
        begin_time=int(time.time()) + 3600,
    )).job_id
    try:
        job = client.get_job(job_id)
        assert (job.state, job.reason) == ("PENDING", "BeginTime"), job
    finally:
        client.cancel_job(job_id)
