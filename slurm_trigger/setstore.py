"""Set membership: which members of a set are in, and whether it has fired.

One record per set, keyed by the set's idempotency key. Every member is one
``UpdateItem`` that adds it and returns the whole record, so whichever member lands
last sees the set complete; the move from OPEN to COMPLETE is a conditional write,
so exactly one of any number of concurrent deliveries wins it and fires the set.
The job itself is then made through the idempotency claims under the same key, so
a winner that dies is finished by any later delivery or by the scheduled check.

``SetStore`` is the contract; ``DynamoDBSetStore`` the one backend (the trigger
never names it), as with ``idempotency.py``.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

OPEN = "OPEN"
COMPLETE = "COMPLETE"  # closed: the members are final, the job is being made
SUBMITTED = "SUBMITTED"  # its job exists
FAILED = "FAILED"  # its job was refused for good (reported)
_MEMBER = "m:"  # one top-level attribute per member: adding one needs no read
DUE_INDEX = "due"


@dataclass(frozen=True)
class Member:
    """One object in a set, as its event described it."""

    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None

    def same_version(self, other: "Member | None") -> bool:
        """The same object version (a redelivery), however it was described."""
        return other is not None and self.key == other.key and (self.version_id or self.etag) == (other.version_id or other.etag)


@dataclass(frozen=True)
class Where:
    """Which set a write is for: its record's key, what the record says of itself,
    and in how many seconds an open set is due for the scheduled check."""

    set_id: str
    pipeline: str
    bucket: str
    name: str
    span: int | None = None


@dataclass(frozen=True)
class SetState:
    """A set's record. ``changed`` is False when the record was already closed and
    the write that returned it changed nothing (a redelivered or a late member)."""

    set_id: str
    pipeline: str
    bucket: str
    name: str
    status: str
    members: dict[str, Member] = field(default_factory=dict)
    expected: tuple[str, ...] | None = None
    first_at: int | None = None
    due_at: int | None = None
    job_id: int | None = None
    reported_at: int | None = None  # reported incomplete past its deadline (still open)
    changed: bool = True

    @property
    def closed(self) -> bool:
        return self.status != OPEN


class SetStore(ABC):
    @abstractmethod
    def add(self, where: Where, member: str, info: Member) -> SetState:
        """Record ``member`` in an OPEN set (created on first use; ``span`` seconds
        from now it is due for the scheduled check). A closed set is returned as it
        is, ``changed=False``."""

    @abstractmethod
    def expect(self, where: Where, expected: tuple[str, ...]) -> SetState:
        """Record the members a manifest lists, like ``add``."""

    @abstractmethod
    def close(self, set_id: str, *, redrive_after: int) -> SetState | None:
        """OPEN → COMPLETE, returning the final record; None when another attempt
        closed it first. ``redrive_after`` seconds later the scheduled check makes
        the job if no attempt recorded it."""

    @abstractmethod
    def finished(self, set_id: str, job_id: int | None) -> None:
        """The set's job exists (SUBMITTED), or was refused for good (FAILED, no
        ``job_id``): nothing is due any more."""

    @abstractmethod
    def reported(self, set_id: str) -> None:
        """An incomplete set was reported: not due again until a member re-arms it."""

    @abstractmethod
    def due(self, pipeline: str, now: int) -> Iterator[SetState]:
        """The sets of ``pipeline`` due for the scheduled check."""

    @abstractmethod
    def waiting(self, limit: int) -> list[SetState]:
        """OPEN sets (waiting for members), whatever their pipeline, soonest deadline
        first, those without one last (for ``status --sets``). Reading stops once
        ``limit`` are found: when more wait, these are some of them, not the soonest."""


def _state(item: dict[str, Any], changed: bool = True) -> SetState:
    def n(name: str) -> int | None:
        return int(item[name]["N"]) if name in item else None

    members = {}
    for attr, value in item.items():
        if attr.startswith(_MEMBER):
            m = value["M"]
            members[attr[len(_MEMBER):]] = Member(
                key=m["k"]["S"],
                version_id=m["v"]["S"] if "v" in m else None,
                etag=m["e"]["S"] if "e" in m else None,
                size=int(m["s"]["N"]) if "s" in m else None,
            )
    expected = tuple(v["S"] for v in item["expected"]["L"]) if "expected" in item else None
    return SetState(
        set_id=item["id"]["S"],
        pipeline=item.get("pipeline", {}).get("S", ""),
        bucket=item.get("bucket", {}).get("S", ""),
        name=item.get("set_name", {}).get("S", ""),
        status=item.get("status", {}).get("S", OPEN),
        members=members,
        expected=expected,
        first_at=n("first_at"),
        due_at=n("due_at"),
        job_id=n("job_id"),
        reported_at=n("reported_at"),
        changed=changed,
    )


def _member(info: Member) -> dict[str, Any]:
    m: dict[str, Any] = {"k": {"S": info.key}}
    if info.version_id:
        m["v"] = {"S": info.version_id}
    if info.etag:
        m["e"] = {"S": info.etag}
    if info.size is not None:
        m["s"] = {"N": str(info.size)}
    return {"M": m}


class DynamoDBSetStore(SetStore):
    """Items ``{id, pipeline, bucket, set_name, status, first_at, due_at, job_id, expected,
    m:<member>..., expires_at}``; ``expires_at`` is the TTL attribute; the sparse
    index ``due`` (``pipeline``, ``due_at``) holds only the sets something is due for.
    A record holds at most 400 KB: a few thousand members."""

    def __init__(self, dynamodb_client: Any, table_name: str, *, ttl_days: int = 30, clock: Callable[[], float] = time.time) -> None:
        self._ddb = dynamodb_client
        self._table = table_name
        self._ttl = ttl_days * 86400
        self._clock = clock

    def _open_update(self, where: Where, sets: list[str], values: dict[str, Any], names: dict[str, str]) -> SetState:
        now, span = int(self._clock()), where.span
        sets = sets + [
            "#pipeline = if_not_exists(#pipeline, :pipeline)",
            "#bucket = if_not_exists(#bucket, :bucket)",
            "#name = if_not_exists(#name, :name)",
            "#status = if_not_exists(#status, :open)",
            "#first = if_not_exists(#first, :now)",
            "#expires = if_not_exists(#expires, :expires)",
        ]
        names = {
            **names,
            "#pipeline": "pipeline",
            "#bucket": "bucket",
            "#name": "set_name",
            "#first": "first_at",
            "#expires": "expires_at",
        }
        values = {
            **values,
            ":pipeline": {"S": where.pipeline},
            ":bucket": {"S": where.bucket},
            ":name": {"S": where.name},
            ":open": {"S": OPEN},
            ":now": {"N": str(now)},
            ":expires": {"N": str(now + self._ttl + (span or 0))},
        }
        if span:
            sets.append("#due = if_not_exists(#due, :due)")
            values[":due"] = {"N": str(now + span)}
            names["#due"] = "due_at"
        try:
            answer = self._ddb.update_item(
                TableName=self._table,
                Key={"id": {"S": where.set_id}},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_not_exists(id) OR #status = :open",
                ExpressionAttributeNames={"#status": "status", **names},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException as exc:
            return _state(exc.response.get("Item") or {"id": {"S": where.set_id}}, changed=False)
        return _state(answer["Attributes"])

    def add(self, where: Where, member: str, info: Member) -> SetState:
        return self._open_update(where, ["#member = :member"], {":member": _member(info)}, {"#member": _MEMBER + member})

    def expect(self, where: Where, expected: tuple[str, ...]) -> SetState:
        return self._open_update(where, ["expected = :expected"], {":expected": {"L": [{"S": m} for m in expected]}}, {})

    def close(self, set_id: str, *, redrive_after: int) -> SetState | None:
        now = int(self._clock())
        try:
            answer = self._ddb.update_item(
                TableName=self._table,
                Key={"id": {"S": set_id}},
                UpdateExpression="SET #status = :complete, closed_at = :now, due_at = :redrive",
                ConditionExpression="#status = :open",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":complete": {"S": COMPLETE},
                    ":open": {"S": OPEN},
                    ":now": {"N": str(now)},
                    ":redrive": {"N": str(now + redrive_after)},
                },
                ReturnValues="ALL_NEW",
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return None
        return _state(answer["Attributes"])

    def finished(self, set_id: str, job_id: int | None) -> None:
        values: dict[str, Any] = {":status": {"S": SUBMITTED if job_id is not None else FAILED}}
        if job_id is not None:
            values[":job"] = {"N": str(job_id)}
        self._ddb.update_item(
            TableName=self._table,
            Key={"id": {"S": set_id}},
            UpdateExpression=("SET #status = :status, job_id = :job" if job_id is not None else "SET #status = :status")
            + " REMOVE due_at",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )

    def reported(self, set_id: str) -> None:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"id": {"S": set_id}},
                UpdateExpression="SET reported_at = :now REMOVE due_at",
                ConditionExpression="#status = :open",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":now": {"N": str(int(self._clock()))}, ":open": {"S": OPEN}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            pass  # it completed meanwhile: its job is what matters

    def due(self, pipeline: str, now: int) -> Iterator[SetState]:
        pages = self._ddb.get_paginator("query").paginate(
            TableName=self._table,
            IndexName=DUE_INDEX,
            KeyConditionExpression="#pipeline = :pipeline AND due_at <= :now",
            ExpressionAttributeNames={"#pipeline": "pipeline"},
            ExpressionAttributeValues={":pipeline": {"S": pipeline}, ":now": {"N": str(now)}},
        )
        for page in pages:
            for item in page.get("Items", []):
                yield _state(item)

    def waiting(self, limit: int) -> list[SetState]:
        # A scan, not the ``due`` index: a set without a deadline (pairs, manifests
        # without one, a reported set) is waiting too and is not in the index. It stops
        # once ``limit`` are found (a ``--watch`` must not read the whole table every few
        # seconds); the table's closed sets go with their TTL.
        found: list[SetState] = []
        pages = self._ddb.get_paginator("scan").paginate(
            TableName=self._table,
            FilterExpression="#status = :open",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":open": {"S": OPEN}},
        )
        for page in pages:
            found += (_state(item) for item in page.get("Items", []))
            if len(found) >= limit:
                break
        found.sort(key=lambda s: (s.due_at is None, s.due_at or 0, s.first_at or 0, s.set_id))
        return found[:limit]


def create_table(dynamodb_client: Any, name: str) -> None:
    """The table the store expects (tests and the local loop; CloudFormation in AWS)."""
    dynamodb_client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "pipeline", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": DUE_INDEX,
                "KeySchema": [
                    {"AttributeName": "pipeline", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb_client.get_waiter("table_exists").wait(TableName=name)
    dynamodb_client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
