"""EventBridge events made readable in tests: a rule on the default bus sends every
event of ``source`` to an SQS queue (moto), as the brief asks events to be asserted."""
from __future__ import annotations

import json
from typing import Any, Callable

import boto3


def events_to_queue(name: str = "events", source: str = "slurm-trigger") -> Callable[[], list[dict[str, Any]]]:
    """Route ``source``'s events to a new queue; return a function that reads them."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"{name}-all", EventPattern=json.dumps({"source": [source]}))
    events.put_targets(Rule=f"{name}-all", Targets=[{"Id": "q", "Arn": arn}])

    def published() -> list[dict[str, Any]]:
        """Up to 10 events not read before (read ones are deleted)."""
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        for m in got:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return [json.loads(m["Body"]) for m in got]

    return published
