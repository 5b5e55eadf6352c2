"""EventBus: batching by count and size, refused entries retried, what fails reported."""
from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from slurm_trigger.eventbus import MAX_BATCH_BYTES, Event, EventBus, EventBusError, entry_size

REGION = "us-east-1"


def _bus_to_queue(bus_name: str = "default", source: str = "slurm-trigger") -> tuple[Any, Any, str]:
    """An EventBridge rule for ``source`` whose target is an SQS queue."""
    events = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    if bus_name != "default":
        events.create_event_bus(Name=bus_name)
    url = sqs.create_queue(QueueName="events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all", EventBusName=bus_name, EventPattern=json.dumps({"source": [source]}))
    events.put_targets(Rule="all", EventBusName=bus_name, Targets=[{"Id": "q", "Arn": arn}])
    return events, sqs, url


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


class Recorder:
    """Wraps an events client: records every call's entry count and size; refuses the
    entries whose eventId is in ``refuse`` for the first ``times`` times they are seen."""

    def __init__(self, inner: Any = None, refuse: dict[str, int] | None = None) -> None:
        self.inner = inner
        self.refuse = dict(refuse or {})
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        results, passed = [], []
        for entry in Entries:
            eid = json.loads(entry["Detail"]).get("eventId")
            if self.refuse.get(eid, 0) > 0:
                self.refuse[eid] -= 1
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
            else:
                results.append(None)
                passed.append(entry)
        real = self.inner.put_events(Entries=passed)["Entries"] if (self.inner and passed) else []
        it = iter(real)
        entries = [r if r is not None else (next(it) if self.inner else {"EventId": "x"}) for r in results]
        return {"FailedEntryCount": sum(1 for r in results if r is not None), "Entries": entries}


def _events(n: int, size: int = 10) -> list[Event]:
    return [Event("Slurm Job State Change", {"n": i, "pad": "x" * size}, (f"slurm:c:job/{i}",), f"id-{i}") for i in range(n)]


def test_events_reach_a_rule_target_with_event_id(aws) -> None:
    events, sqs, url = _bus_to_queue()
    bus = EventBus(events, "default", "slurm-trigger")
    assert bus.put(_events(23)) == 23
    got = _drain(sqs, url)
    assert sorted(e["detail"]["n"] for e in got) == list(range(23))
    first = next(e for e in got if e["detail"]["n"] == 0)
    assert first["detail-type"] == "Slurm Job State Change"
    assert first["source"] == "slurm-trigger"
    assert first["resources"] == ["slurm:c:job/0"]
    assert first["detail"]["eventId"] == "id-0"
    assert bus.calls == 3


def test_custom_bus(aws) -> None:
    events, sqs, url = _bus_to_queue("jobs")
    EventBus(events, "jobs", "slurm-trigger").put(_events(2))
    assert len(_drain(sqs, url)) == 2


def test_batches_of_ten_and_under_256kb() -> None:
    rec = Recorder()
    bus = EventBus(rec, "default", "s", sleep=lambda _: None)
    bus.put(_events(25))
    assert [len(c) for c in rec.calls] == [10, 10, 5]

    rec = Recorder()
    bus = EventBus(rec, "default", "s", sleep=lambda _: None)
    bus.put(_events(10, size=60_000))  # four fit in 256 KB, the fifth does not
    assert [len(c) for c in rec.calls] == [4, 4, 2]
    for call in rec.calls:
        assert sum(entry_size(e) for e in call) <= MAX_BATCH_BYTES


def test_entry_size_counts_utf8_bytes_of_the_charged_fields() -> None:
    entry = {"Source": "ab", "DetailType": "é", "Detail": "{}", "Resources": ["r1", "r22"], "EventBusName": "ignored"}
    assert entry_size(entry) == 2 + 2 + 2 + 2 + 3


def test_refused_entries_are_retried_and_none_lost(aws) -> None:
    events, sqs, url = _bus_to_queue()
    rec = Recorder(events, refuse={"id-1": 1, "id-7": 2})
    waits: list[float] = []
    bus = EventBus(rec, "default", "slurm-trigger", sleep=waits.append)
    assert bus.put(_events(12)) == 12
    assert [len(c) for c in rec.calls] == [10, 2, 2, 1]
    assert len(waits) == 2
    got = _drain(sqs, url)
    assert sorted(e["detail"]["n"] for e in got) == list(range(12))


def test_still_refused_raises_with_the_failed_events() -> None:
    rec = Recorder(refuse={"id-2": 99})
    bus = EventBus(rec, "default", "s", attempts=3, sleep=lambda _: None)
    with pytest.raises(EventBusError) as err:
        bus.put(_events(5))
    assert err.value.failed_event_ids == ["id-2"]
    assert err.value.accepted == 4
    assert err.value.failed[0].error_code == "InternalFailure"
    assert len(rec.calls) == 3


def test_an_event_too_large_for_any_call_is_reported_not_sent() -> None:
    rec = Recorder()
    bus = EventBus(rec, "default", "s")
    with pytest.raises(EventBusError) as err:
        bus.put(_events(1, size=MAX_BATCH_BYTES) + [Event("t", {"ok": 1}, event_id="small")])
    assert err.value.failed_event_ids == ["id-0"]
    assert err.value.failed[0].error_code == "EntryTooLarge"
    assert len(rec.calls) == 1 and len(rec.calls[0]) == 1
