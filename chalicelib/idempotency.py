"""Exactly one job per object version: claims on an idempotency key.

The shape follows Powertools' idempotency utility (a record IN_PROGRESS, then
COMPLETED with the result, an expiry on the in-progress state) but the trigger needs
what it does not give: the job id kept as the result, a claim released when Slurm
certainly did not accept the job, and a flag when an expired claim is taken over, so
the caller asks Slurm before submitting again. ``IdempotencyStore`` is the contract;
``DynamoDBIdempotencyStore`` the one backend, and the trigger never names it.
"""
from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

from chalicelib.s3events import ObjectRef

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"


def idempotency_key(pipeline: str, ref: ObjectRef) -> str:
    """Stable for one object version and pipeline, distinct for anything else.

    Versioned buckets: the version id. Unversioned ones: ETag and sequencer, so a
    rewrite with the same bytes is a new job too. Hashed, so it is short and holds
    nothing of the (untrusted) key; Slurm's comment search finds it as a substring.
    """
    version = ["v", ref.version_id] if ref.version_id else ["e", ref.etag or "", ref.sequencer or ""]
    material = json.dumps([pipeline, ref.bucket, ref.key, *version], ensure_ascii=False)
    return "st-" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


class ClaimInProgressError(Exception):
    """Another attempt holds the claim right now. Transient: retry later."""

    transient = True

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key} is being processed by another attempt")
        self.key = key


@dataclass(frozen=True)
class Claim:
    """The outcome of ``IdempotencyStore.claim``.

    ``job_id`` set: the key is COMPLETED, nothing to do. Otherwise the caller holds
    the claim; ``taken_over`` says an earlier attempt held it and ended without a
    word (crash, timeout, unknown outcome), so a job may already exist.
    """

    key: str
    job_id: int | None = None
    taken_over: bool = False

    @property
    def completed(self) -> bool:
        return self.job_id is not None


class IdempotencyStore(ABC):
    """Claims keyed by idempotency key."""

    @abstractmethod
    def claim(self, key: str) -> Claim:
        """Take the key IN_PROGRESS, or say it is COMPLETED; raise
        ``ClaimInProgressError`` while another attempt holds it."""

    @abstractmethod
    def complete(self, key: str, job_id: int) -> None:
        """Record the job: every later claim of ``key`` answers with it."""

    @abstractmethod
    def release(self, key: str) -> None:
        """Drop our claim: Slurm certainly has no job, a retry must submit."""

    @abstractmethod
    def expire(self, key: str) -> None:
        """End our claim now with an unknown outcome: the next claim takes it over
        (``taken_over``) and checks Slurm first."""


class DynamoDBIdempotencyStore(IdempotencyStore):
    """Items ``{id, status, in_progress_until, expires_at, job_id}``; ``expires_at``
    is the table's TTL attribute.

    ``in_progress_seconds`` should be a little longer than the Lambda timeout: a
    claim outlives the attempt that took it only if that attempt died.
    """

    def __init__(
        self,
        dynamodb_client: Any,
        table_name: str,
        *,
        ttl_days: int = 30,
        in_progress_seconds: int = 90,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = dynamodb_client
        self._table = table_name
        self._ttl = ttl_days * 86400
        self._in_progress = in_progress_seconds
        self._clock = clock

    def claim(self, key: str) -> Claim:
        now = int(self._clock())
        try:
            answer = self._ddb.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": key},
                    "status": {"S": IN_PROGRESS},
                    "in_progress_until": {"N": str(now + self._in_progress)},
                    "expires_at": {"N": str(now + self._ttl)},
                },
                ConditionExpression=(
                    "attribute_not_exists(id) OR expires_at < :now"
                    " OR (#status = :in_progress AND in_progress_until < :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":now": {"N": str(now)}, ":in_progress": {"S": IN_PROGRESS}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException as exc:
            item = exc.response.get("Item") or {}
            if item.get("status", {}).get("S") == COMPLETED and "job_id" in item:
                return Claim(key, job_id=int(item["job_id"]["N"]))
            raise ClaimInProgressError(key) from None
        old = answer.get("Attributes") or {}
        return Claim(key, taken_over=old.get("status", {}).get("S") == IN_PROGRESS)

    def complete(self, key: str, job_id: int) -> None:
        self._ddb.update_item(
            TableName=self._table,
            Key={"id": {"S": key}},
            UpdateExpression="SET #status = :completed, job_id = :job REMOVE in_progress_until",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":completed": {"S": COMPLETED}, ":job": {"N": str(job_id)}},
        )

    def release(self, key: str) -> None:
        try:
            self._ddb.delete_item(
                TableName=self._table,
                Key={"id": {"S": key}},
                ConditionExpression="#status = :in_progress",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":in_progress": {"S": IN_PROGRESS}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            pass  # never delete a COMPLETED record

    def expire(self, key: str) -> None:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"id": {"S": key}},
                UpdateExpression="SET in_progress_until = :zero",
                ConditionExpression="#status = :in_progress",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":zero": {"N": "0"}, ":in_progress": {"S": IN_PROGRESS}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            pass  # completed meanwhile: nothing left to expire


def create_table(dynamodb_client: Any, name: str) -> None:
    """The table the store expects (tests and the local loop; CloudFormation in AWS)."""
    dynamodb_client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb_client.get_waiter("table_exists").wait(TableName=name)
    dynamodb_client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
