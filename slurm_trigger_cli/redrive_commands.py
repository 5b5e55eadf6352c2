"""``redrive``: resubmit what landed in a dead-letter queue, through the exactly-once path.

Every route parks what it could not handle in an SQS queue, each in its own shape
(``s3events.parse_dead_letter`` reads them all): Lambda's on-failure destination records
(s3 and eventbridge routes), the EventBridge rule target's dead letters, and the sqs
route's own dead-letter queue. Each object goes through ``Trigger.handle``, the same
claims as the Lambda handlers, so an object that already has its job is a duplicate and
running the command twice makes no second job. A message is deleted only after every
object in it was handled (a job, a duplicate, no matching pipeline, or a permanent
failure reported like the handlers report it); one that hit a transient error or cannot
be read stays in the queue, visible again at once, and the command exits 1.

SQS has its own redrive (``StartMessageMoveTask``) back to a source queue; it does not
fit here: the async routes have no source queue, and a Lambda destination record is
not the event its function takes.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import boto3

from slurm_trigger_cli import emit
from slurm_trigger_cli.trigger_commands import SUMMARY, _settings, tally
from slurm_trigger.s3events import EventShapeError, parse_dead_letter
from slurm_trigger.trigger import Trigger, build_trigger


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    help_text = (
        "Resubmit the objects in dead-letter queues (Lambda on-failure destinations, EventBridge "
        "rule DLQs, the input queue's DLQ) exactly once; delete each message once its objects "
        "were handled; print a summary (exit 1 if any message stays or any object failed)."
    )
    p = subparsers.add_parser("redrive", parents=[parent], help=help_text, description=help_text)
    p.set_defaults(handler=cmd_redrive)
    p.add_argument("--queue", action="append", required=True, metavar="URL|NAME|ARN",
                   help="a dead-letter queue (repeatable), e.g. the infra stack's AsyncDeadLetterQueueUrl")
    p.add_argument("--pipelines", metavar="PATH", help="pipeline folder or file (default: env PIPELINES_PATH)")
    p.add_argument("--visibility-timeout", type=int, default=300, metavar="SECONDS",
                   help="how long a message being handled stays hidden from other readers (default: 300)")


def queue_url(sqs: Any, queue: str) -> str:
    """A queue URL from a URL, a name, or an ARN (arn:aws:sqs:region:account:name)."""
    if queue.startswith(("https://", "http://")):
        return queue
    if queue.startswith("arn:"):
        *_, account, name = queue.split(":")
        return sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return sqs.get_queue_url(QueueName=queue)["QueueUrl"]


@dataclasses.dataclass
class Redrive:
    """One run over one or more queues; ``summary()`` is what the command prints."""

    sqs: Any
    trigger: Trigger
    visibility_timeout: int = 300
    messages: int = 0
    deleted: int = 0
    objects: int = 0
    transient: int = 0  # objects that hit a transient error: their message stays
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SUMMARY, 0))
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    kept: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def drain(self, url: str) -> None:
        """Every message visible in ``url``; the ones kept are made visible again at the end."""
        seen: set[str] = set()
        keep: dict[str, str] = {}  # message id -> latest receipt handle
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                VisibilityTimeout=self.visibility_timeout, MessageAttributeNames=["All"],
            )
            batch = answer.get("Messages") or []
            if not batch:
                break
            for message in batch:
                if message["MessageId"] in seen:  # a kept one, visible again: handled already
                    keep[message["MessageId"]] = message["ReceiptHandle"]
                    continue
                seen.add(message["MessageId"])
                reason = self._handle(message)
                if reason is None:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                    self.deleted += 1
                else:
                    keep[message["MessageId"]] = message["ReceiptHandle"]
                    self.kept.append({"queue": url, "messageId": message["MessageId"], "reason": reason})
        for handle in keep.values():  # back at once: the next run (or a look in the console) sees them
            self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)

    def _handle(self, message: dict[str, Any]) -> str | None:
        """None when every object of the message was handled, else why it stays."""
        self.messages += 1
        try:
            refs = parse_dead_letter(message["Body"])
        except EventShapeError as exc:
            return f"unreadable: {exc}"
        first: Exception | None = None
        for ref in refs:
            self.objects += 1
            try:
                tally(self.trigger.handle(ref), self.counts, self.failures)
            except Exception as exc:  # noqa: BLE001 - transient: the message stays, the rest go on
                first = first or exc
                self.transient += 1
        return None if first is None else f"will be retried: {type(first).__name__}: {first}"

    def summary(self) -> dict[str, Any]:
        return {"messages": self.messages, "deleted": self.deleted, "kept": len(self.kept),
                "objects": self.objects, **self.counts, "transient": self.transient, "failures": self.failures, "kept_messages": self.kept}


def cmd_redrive(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sqs = boto3.client("sqs")
    s3 = boto3.client("s3")
    trigger = build_trigger(
        settings, dynamodb_client=boto3.client("dynamodb"), events_client=boto3.client("events"), s3_client=s3
    )
    run = Redrive(sqs, trigger, visibility_timeout=args.visibility_timeout)
    for queue in args.queue:
        run.drain(queue_url(sqs, queue))
    summary = run.summary()
    emit(summary, args.format)
    for kept in run.kept:
        print(f"slurm-trigger: message {kept['messageId']} stays in {kept['queue']}: {kept['reason']}", file=sys.stderr)
    return 1 if run.kept or run.counts["failed"] else 0
