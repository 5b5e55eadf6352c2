"""S3 "object created" notifications, however they arrive, as ``ObjectRef``s.

Three shapes reach the trigger: S3's own notification (direct, or as the body of an
SQS message), its ``s3:TestEvent``, and EventBridge's "Object Created"; dead-letter
queues add Lambda's destination record around them. They differ in
field names and in one trap: notification keys are URL-encoded (``+`` for a space),
EventBridge keys are not. Everything after this module sees decoded keys only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event, S3EventBridgeNotificationEvent

from slurm_trigger.observability import logger


class EventShapeError(ValueError):
    """The input is not a notification this module knows; it never will be."""


@dataclass(frozen=True)
class ObjectRef:
    """One version of one S3 object, as an event (or a listing) describes it."""

    bucket: str
    key: str  # decoded
    size: int | None = None
    etag: str | None = None  # without the quotes S3 puts around it in some APIs
    version_id: str | None = None  # None for unversioned buckets
    sequencer: str | None = None
    event_time: str | None = None
    region: str | None = None

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def clean_etag(etag: str | None) -> str | None:
    """ListObjects and HeadObject quote ETags, notifications do not."""
    return etag.strip('"') if etag else None


def _version(value: str | None) -> str | None:
    # Unversioned buckets have no versionId; suspended ones report the literal "null".
    return value if value and value != "null" else None


def from_notification(event: Mapping[str, Any]) -> list[ObjectRef]:
    """Records of an S3 notification (``{"Records": [...]}``); ``s3:TestEvent`` → [].

    Read through Powertools' ``S3Event``; optional fields with ``.get``, as its properties
    raise KeyError where S3 leaves a field out (``sequencer``, ``versionId``)."""
    if event.get("Event") == "s3:TestEvent":
        logger.info("s3:TestEvent ignored", extra={"bucket": event.get("Bucket")})
        return []
    if not isinstance(event.get("Records"), list):
        raise EventShapeError("not an S3 notification: no 'Records' list")
    refs = []
    try:
        for record in S3Event(dict(event)).records:
            name, bucket, obj = record.event_name, record.s3.bucket.name, record.s3.get_object
            key = unquote_plus(obj.key)  # S3Object.key is the URL-encoded key as sent
            if not name.startswith("ObjectCreated:"):
                logger.info("S3 event ignored", extra={"event_name": name, "bucket": bucket})
                continue
            refs.append(
                ObjectRef(
                    bucket=bucket,
                    key=key,
                    size=obj.get("size"),
                    etag=clean_etag(obj.etag),
                    version_id=_version(obj.version_id),
                    sequencer=obj.get("sequencer"),
                    event_time=record.get("eventTime"),
                    region=record.get("awsRegion"),
                )
            )
    except (KeyError, TypeError) as exc:
        raise EventShapeError(f"S3 record without {exc}") from None
    return refs


def from_eventbridge(event: Mapping[str, Any]) -> list[ObjectRef]:
    """An EventBridge "Object Created" event from ``aws.s3`` (key NOT URL-encoded).

    Read through Powertools' ``S3EventBridgeNotificationEvent``, except the key: its
    ``.key`` applies ``unquote_plus``, which would turn a real ``+`` of an EventBridge
    key (sent as is, events/eventbridge-object-created.json) into a space."""
    eb = S3EventBridgeNotificationEvent(dict(event))
    if eb.get("source") != "aws.s3" or eb.get("detail-type") != "Object Created":
        raise EventShapeError(
            f"not an S3 'Object Created' event: {event.get('source')!r} / {event.get('detail-type')!r}"
        )
    try:
        obj = eb.detail.object
        bucket = eb.detail.bucket.name
        key = obj["key"]
    except (KeyError, TypeError) as exc:
        raise EventShapeError(f"'Object Created' event without {exc}") from None
    return [
        ObjectRef(
            bucket=bucket,
            key=key,
            size=obj.size,
            etag=clean_etag(obj.etag),
            version_id=_version(obj.get("version-id")),
            sequencer=obj.get("sequencer"),
            event_time=eb.get("time"),
            region=eb.get("region"),
        )
    ]


def parse(event: Mapping[str, Any]) -> list[ObjectRef]:
    """Any of the shapes above, told apart by their fields."""
    if "detail-type" in event:
        return from_eventbridge(event)
    return from_notification(event)


def _json_object(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise EventShapeError(f"SQS body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventShapeError("SQS body is not a JSON object")
    return data


def parse_sqs_body(body: str) -> list[ObjectRef]:
    """The body of one SQS message: an S3 notification or an EventBridge event as JSON."""
    return parse(_json_object(body))


def parse_dead_letter(body: str) -> list[ObjectRef]:
    """A message of any queue that keeps what the trigger could not handle:

    * Lambda's on-failure destination record (s3 and eventbridge routes): the original
      event is its ``requestPayload``, next to ``requestContext``/``responsePayload``;
    * an EventBridge rule target's dead letter: the original event itself;
    * the sqs route's dead-letter queue: the original S3 notification.
    """
    data = _json_object(body)
    if "requestContext" in data and "requestPayload" in data:
        payload = data["requestPayload"]
        if not isinstance(payload, dict):
            raise EventShapeError("destination record whose requestPayload is not an event")
        return parse(payload)
    return parse(data)
