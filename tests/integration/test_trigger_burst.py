"""Two SQS batches of 10 objects through the batched path on the REAL local Slurm (the
newest version of each local cluster), with one
failure injected in the middle of the first batch: exactly one job per object, counted in
Slurm by the idempotency key in its comment, and one "Submitted" event per job on the
bus (rule → SQS target). The AWS calls of every delivery are counted (botocore hooks) and
asserted as counts: the batch shares its claims, records, completions and PutEvents.

* ``answer lost``: Slurm makes the 7th job, but its answer never arrives (a read
  timeout): the claim is held; once the hold is over the redelivery asks Slurm and
  adopts the job, and submits nothing.
* ``event refused``: EventBridge refuses the 7th "Submitted" entry on every retry:
  the other nine are published and completed; the redelivery publishes the recorded
  event and neither submits nor asks Slurm.

The first with ``ReportBatchItemFailures`` (only the failed message returns), the second
without (fail closed: the whole first batch returns, and the nine done objects are
duplicates the second time).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from slurm_trigger.idempotency import idempotency_key
from slurm_trigger.slurm.dialects import version_key
from slurm_trigger.slurm.errors import SlurmUnavailableError
from slurm_trigger.trigger import BatchNotDone, build_trigger
from test_trigger import TRUE_PIPELINE, _clients, make_world, notification, obj  # noqa: I001 - same folder
from test_trigger_exactly_once import targets  # noqa: I001 - same folder

pytestmark = pytest.mark.real_slurm

SUBMITTED = "Slurm Job Submitted"
N = 20
BATCH = 10
VICTIM = 6  # the 7th object of the first batch


class CallCounter:
    """AWS calls by operation, counted as botocore makes them."""

    def __init__(self, *clients: Any) -> None:
        self.calls: list[str] = []
        for client in clients:
            client.meta.events.register("before-call.*.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.calls.append(event_name.split(".")[-1])

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


class RefusingEvents:
    """EventBridge refusing one entry (the victim's) on every try while ``down``; a call
    of refused entries only is answered here, and counted as the call it stands for."""

    def __init__(self, inner: Any, victim: str, counter: CallCounter) -> None:
        self.inner, self.victim, self.down, self.counter = inner, victim, True, counter

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        refused = [self.down and self.victim in e["Detail"] for e in Entries]
        if all(refused):
            self.counter.calls.append("PutEvents")
            sent: dict[str, Any] = {}
        else:
            sent = self.inner.put_events(Entries=[e for e, r in zip(Entries, refused) if not r])
        answers = iter(sent.get("Entries") or [])
        entries = [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected"} if r else next(answers) for r in refused]
        return {"FailedEntryCount": sum(refused) + (sent.get("FailedEntryCount") or 0), "Entries": entries}


def sqs_batch(refs: list[Any], first: int) -> dict[str, Any]:
    return {"Records": [
        {"messageId": f"m{first + i}", "receiptHandle": "r", "body": json.dumps(notification(r)), "attributes": {},
         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:input", "awsRegion": "us-east-1"}
        for i, r in enumerate(refs)]}


@pytest.mark.parametrize(
    "failure,report", [("answer lost", True), ("event refused", False)],
    ids=["answer-lost-report-item-failures", "event-refused-fail-closed"],
)
def test_a_burst_with_one_failure_mid_batch(aws, slurm_clusters, tmp_path, failure, report):
    """On the newest API version of every local cluster (the batch is the trigger's;
    the versions' wire is covered elsewhere)."""
    newest: dict[str, Any] = {}
    for target in targets(slurm_clusters):
        if target.name not in newest or version_key(target.version) > version_key(newest[target.name].version):
            newest[target.name] = target
    assert newest, "no local cluster answers"
    for i, target in enumerate(newest.values()):
        burst(target, tmp_path / str(i), failure, report, suffix=f"-{i}")


def burst(target: Any, tmp_path: Any, failure: str, report: bool, suffix: str) -> None:
    world = make_world(target, tmp_path, TRUE_PIPELINE, suffix=suffix)
    # the hold of an unknown outcome (read timeout + settle) is what the redelivery waits out
    settings = replace(world.settings, read_timeout=10, submit_settle_seconds=1,
                       sqs_report_batch_item_failures=report)
    clients = _clients()
    run = uuid.uuid4().hex[:8]
    refs = [obj(f"many/burst-{run}-{i}") for i in range(N)]
    keys = [idempotency_key("trivial", r) for r in refs]
    counter = CallCounter(clients["dynamodb_client"]._client, clients["events_client"])  # noqa: SLF001
    if failure == "event refused":
        clients["events_client"] = RefusingEvents(clients["events_client"], keys[VICTIM], counter)
    trigger = build_trigger(settings, **clients)
    real_submit = trigger.client.submit
    lost: list[int] = []

    def submit(job: Any) -> Any:
        result = real_submit(job)
        if failure == "answer lost" and keys[VICTIM] in (job.comment or "") and not lost:
            lost.append(result.job_id)  # Slurm made it; the answer is lost on the way
            raise SlurmUnavailableError("read timeout (injected)", maybe_submitted=True)
        return result

    trigger.client.submit = submit  # type: ignore[method-assign]
    batches = [sqs_batch(refs[i:i + BATCH], i) for i in range(0, N, BATCH)]

    # first delivery of both batches
    if report:
        answer = trigger.handle_sqs(batches[0])
        assert answer == {"batchItemFailures": [{"itemIdentifier": f"m{VICTIM}"}]}
    else:
        with pytest.raises(BatchNotDone) as info:
            trigger.handle_sqs(batches[0])
        assert info.value.failed == [f"m{VICTIM}"]
    assert trigger.handle_sqs(batches[1]) == {"batchItemFailures": []}
    first = counter.take()

    # the redelivery: the failed message alone, or the whole first batch
    if failure == "event refused":
        clients["events_client"].down = False
    again = sqs_batch([refs[VICTIM]], VICTIM) if report else batches[0]
    limit = time.monotonic() + 120
    while True:  # a held claim answers "in progress" until the hold is over, as SQS would see it
        try:
            if trigger.handle_sqs(again) == {"batchItemFailures": []}:
                break
        except (BatchNotDone, BatchProcessingError):  # every message failed: Powertools raises
            pass
        assert time.monotonic() < limit, "the redelivery never got through"
        counter.take()  # a refused try while the claim is held: not the figure
        time.sleep(1)
    retry = counter.take()

    # results where they are: one job per object in Slurm, one event per job on the bus
    jobs = {key: [j.job_id for j in world.jobs_with(key)] for key in keys}
    assert all(len(found) == 1 for found in jobs.values()), jobs
    if lost:
        assert jobs[keys[VICTIM]] == lost  # adopted, not submitted again
    submitted = [e for e in world.events() if e["detail-type"] == SUBMITTED]
    assert sorted((e["detail"]["eventId"], e["detail"]["jobId"]) for e in submitted) == \
        sorted((key, found[0]) for key, found in jobs.items())

    # AWS calls, counted: 2 batches x (claims, records, completions: one transaction each;
    # one PutEvents), plus the failure's own write, plus the redelivery's.
    tx = "TransactWriteItems"
    if failure == "answer lost":
        assert sorted(first) == sorted([tx] * 6 + ["PutEvents"] * 2 + ["UpdateItem"])  # + the hold
        # the victim alone: claim (refused over the lapsed lease), the takeover (an update
        # that keeps when the key was first claimed), record, publish, complete
        expected_retry = ["PutItem", "UpdateItem", "UpdateItem", "PutEvents", "UpdateItem"]
    else:
        # the refused entry is tried 4 times (EventBus attempts), then its claim expired
        assert sorted(first) == sorted([tx] * 6 + ["PutEvents"] * 5 + ["UpdateItem"])
        # the victim: claim refused (SUBMITTED), its lease taken over, publish, complete
        expected_retry = ["PutItem", "UpdateItem", "PutEvents", "UpdateItem"]
    if not report:
        expected_retry = [tx] + expected_retry  # nine duplicates answered from one cancelled claim transaction
    assert sorted(retry) == sorted(expected_retry)
    per_object = (len(first) + len(retry)) / N
    print(json.dumps({"target": f"{target.name}/{target.version}", "failure": failure, "report": report,
                      "aws_calls": len(first) + len(retry),
                      "per_object": per_object, "jobs": N}))
    assert per_object <= 1.3
