"""Decoding S3 notifications, their test event and EventBridge "Object Created"."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurm_trigger import s3events
from slurm_trigger.s3events import EventShapeError, ObjectRef

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def test_versioned_notification_key_is_url_decoded():
    [ref] = s3events.parse(load("s3-put-versioned.json"))
    assert ref == ObjectRef(
        bucket="sequencer-runs",
        key="reads/run 42/sample+1_R1.fastq.gz",
        size=1048576,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        version_id="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
        sequencer="0066A1B2C3D4E5F601",
        event_time="2026-11-25T04:10:02.311Z",
        region="us-east-1",
    )


def test_unversioned_notification_has_no_version():
    [ref] = s3events.parse(load("s3-put-unversioned.json"))
    assert ref.key == "tiles/2026/11/25/T32TLR (v2).tif"
    assert ref.version_id is None and ref.sequencer == "0066A1B2C3D4E5F6A7"
    assert ref.s3_uri == "s3://satellite-tiles/tiles/2026/11/25/T32TLR (v2).tif"


def test_eventbridge_key_is_not_decoded():
    [ref] = s3events.parse(load("eventbridge-object-created.json"))
    assert ref.key == "tiles/2026/11/25/T33 UVP+north.tif"  # '+' stays a plus
    assert ref.version_id == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    assert ref.event_time == "2026-11-25T04:15:31Z" and ref.region == "us-east-1"


def test_test_event_is_ignored():
    assert s3events.parse(load("s3-test-event.json")) == []


def test_sqs_batch_bodies():
    batch = load("sqs-batch.json")["Records"]
    assert len({r["messageId"] for r in batch}) == len(batch)
    refs = [ref for r in batch for ref in s3events.parse_sqs_body(r["body"])]
    assert [r.key for r in refs] == [
        "reads/run 43/a_R1.fastq.gz",
        "reads/run 43/b.fastq.gz",
        "tiles/2026/11/25/T31 \u00e9t\u00e9.tif",
    ]


def test_removed_events_are_skipped():
    event = load("s3-put-versioned.json")
    event["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert s3events.parse(event) == []


def test_null_version_means_unversioned():
    event = load("eventbridge-object-created.json")
    event["detail"]["object"]["version-id"] = "null"
    assert s3events.parse(event)[0].version_id is None


def test_quoted_etag_is_cleaned():
    assert s3events.clean_etag('"abc-2"') == "abc-2"


@pytest.mark.parametrize(
    "body",
    ["not json", "[1, 2]", json.dumps({"hello": 1}), json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
     json.dumps({"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}})],
)
def test_broken_bodies_raise(body):
    with pytest.raises(EventShapeError):
        s3events.parse_sqs_body(body)
