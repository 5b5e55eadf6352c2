"""Exactly one job per object version: owned claims on an idempotency key, with an outbox.

The shape follows Powertools' idempotency utility (a record IN_PROGRESS, then
COMPLETED with the result, an expiry on the in-progress state) but the trigger needs
what it does not give:

* an **owner** token on every claim, checked by every later write, so an attempt whose
  claim was taken over (it ran past its lease) can change nothing;
* a **SUBMITTED** state between the two, the outbox: the job id is recorded the moment
  Slurm answers, before the "Submitted" event is published, so a failure after that
  point never loses the job: the next attempt publishes the recorded event and never
  submits;
* a claim **released** when Slurm certainly has no job, **held** longer when the
  outcome of a submit is unknown, and a flag when an expired claim is **taken over**,
  so the caller asks Slurm before submitting again.

States of a record and who moves it (every arrow after the first is conditional on
the owner)::

    (none) --claim--> IN_PROGRESS --record(job, event)--> SUBMITTED --complete--> COMPLETED
                      |  ^ lease over: claim() takes over     | lease over: claim() takes over
                      |  | (taken_over: ask Slurm first)      | (submitted: publish the event)
                      +--release--> (none)                    +--expire: lease over now

``IdempotencyStore`` is the contract; ``DynamoDBIdempotencyStore`` the one backend,
and the trigger never names it.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from chalicelib.s3events import ObjectRef

IN_PROGRESS = "IN_PROGRESS"
SUBMITTED = "SUBMITTED"
COMPLETED = "COMPLETED"
# What a claim found, for its taker (Claim.state)
FRESH = "FRESH"  # no record: no earlier attempt can have made a job
TAKEN_OVER = "TAKEN_OVER"  # an earlier attempt's lease ran out with no job recorded
MAX_KEPT_JOB = 300 * 1024  # compressed bytes of a kept job (DynamoDB items stop at 400 KB)


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


class ClaimLostError(Exception):
    """The claim is no longer ours (its lease ran out and another attempt took it
    over, or it was completed): the write was refused and changed nothing."""

    transient = True

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key} was taken over by another attempt; this attempt's write changed nothing")
        self.key = key


@dataclass(frozen=True)
class Claim:
    """The outcome of ``IdempotencyStore.claim``.

    ``state`` COMPLETED: nothing to do, ``job_id`` is the object's job. Otherwise the
    caller holds the claim as ``owner`` until its lease ends: FRESH (submit),
    TAKEN_OVER (an earlier attempt ended without a word: ask Slurm first) or SUBMITTED
    (an earlier attempt recorded ``job_id`` and ``outbox`` but did not publish: publish
    ``outbox`` and complete; never submit).
    """

    key: str
    state: str = FRESH
    owner: str | None = None
    job_id: int | None = None
    outbox: Mapping[str, Any] | None = None

    @property
    def completed(self) -> bool:
        return self.state == COMPLETED

    @property
    def taken_over(self) -> bool:
        return self.state == TAKEN_OVER

    @property
    def submitted(self) -> bool:
        return self.state == SUBMITTED


class IdempotencyStore(ABC):
    """Claims keyed by idempotency key. Every write but ``claim`` raises
    ``ClaimLostError`` (and changes nothing) when ``claim.owner`` no longer holds it."""

    @abstractmethod
    def claim(self, key: str, lease_seconds: float | None = None) -> Claim:
        """Take ``key`` for ``lease_seconds`` (the store's default when None), or say
        it is COMPLETED; raise ``ClaimInProgressError`` while another lease runs."""

    @abstractmethod
    def record(self, claim: Claim, job_id: int, outbox: Mapping[str, Any], job: Mapping[str, Any] | None = None) -> None:
        """IN_PROGRESS → SUBMITTED: Slurm made ``job_id``; ``outbox`` (JSON-able) is
        what remains to be published. From here on the job is never lost. ``job``
        (JSON-able, the rendered submission) is kept for ``kept_job`` (retries)."""

    @abstractmethod
    def kept_job(self, key: str) -> dict[str, Any] | None:
        """The job ``record`` kept for ``key``; None when none was (or it is too big)."""

    @abstractmethod
    def complete(self, claim: Claim) -> None:
        """SUBMITTED → COMPLETED: the outbox was published; every later claim of the
        key answers with the job."""

    @abstractmethod
    def release(self, claim: Claim) -> None:
        """Drop an IN_PROGRESS claim: Slurm certainly has no job for it, a retry submits."""

    @abstractmethod
    def hold(self, claim: Claim, seconds: float) -> None:
        """End an IN_PROGRESS claim's lease ``seconds`` from now (longer or shorter):
        a submit's outcome is unknown and its job may still appear until then."""

    @abstractmethod
    def expire(self, claim: Claim) -> None:
        """End the lease now: the next claim takes over at once (and asks Slurm first,
        or publishes a SUBMITTED record's outbox)."""


class DynamoDBIdempotencyStore(IdempotencyStore):
    """Items ``{id, status, owner, in_progress_until, expires_at, job_id, outbox,
    kept_job}``; ``expires_at`` is the table's TTL attribute, ``outbox`` a JSON string,
    ``kept_job`` zlib-compressed JSON.

    ``in_progress_seconds`` is the lease of a claim whose caller gives none.
    """

    def __init__(
        self,
        dynamodb_client: Any,
        table_name: str,
        *,
        ttl_days: int = 30,
        in_progress_seconds: float = 90,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = dynamodb_client
        self._table = table_name
        self._ttl = ttl_days * 86400
        self._in_progress = in_progress_seconds
        self._clock = clock

    def claim(self, key: str, lease_seconds: float | None = None) -> Claim:
        now = self._clock()
        owner = uuid.uuid4().hex
        until = _n(now + (self._in_progress if lease_seconds is None else lease_seconds))
        try:
            answer = self._ddb.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": key},
                    "status": {"S": IN_PROGRESS},
                    "owner": {"S": owner},
                    "in_progress_until": until,
                    "expires_at": {"N": str(int(now) + self._ttl)},
                },
                ConditionExpression=(
                    "attribute_not_exists(id) OR expires_at < :now"
                    " OR (#status = :in_progress AND in_progress_until < :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":now": _n(now), ":in_progress": {"S": IN_PROGRESS}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException as exc:
            item = exc.response.get("Item") or {}
            status = item.get("status", {}).get("S")
            if status == COMPLETED and "job_id" in item:
                return Claim(key, COMPLETED, job_id=int(item["job_id"]["N"]))
            if status == SUBMITTED and float(item.get("in_progress_until", {}).get("N", 0)) < now:
                return self._take_submitted(key, item, owner, until, now)
            raise ClaimInProgressError(key) from None
        old = answer.get("Attributes") or {}
        state = TAKEN_OVER if old.get("status", {}).get("S") == IN_PROGRESS else FRESH
        return Claim(key, state, owner)

    def _take_submitted(self, key: str, item: dict[str, Any], owner: str, until: dict[str, str], now: float) -> Claim:
        """A SUBMITTED record whose lease ran out: take it over, job and outbox kept."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"id": {"S": key}},
                UpdateExpression="SET #owner = :me, in_progress_until = :until",
                ConditionExpression="#status = :submitted AND #owner = :old AND in_progress_until < :now",
                ExpressionAttributeNames={"#status": "status", "#owner": "owner"},
                ExpressionAttributeValues={
                    ":me": {"S": owner}, ":until": until, ":submitted": {"S": SUBMITTED},
                    ":old": item.get("owner", {"S": ""}), ":now": _n(now),
                },
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            raise ClaimInProgressError(key) from None  # another attempt took it first
        outbox = json.loads(item["outbox"]["S"]) if "outbox" in item else None
        return Claim(key, SUBMITTED, owner, job_id=int(item["job_id"]["N"]), outbox=outbox)

    def record(self, claim: Claim, job_id: int, outbox: Mapping[str, Any], job: Mapping[str, Any] | None = None) -> None:
        values = {":submitted": {"S": SUBMITTED}, ":job": {"N": str(int(job_id))},
                  ":outbox": {"S": json.dumps(outbox, separators=(",", ":"))}, ":in_progress": {"S": IN_PROGRESS}}
        update = "SET #status = :submitted, job_id = :job, outbox = :outbox"
        packed = zlib.compress(json.dumps(job, separators=(",", ":")).encode()) if job is not None else b""
        if packed and len(packed) <= MAX_KEPT_JOB:  # never let a big job fail the record (then: not retried)
            update, values[":kept"] = update + ", kept_job = :kept", {"B": packed}
        self._update(claim, update, "#status = :in_progress", values)

    def kept_job(self, key: str) -> dict[str, Any] | None:
        item = self._ddb.get_item(TableName=self._table, Key={"id": {"S": key}}, ConsistentRead=True,
                                  ProjectionExpression="kept_job").get("Item") or {}
        packed = item.get("kept_job", {}).get("B")
        return json.loads(zlib.decompress(packed)) if packed else None

    def complete(self, claim: Claim) -> None:
        self._update(
            claim,
            "SET #status = :completed REMOVE in_progress_until, outbox",
            "#status = :submitted",
            {":completed": {"S": COMPLETED}, ":submitted": {"S": SUBMITTED}},
        )

    def release(self, claim: Claim) -> None:
        try:
            self._ddb.delete_item(
                TableName=self._table,
                Key={"id": {"S": claim.key}},
                ConditionExpression="#owner = :me AND #status = :in_progress",
                ExpressionAttributeNames={"#status": "status", "#owner": "owner"},
                ExpressionAttributeValues={":me": {"S": claim.owner or ""}, ":in_progress": {"S": IN_PROGRESS}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            raise ClaimLostError(claim.key) from None

    def hold(self, claim: Claim, seconds: float) -> None:
        self._update(
            claim, "SET in_progress_until = :until", "#status = :in_progress",
            {":until": _n(self._clock() + seconds), ":in_progress": {"S": IN_PROGRESS}},
        )

    def expire(self, claim: Claim) -> None:
        self._update(
            claim, "SET in_progress_until = :zero", "#status IN (:in_progress, :submitted)",
            {":zero": {"N": "0"}, ":in_progress": {"S": IN_PROGRESS}, ":submitted": {"S": SUBMITTED}},
        )

    def _update(self, claim: Claim, update: str, condition: str, values: dict[str, Any]) -> None:
        """One write conditional on ``claim.owner`` still holding the record."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"id": {"S": claim.key}},
                UpdateExpression=update,
                ConditionExpression=f"#owner = :me AND {condition}",
                ExpressionAttributeNames={"#status": "status", "#owner": "owner"},
                ExpressionAttributeValues={":me": {"S": claim.owner or ""}, **values},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            raise ClaimLostError(claim.key) from None


def _n(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}"}


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
