"""The "Slurm Job State Change" contract: detail shape, JSON Schema, example rules."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import boto3
import jsonschema
import pytest

from slurm_trigger.jobstore import LOST, TrackedJob
from slurm_trigger.tracker import LOST_REASON, event_id, iso, resources, state_change_detail

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "schemas" / "slurm-job-state-change.schema.json").read_text())
RULES = REPO / "examples" / "rules"

OURS = TrackedJob(
    cluster="pc1", job_id=42, state="FAILED", previous_state="RUNNING", name="align", user="ec2-user",
    partition="queue1", pipeline="paired-reads", bucket="my-input-bucket", key="runs/s1.fastq", version_id="v9",
    submitted_at="2026-11-25T04:00:00Z", started_at="2026-11-25T04:00:02Z", ended_at="2026-11-25T04:01:00Z",
    exit_code=3, reason="NonZeroExitCode",
)
ARRAY_TASK = TrackedJob(
    cluster="pc1", job_id=43, state="RUNNING", previous_state="PENDING", name="align", pipeline="paired-reads",
    bucket="my-input-bucket", key="runs/run1", step="align", array_job_id=40, array_task_id=0,
    submitted_at="2026-11-25T04:00:00Z", started_at="2026-11-25T04:00:02Z",
)
FOREIGN = TrackedJob(cluster="pc1", job_id=7, state="PENDING", name="x", reason="Resources")


def envelope(job: TrackedJob, flags: tuple[str, ...] = (), signal: int | None = None) -> dict:
    detail = state_change_detail(job, flags, signal)
    detail["eventId"] = event_id(job.cluster, job.job_id, job.state, job.submitted_at)
    return {
        "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "account": "123456789012",
        "region": "us-east-1", "time": "2026-11-25T04:01:05Z", "source": "slurm-trigger",
        "detail-type": "Slurm Job State Change", "resources": list(resources(job)), "detail": detail,
    }


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize(
    "job",
    [OURS, ARRAY_TASK, FOREIGN, TrackedJob("pc1", 42, LOST, previous_state="RUNNING", reason=LOST_REASON, bucket="b", key="k")],
    ids=["ours", "array-task-of-a-step", "foreign", "lost"],
)
def test_events_match_the_schema(job: TrackedJob) -> None:
    jsonschema.validate(envelope(job, ("COMPLETING",), 9), SCHEMA, cls=jsonschema.Draft202012Validator)


def test_schema_rejects_what_consumers_must_not_see() -> None:
    bad = envelope(OURS)
    bad["detail"]["submittedAt"] = "2026-11-25 04:00:00+00:00"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA, cls=jsonschema.Draft202012Validator)
    bad = envelope(OURS)
    del bad["detail"]["arrayTaskId"]  # absent is null, never missing
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA, cls=jsonschema.Draft202012Validator)
    bad = envelope(OURS)
    del bad["detail"]["eventId"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_event_id_is_stable_and_distinct_per_transition() -> None:
    a = event_id("pc1", 42, "FAILED", "2026-11-25T04:00:00Z")
    assert a == event_id("pc1", 42, "FAILED", "2026-11-25T04:00:00Z")
    assert len({a, event_id("pc1", 42, "COMPLETED", "2026-11-25T04:00:00Z"),
                event_id("pc2", 42, "FAILED", "2026-11-25T04:00:00Z"),
                event_id("pc1", 42, "FAILED", "2026-11-26T04:00:00Z")}) == 4


def test_event_id_names_the_state_entered_not_where_the_observer_saw_it_come_from() -> None:
    """A poll that saw the job PENDING (or never saw it) and the head node's hook that
    saw it RUNNING give its completion one id, so a consumer drops the repeat."""
    pushed = TrackedJob(cluster="pc1", job_id=42, state="COMPLETED", previous_state="RUNNING",
                        submitted_at="2026-11-25T04:00:00Z")
    polled = TrackedJob(cluster="pc1", job_id=42, state="COMPLETED", previous_state=None,
                        submitted_at="2026-11-25T04:00:00Z")
    assert envelope(pushed)["detail"]["eventId"] == envelope(polled)["detail"]["eventId"]


def test_times_are_utc_with_z() -> None:
    from datetime import timedelta

    moment = datetime(2026, 11, 25, 6, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert iso(moment) == "2026-11-25T04:00:00Z"
    assert iso(None) is None


@pytest.mark.parametrize(
    "rule, job, matches",
    [
        ("all-state-changes.json", FOREIGN, True),
        ("failed-jobs-of-a-pipeline.json", OURS, True),
        ("failed-jobs-of-a-pipeline.json", FOREIGN, False),
        ("failed-jobs-of-a-pipeline.json", TrackedJob("pc1", 1, "COMPLETED", bucket="b", key="k", pipeline="paired-reads"), False),
        ("finished-jobs-under-a-prefix.json", OURS, True),
        ("finished-jobs-under-a-prefix.json", TrackedJob("pc1", 1, "COMPLETED", bucket="my-input-bucket", key="other/x"), False),
        ("nonzero-exit-codes.json", OURS, True),
        ("nonzero-exit-codes.json", FOREIGN, False),
        ("submission-failures.json", OURS, False),
    ],
)
def test_example_rules(aws, rule: str, job: TrackedJob, matches: bool) -> None:
    """Each pattern as a rule with an SQS target (moto has no TestEventPattern)."""
    events = boto3.client("events", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="matched")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="example", EventPattern=(RULES / rule).read_text())
    events.put_targets(Rule="example", Targets=[{"Id": "q", "Arn": arn}])
    event = envelope(job)
    events.put_events(Entries=[{
        "Source": event["source"], "DetailType": event["detail-type"],
        "Resources": event["resources"], "Detail": json.dumps(event["detail"]),
    }])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(got) == (1 if matches else 0)


def test_cloudformation_snippet_lints_and_uses_the_same_pattern() -> None:
    snippet = RULES / "failed-jobs-to-sns.cfn.json"
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    lint = subprocess.run([str(cfn_lint), str(snippet)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    pattern = json.loads(snippet.read_text())["Resources"]["FailedJobsRule"]["Properties"]["EventPattern"]
    example = json.loads((RULES / "failed-jobs-of-a-pipeline.json").read_text())
    assert pattern["detail"]["state"] == example["detail"]["state"]
    assert pattern["detail-type"] == example["detail-type"]


class _Slurm:
    """Just enough of a client for the trigger: submit answers job 77 or refuses."""

    version = "v0.0.42"

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse

    def submit(self, sub):  # noqa: ANN001, ANN201
        from slurm_trigger.slurm.errors import SlurmRejectedError
        from slurm_trigger.slurm.models import SubmitResult

        if self.refuse:
            raise SlurmRejectedError("invalid partition specified", status=400, errors=[{"description": "Invalid partition name specified"}])
        return SubmitResult(job_id=77)

    def find_jobs_by_comment(self, substring: str, **_: object) -> list:
        return []


@pytest.mark.parametrize("refuse, schema", [(False, "slurm-job-submitted"), (True, "slurm-job-submission-failed")])
def test_the_triggers_events_match_their_schemas(aws, refuse: bool, schema: str) -> None:
    """The trigger's own events (its real code, a stub Slurm) against the schemas."""
    from slurm_trigger.eventbus import EventBus
    from slurm_trigger.idempotency import DynamoDBIdempotencyStore, create_table
    from slurm_trigger.pipelines import load
    from slurm_trigger.s3events import ObjectRef
    from slurm_trigger.trigger import Trigger

    class Keep:
        def __init__(self) -> None:
            self.entries: list = []

        def put_events(self, Entries):  # noqa: ANN001, ANN201, N803
            self.entries.extend(Entries)
            return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"} for _ in Entries]}

    db = boto3.client("dynamodb", region_name="us-east-1")
    create_table(db, "idem")
    events = Keep()
    trigger = Trigger(
        pipelines=load(REPO / "pipelines"), client=_Slurm(refuse), store=DynamoDBIdempotencyStore(db, "idem"),
        bus=EventBus(events, "default", "slurm-trigger"), cluster="pc1",
    )
    trigger.handle(ObjectRef("runs-bucket", "tiles/s1.tif", size=10, etag="e1", version_id="v1"))
    assert len(events.entries) == 1
    entry = events.entries[0]
    event = {"source": entry["Source"], "detail-type": entry["DetailType"], "resources": entry.get("Resources", []),
             "detail": json.loads(entry["Detail"])}
    contract = json.loads((REPO / "schemas" / f"{schema}.schema.json").read_text())
    jsonschema.validate(event, contract, cls=jsonschema.Draft202012Validator)
