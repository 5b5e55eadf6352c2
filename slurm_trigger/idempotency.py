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
and the trigger never names it. The ``*_many`` writes are the same moves for a whole
batch (an SQS batch's objects): one answer per claim, each as the single write would
give it; the DynamoDB store makes them one ``TransactWriteItems`` per 100 keys.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

from slurm_trigger.s3events import ObjectRef

IN_PROGRESS = "IN_PROGRESS"
SUBMITTED = "SUBMITTED"
COMPLETED = "COMPLETED"
# What a claim found, for its taker (Claim.state)
FRESH = "FRESH"  # no record: no earlier attempt can have made a job
TAKEN_OVER = "TAKEN_OVER"  # an earlier attempt's lease ran out with no job recorded
MAX_KEPT_JOB = 300 * 1024  # compressed bytes of a kept job (DynamoDB items stop at 400 KB)
TRANSACTION_ITEMS = 100  # TransactWriteItems' limit
TRANSACTION_BYTES = 3 * 1024 * 1024  # under its 4 MB, with room for names and conditions
T = TypeVar("T")


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
    # TAKEN_OVER: when the key was first claimed (epoch seconds), so no attempt's job can
    # have been submitted before; None when the record does not say (search everything)
    claimed_at: float | None = None

    @property
    def completed(self) -> bool:
        return self.state == COMPLETED

    @property
    def taken_over(self) -> bool:
        return self.state == TAKEN_OVER

    @property
    def submitted(self) -> bool:
        return self.state == SUBMITTED


# What ``record_many`` takes per key: (claim, job id, outbox[, the job to keep])
RecordEntry = tuple[Claim, int, Mapping[str, Any]] | tuple[Claim, int, Mapping[str, Any], Mapping[str, Any] | None]


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

    # Batches: one answer per item, a ``Claim`` (or None) or the exception the single
    # write would raise. Backends that can write several items conditionally at once
    # override these; the defaults are the single writes in turn.
    def claim_many(self, keys: Sequence[str], lease_seconds: float | None = None) -> list[Claim | Exception]:
        """``claim`` of each key (all different)."""
        return [_attempt(lambda k=k: self.claim(k, lease_seconds)) for k in keys]

    def record_many(self, entries: Sequence[RecordEntry]) -> list[Exception | None]:
        """``record`` of each ``(claim, job_id, outbox[, job])``."""
        return [_attempt(lambda e=e: self.record(*e)) for e in entries]

    def complete_many(self, claims: Sequence[Claim]) -> list[Exception | None]:
        """``complete`` of each claim."""
        return [_attempt(lambda c=c: self.complete(c)) for c in claims]


def _wire_size(request: Mapping[str, Any]) -> int:
    """About the bytes ``request`` takes on the wire: JSON, binary values (a kept job)
    as base64."""
    return len(json.dumps(request, default=lambda b: "=" * (4 * ((len(b) + 2) // 3))))


def _attempt(write: Callable[[], T]) -> T | Exception:
    try:
        return write()
    except Exception as exc:  # noqa: BLE001 - handed back as that item's answer
        return exc


class DynamoDBIdempotencyStore(IdempotencyStore):
    """Items ``{id, status, owner, in_progress_until, expires_at, claimed_at, job_id,
    outbox, kept_job}``; ``expires_at`` is the table's TTL attribute, ``claimed_at`` when
    the key was first claimed (a takeover keeps it), ``outbox`` a JSON string,
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
                **self._claim_args(key, owner, until, now),
                ConditionExpression="attribute_not_exists(id) OR expires_at < :now",
                ExpressionAttributeValues={":now": _n(now)},
                ReturnValues="ALL_OLD",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException as exc:
            return self._claim_refused(key, exc.response.get("Item") or {}, owner, until, now)
        old = answer.get("Attributes") or {}
        state = TAKEN_OVER if old.get("status", {}).get("S") == IN_PROGRESS else FRESH
        return Claim(key, state, owner)

    def _claim_args(self, key: str, owner: str, until: dict[str, str], now: float) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": {
                "id": {"S": key},
                "status": {"S": IN_PROGRESS},
                "owner": {"S": owner},
                "in_progress_until": until,
                "expires_at": {"N": str(int(now) + self._ttl)},
                "claimed_at": _n(now),
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _claim_refused(self, key: str, item: dict[str, Any], owner: str, until: dict[str, str], now: float) -> Claim:
        """The record a claim's condition refused over: done, publishable, or in progress."""
        status = item.get("status", {}).get("S")
        if status == COMPLETED and "job_id" in item:
            return Claim(key, COMPLETED, job_id=int(item["job_id"]["N"]))
        lease_over = float(item.get("in_progress_until", {}).get("N", 0)) < now
        if status == SUBMITTED and lease_over:
            return self._take_submitted(key, item, owner, until, now)
        if status == IN_PROGRESS and lease_over:
            return self._take_in_progress(key, item, owner, until, now)
        raise ClaimInProgressError(key) from None

    def _take_in_progress(self, key: str, item: dict[str, Any], owner: str, until: dict[str, str], now: float) -> Claim:
        """An IN_PROGRESS record whose lease ran out: take it over, keeping when the key
        was first claimed (a put would replace it), which bounds the search for its job.
        A record without it (written before) gets this claim's time: this takeover's
        search is unbounded, so a job it does not find was never made."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"id": {"S": key}},
                UpdateExpression=(
                    "SET #owner = :me, in_progress_until = :until, expires_at = :expires,"
                    " claimed_at = if_not_exists(claimed_at, :now)"
                ),
                ConditionExpression="#status = :in_progress AND #owner = :old AND in_progress_until < :now",
                ExpressionAttributeNames={"#status": "status", "#owner": "owner"},
                ExpressionAttributeValues={
                    ":me": {"S": owner}, ":until": until, ":in_progress": {"S": IN_PROGRESS},
                    ":old": item.get("owner", {"S": ""}), ":now": _n(now),
                    ":expires": {"N": str(int(now) + self._ttl)},
                },
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            raise ClaimInProgressError(key) from None  # another attempt took it first
        claimed = item.get("claimed_at", {}).get("N")
        return Claim(key, TAKEN_OVER, owner, claimed_at=float(claimed) if claimed else None)

    def claim_many(self, keys: Sequence[str], lease_seconds: float | None = None) -> list[Claim | Exception]:
        """Fresh keys in one transaction per 100, each ``Put`` only over no record: a
        transaction's ``Put`` cannot return the record it replaced, and only a fresh key
        is surely FRESH. A key with a record (a repeat, a lease to take over, a TTL
        past) comes back in the cancellation reasons: COMPLETED is answered from the
        returned record, anything else by the single ``claim``. A cancelled
        transaction wrote nothing, so the keys it refused for nothing are sent again."""
        now = self._clock()
        until = _n(now + (self._in_progress if lease_seconds is None else lease_seconds))
        owners = {key: uuid.uuid4().hex for key in keys}

        def put(key: str) -> dict[str, Any]:
            return {"Put": {
                **self._claim_args(key, owners[key], until, now),
                "ConditionExpression": "attribute_not_exists(id)",
            }}

        def refused(key: str, item: dict[str, Any] | None) -> Claim | Exception:
            if item and item.get("status", {}).get("S") == COMPLETED and "job_id" in item:
                return Claim(key, COMPLETED, job_id=int(item["job_id"]["N"]))
            return _attempt(lambda: self.claim(key, lease_seconds))

        answers = self._transact(list(keys), put, refused)
        return [Claim(k, FRESH, owners[k]) if a is None else a for k, a in zip(keys, answers)]

    def record_many(self, entries: Sequence[RecordEntry]) -> list[Exception | None]:
        def refused(entry: RecordEntry, item: dict[str, Any] | None) -> Exception | None:
            return ClaimLostError(entry[0].key) if item is not None else _attempt(lambda: self.record(*entry))

        return self._transact(list(entries), lambda e: {"Update": self._record_args(*e)}, refused)

    def complete_many(self, claims: Sequence[Claim]) -> list[Exception | None]:
        def refused(claim: Claim, item: dict[str, Any] | None) -> Exception | None:
            return ClaimLostError(claim.key) if item is not None else _attempt(lambda: self.complete(claim))

        return self._transact(list(claims), lambda c: {"Update": self._complete_args(c)}, refused)

    def _transact(
        self,
        items: list[T],
        op: Callable[[T], dict[str, Any]],
        refused: Callable[[T, dict[str, Any] | None], Any],
    ) -> list[Any]:
        """``op`` of every item in ``TransactWriteItems`` calls of at most 100 items (and
        3 MB); None for an item written. An item whose condition failed gets
        ``refused(item, record)`` (``record``: the item as it is, or None where the
        record is missing or another write raced it, then ``refused`` writes it alone).
        The items of a cancelled transaction that were not at fault go again, in a
        transaction of their own."""
        answers: list[Any] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            chunk, size, ops = [], 0, []
            for i in pending:
                o = op(items[i])
                o_size = _wire_size(o)
                if chunk and (len(chunk) == TRANSACTION_ITEMS or size + o_size > TRANSACTION_BYTES):
                    break
                chunk.append(i)
                ops.append(o)
                size += o_size
            pending = pending[len(chunk):]
            if len(chunk) == 1:  # one item: the single write says the same for half the cost
                answers[chunk[0]] = refused(items[chunk[0]], None)
                continue
            try:
                self._ddb.transact_write_items(TransactItems=ops)
            except self._ddb.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons") or []
                codes = [r.get("Code") or "None" for r in reasons]
                if len(codes) != len(chunk) or set(codes) == {"None"}:
                    reasons, codes = [{}] * len(chunk), ["?"] * len(chunk)  # no reason given: each alone
                again = []
                for i, code, reason in zip(chunk, codes, reasons):
                    if code == "None":
                        again.append(i)
                    elif code == "ConditionalCheckFailed":
                        answers[i] = refused(items[i], reason.get("Item") or {})
                    else:  # TransactionConflict and the like: this item alone
                        answers[i] = refused(items[i], None)
                pending = again + pending
            except Exception as exc:  # noqa: BLE001 - each item of the chunk fails with it
                for i in chunk:
                    answers[i] = exc
        return answers

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
        self._write(self._record_args(claim, job_id, outbox, job), claim)

    def _record_args(
        self, claim: Claim, job_id: int, outbox: Mapping[str, Any], job: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        values = {":submitted": {"S": SUBMITTED}, ":job": {"N": str(int(job_id))},
                  ":outbox": {"S": json.dumps(outbox, separators=(",", ":"))}, ":in_progress": {"S": IN_PROGRESS}}
        update = "SET #status = :submitted, job_id = :job, outbox = :outbox"
        packed = zlib.compress(json.dumps(job, separators=(",", ":")).encode()) if job is not None else b""
        if packed and len(packed) <= MAX_KEPT_JOB:  # never let a big job fail the record (then: not retried)
            update, values[":kept"] = update + ", kept_job = :kept", {"B": packed}
        return self._update_args(claim, update, "#status = :in_progress", values)

    def kept_job(self, key: str) -> dict[str, Any] | None:
        item = self._ddb.get_item(TableName=self._table, Key={"id": {"S": key}}, ConsistentRead=True,
                                  ProjectionExpression="kept_job").get("Item") or {}
        packed = item.get("kept_job", {}).get("B")
        return json.loads(zlib.decompress(packed)) if packed else None

    def complete(self, claim: Claim) -> None:
        self._write(self._complete_args(claim), claim)

    def _complete_args(self, claim: Claim) -> dict[str, Any]:
        return self._update_args(
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
        self._write(self._update_args(claim, update, condition, values), claim)

    def _update_args(self, claim: Claim, update: str, condition: str, values: dict[str, Any]) -> dict[str, Any]:
        """One write conditional on ``claim.owner`` still holding the record (alone,
        or as an ``Update`` of a transaction)."""
        return {
            "TableName": self._table,
            "Key": {"id": {"S": claim.key}},
            "UpdateExpression": update,
            "ConditionExpression": f"#owner = :me AND {condition}",
            "ExpressionAttributeNames": {"#status": "status", "#owner": "owner"},
            "ExpressionAttributeValues": {":me": {"S": claim.owner or ""}, **values},
        }

    def _write(self, args: dict[str, Any], claim: Claim) -> None:
        try:
            self._ddb.update_item(**args)
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
