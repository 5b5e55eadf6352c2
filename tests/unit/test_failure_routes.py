"""What each route does with what it could not handle, without a cluster: the SQS
handler's two failure modes, the shapes that land in dead-letter queues, and the
``redrive`` command's bookkeeping (moto SQS; the real-Slurm counts are in
tests/integration/test_routes.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from slurm_trigger import s3events
from slurm_trigger_cli.redrive_commands import Redrive, queue_url
from slurm_trigger_dev.localrun import sqs_lambda_event
from slurm_trigger.s3events import EventShapeError, ObjectRef
from slurm_trigger.settings import Settings
from slurm_trigger.trigger import BatchNotDone, Outcome, Trigger
from lambda_semantics import destination_record  # noqa: I001 - tests/

EVENTS = Path(__file__).resolve().parents[2] / "events"
ARN = "arn:aws:sqs:us-east-1:123456789012:input"


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


class Metrics:
    def add_metric(self, **_: Any) -> None:
        pass


def unmatched_trigger(report: bool) -> Trigger:
    """No pipeline: every readable object is "unmatched", nothing needs AWS or Slurm."""
    return Trigger(pipelines=[], client=None, store=None, bus=None, cluster="c", metrics=Metrics(),
                   report_batch_item_failures=report)


# --------------------------------------------------------------------------- SQS handler


def batch(*bodies: str) -> dict[str, Any]:
    return sqs_lambda_event(
        [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": b} for i, b in enumerate(bodies)], ARN
    )


GOOD = json.dumps(sample("s3-put-versioned.json"))
BROKEN = '{"Records": [{"eventName": "ObjectCreated:Put"}]}'


def test_reporting_route_names_only_the_failed_message():
    answer = unmatched_trigger(report=True).handle_sqs(batch(GOOD, BROKEN, GOOD))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_fail_closed_route_raises_for_a_partial_batch():
    with pytest.raises(BatchNotDone, match="1 of 3 messages failed .*m1.*whole batch") as caught:
        unmatched_trigger(report=False).handle_sqs(batch(GOOD, BROKEN, GOOD))
    assert caught.value.failed == ["m1"]


@pytest.mark.parametrize("report", [True, False])
def test_a_batch_without_failures_returns_normally_on_both(report):
    assert unmatched_trigger(report).handle_sqs(batch(GOOD, GOOD)) == {"batchItemFailures": []}


def test_fail_closed_is_the_default():
    assert Settings.from_env({}).sqs_report_batch_item_failures is False
    assert Settings.from_env({"SQS_REPORT_BATCH_ITEM_FAILURES": "true"}).sqs_report_batch_item_failures is True


# --------------------------------------------------------------------------- dead-letter shapes


def test_destination_record_of_an_eventbridge_event():
    body = json.dumps(destination_record(sample("eventbridge-object-created.json")))
    assert s3events.parse_dead_letter(body) == s3events.parse(sample("eventbridge-object-created.json"))


def test_destination_record_of_a_direct_notification_decodes_the_key():
    [ref] = s3events.parse_dead_letter(json.dumps(destination_record(sample("s3-put-versioned.json"))))
    assert ref.key == "reads/run 42/sample+1_R1.fastq.gz"


def test_eventbridge_dead_letter_and_sqs_dead_letter_are_the_events_themselves():
    for name in ("eventbridge-object-created.json", "s3-put-unversioned.json"):
        assert s3events.parse_dead_letter(json.dumps(sample(name))) == s3events.parse(sample(name))
    assert s3events.parse_dead_letter(json.dumps(sample("s3-test-event.json"))) == []


@pytest.mark.parametrize("body", ["not json", "[1]", json.dumps(destination_record("x")), json.dumps({"a": 1})])
def test_unreadable_dead_letters(body):
    with pytest.raises(EventShapeError):
        s3events.parse_dead_letter(body)


# --------------------------------------------------------------------------- redrive


class ScriptedTrigger:
    """``handle`` raises for the keys in ``down``; else the object is "submitted" once."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.done: set[str] = set()

    def handle(self, ref: ObjectRef) -> list[Outcome]:
        if ref.key in self.down:
            raise ConnectionError("slurmrestd refused")
        status = "duplicate" if ref.key in self.done else "submitted"
        self.done.add(ref.key)
        return [Outcome(status, ref.bucket, ref.key, "p", 1)]


def visible(sqs: Any, url: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
               ["Attributes"]["ApproximateNumberOfMessages"])


def test_redrive_deletes_only_what_was_handled(aws):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    eventbridge = sample("eventbridge-object-created.json")
    for body in (destination_record(eventbridge), eventbridge, sample("s3-put-versioned.json"), "garbage"):
        sqs.send_message(QueueUrl=url, MessageBody=body if isinstance(body, str) else json.dumps(body))
    trigger = ScriptedTrigger()
    trigger.down = {"reads/run 42/sample+1_R1.fastq.gz"}

    first = Redrive(sqs, trigger)
    first.drain(url)
    summary = first.summary()
    assert (summary["messages"], summary["deleted"], summary["kept"]) == (4, 2, 2)
    assert (summary["submitted"], summary["duplicates"], summary["transient"]) == (1, 1, 1)
    assert sorted(k["reason"].split(":")[0] for k in summary["kept_messages"]) == ["unreadable", "will be retried"]
    assert visible(sqs, url) == 2  # kept ones are visible again at once

    trigger.down = set()
    second = Redrive(sqs, trigger)
    second.drain(url)
    assert (second.summary()["deleted"], second.summary()["submitted"], second.summary()["kept"]) == (1, 1, 1)
    assert second.kept[0]["reason"].startswith("unreadable")


def test_queue_given_by_name_or_arn(aws):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="slurm-trigger-dev-async-dlq")["QueueUrl"]
    assert queue_url(sqs, url) == url
    assert queue_url(sqs, "slurm-trigger-dev-async-dlq") == url
    assert queue_url(sqs, "arn:aws:sqs:us-east-1:123456789012:slurm-trigger-dev-async-dlq") == url
