"""Lambda's and EventBridge's side of each route, as AWS documents it, for tests that
drive app.py's handlers with moto queues (moto runs no Lambda poller or async invoke).

* ``SqsMapping``: an SQS event source mapping. It receives a batch and invokes the
  handler. If the handler raises, every message stays and comes back after the visibility
  timeout (shortened to 0 here). If it returns, the mapping deletes every message, except,
  when it has ``ReportBatchItemFailures``, those named in ``batchItemFailures``.
* ``invoke_async``: an asynchronous invoke (S3 notification, EventBridge rule target):
  the first attempt and ``MaximumRetryAttempts`` more (the minutes between them skipped),
  then Lambda's destination record to the on-failure destination.
* ``eventbridge_dead_letter``: what an EventBridge rule target's DLQ receives when
  EventBridge cannot invoke the target: the event itself, with the error as attributes.
"""
from __future__ import annotations

import json
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from slurm_trigger_dev.localrun import LambdaContext, sqs_lambda_event

ACCOUNT = "123456789012"
REGION = "us-east-1"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def destination_record(payload: Any, function: str = "slurm-trigger-dev-on_object_event",
                       error: BaseException | None = None, attempts: int = 3) -> dict[str, Any]:
    """The message Lambda sends to an on-failure destination once retries are exhausted."""
    error = error or RuntimeError("slurmrestd unreachable")
    return {
        "version": "1.0",
        "timestamp": _now(),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn(function) + ":$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "requestId": "",
            "stackTrace": traceback.format_exception(error)[-3:],
        },
    }


def eventbridge_dead_letter(event: dict[str, Any], rule: str, target: str) -> dict[str, Any]:
    """``send_message`` arguments for an event EventBridge could not deliver to ``target``."""
    def attr(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value}

    return {
        "MessageBody": json.dumps(event),
        "MessageAttributes": {
            "RULE_ARN": attr(f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"),
            "TARGET_ARN": attr(function_arn(target)),
            "ERROR_CODE": attr("SDK_CLIENT_ERROR"),
            "ERROR_MESSAGE": attr("Unable to invoke Lambda function: the function is throttled"),
            "EXHAUSTED_RETRY_CONDITION": attr("MaximumEventAgeInSeconds"),
            "RETRY_ATTEMPTS": attr("185"),
        },
    }


def invoke_async(handler: Callable[..., Any], event: dict[str, Any], *, function: str, retries: int,
                 sqs: Any, on_failure_url: str) -> Any:
    """Lambda's asynchronous invoke with ``retries`` retries and an SQS on-failure destination."""
    error: BaseException | None = None
    for _ in range(1 + retries):
        try:
            return handler(event, LambdaContext(function))
        except Exception as exc:  # noqa: BLE001 - Lambda records it and retries
            error = exc
    assert error is not None
    record = destination_record(event, function, error, attempts=1 + retries)
    sqs.send_message(QueueUrl=on_failure_url, MessageBody=json.dumps(record))
    return None


@dataclass
class Poll:
    received: int
    deleted: int
    raised: bool


@dataclass
class SqsMapping:
    """One SQS event source mapping in front of ``handler`` (see the module docstring)."""

    sqs: Any
    url: str
    handler: Callable[..., Any]
    reports_item_failures: bool
    batch_size: int = 10
    function: str = "slurm-trigger-dev-on_queue_message"

    def poll(self) -> Poll | None:
        messages = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=self.batch_size, VisibilityTimeout=60, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return None
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        try:
            answer = self.handler(sqs_lambda_event(messages, arn), LambdaContext(self.function))
        except Exception:  # noqa: BLE001 - a function error: the whole batch stays
            keep = {m["MessageId"] for m in messages}
            raised = True
        else:
            raised = False
            keep = set()
            if self.reports_item_failures and isinstance(answer, dict):
                keep = {f["itemIdentifier"] for f in answer.get("batchItemFailures") or []}
        for m in messages:
            if m["MessageId"] in keep:  # the visibility timeout, elapsed at once
                self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"],
                                                   VisibilityTimeout=0)
            else:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return Poll(len(messages), len(messages) - len(keep), raised)

    def drain(self, max_polls: int = 20) -> list[Poll]:
        """Poll until the queue is empty (what is left after max_polls fails the test)."""
        polls = []
        for _ in range(max_polls):
            poll = self.poll()
            if poll is None:
                break
            polls.append(poll)
        return polls
