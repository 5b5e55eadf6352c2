"""What the tracker remembers between polls, and the lease that keeps polls apart.

The tracker only talks to the abstract ``JobStore``; ``DynamoDBJobStore`` is the
backend the app uses. One DynamoDB table (partition key ``pk``, string) holds three
kinds of items per cluster:

* ``job#<cluster>#<id>``: the last state published for a job, with what the status
  command shows; finished jobs get an ``expires_at`` (TTL) and then vanish.
* ``cursor#<cluster>``: the ``update_time`` for the next ``GET /jobs``, the time of
  the last sweep, the highest job id listed, and how many shards hold the rest of the cursor.
* ``known#<cluster>#<n>``: shard ``n`` (job id modulo the shard count) of ``known``, a
  compressed map of job id → last state of every tracked job still listed by Slurm,
  and of ``vanished``, the checkpoint of the lookups of jobs a sweep no longer found.
  Slurm answers ``update_time`` with *every* job as soon as *any* job changed, so the
  tracker diffs the page against ``known`` in memory and reads and writes the job items
  of only the jobs that changed. ``known`` is a filter, never the truth: a stale or
  missing entry only costs one extra read, which is what makes the shards safe to
  write one by one before the cursor item (a crash in between leaves stale shards).
  A save writes only the shards whose content changed, and doubles the shard count
  (rewriting them all) when they fill up: about 4,000 jobs a shard, so 1,000,000
  tracked jobs are 256 items of ~26 KB, far from DynamoDB's 400 KB an item.
* ``lease#<cluster>``: who is polling now, and until when.

A cursor item of the old layout (``known`` and ``vanished`` inside it: one item for the
whole cluster, which failed past ~57,000 jobs) is read once as it is; the next save
writes the shards and the cursor without them, so an upgrade forgets no job.
"""
from __future__ import annotations

import json
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import msgspec

from slurm_trigger.provenance import Source
from slurm_trigger.slurm.models import FINAL_STATES

# The tracker's own final state for a job Slurm forgot before we saw it end.
LOST = "LOST"
TRACKER_FINAL_STATES = FINAL_STATES | {LOST}

BATCH_GET_LIMIT = 100
JOBS_PER_SHARD = 4096  # ~26 KB compressed at ~6.6 bytes a job: cheap to rewrite one
MAX_SHARD_BYTES = 380 * 1024  # uncompressed; DynamoDB items stop at 400 KB


class TrackedJob(msgspec.Struct, frozen=True, gc=False):
    """The last published state of one job, with what the status table shows. A frozen
    ``msgspec.Struct`` (``msgspec.structs.replace`` copies one with changes): a first
    poll builds one per job, ~10x faster than a frozen dataclass."""

    cluster: str
    job_id: int
    state: str
    previous_state: str | None = None
    name: str = ""
    user: str | None = None
    partition: str | None = None
    pipeline: str | None = None
    bucket: str | None = None
    key: str | None = None
    version_id: str | None = None
    step: str | None = None  # the pipeline step that made the job (pipelines with ``steps``)
    array_job_id: int | None = None  # for the tasks of a job array
    array_task_id: int | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    updated_at: str | None = None
    restarts: int = 0
    # a pipeline with ``retry`` (slurm_trigger/retry.py): the job's key, its attempt of how many
    idempotency_key: str | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    original_key: str | None = None

    @property
    def final(self) -> bool:
        return self.state in TRACKER_FINAL_STATES

    @property
    def source(self) -> Source | None:
        """The object behind the job, for jobs slurm-trigger submitted."""
        if not self.bucket or self.key is None:
            return None
        return Source(self.bucket, self.key, self.pipeline or "", self.version_id, step=self.step,
                      idempotency_key=self.idempotency_key, attempt=self.attempt,
                      max_attempts=self.max_attempts, original_key=self.original_key)

    @property
    def s3_uri(self) -> str | None:
        return self.source.s3_uri if self.source else None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


@dataclass
class Cursor:
    """Where the last poll left off. ``known`` maps job id to an opaque ``STATE|...``
    string the tracker compares; ``vanished`` maps each tracked job that a sweep no
    longer found, and that is still to be looked up, to when slurmctld first said it
    does not know it (None: not asked yet), in the order found; ``version`` makes
    saving it a compare-and-set."""

    update_time: int | None = None
    last_sweep: float | None = None
    # the highest job id of the last complete listing: a poll of /jobs/state takes an id
    # above it as new, and one below it that ``known`` lacks as a job it already saw
    top_job_id: int | None = None
    known: dict[int, str] = field(default_factory=dict)
    vanished: dict[int, float | None] = field(default_factory=dict)
    version: int = 0


class JobStore(ABC):
    """Tracked jobs, the poll cursor and the poll lease of each cluster."""

    @abstractmethod
    def acquire_lease(self, cluster: str, owner: str, seconds: float) -> bool:
        """Take the cluster's lease unless someone else holds an unexpired one."""

    @abstractmethod
    def release_lease(self, cluster: str, owner: str) -> None:
        """Give the lease back (only if ``owner`` still holds it)."""

    @abstractmethod
    def load_cursor(self, cluster: str) -> Cursor:
        """The cursor, or an empty one before the first poll."""

    @abstractmethod
    def save_cursor(self, cluster: str, cursor: Cursor) -> bool:
        """Store ``cursor`` if nobody saved another since it was loaded; bumps its version."""

    @abstractmethod
    def get_jobs(self, cluster: str, job_ids: Iterable[int]) -> dict[int, TrackedJob]:
        """The stored state of these jobs (those never seen are absent)."""

    @abstractmethod
    def save_job(self, job: TrackedJob, expected: TrackedJob | None) -> bool:
        """Store ``job`` if the stored one is still ``expected`` (None: no item yet).
        False when someone else changed it first."""

    @abstractmethod
    def list_jobs(self, cluster: str) -> list[TrackedJob]:
        """Every tracked job of the cluster (for the status command, not the poll)."""


def create_table(dynamodb_client: Any, name: str) -> None:
    """The one table ``DynamoDBJobStore`` needs (on-demand, TTL on ``expires_at``)."""
    dynamodb_client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb_client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    dynamodb_client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )


class DynamoDBJobStore(JobStore):
    """``JobStore`` on one DynamoDB table; reads are strongly consistent.

    ``final_ttl_days``: how long a finished job stays visible to ``status``.
    """

    def __init__(self, dynamodb_client: Any, table: str, *, final_ttl_days: int = 30) -> None:
        self._db = dynamodb_client
        self.table = table
        self._ttl = final_ttl_days * 86400
        # Per cluster, what the last load or save of its cursor saw: the shard count and
        # each shard's CRC, so that a save writes only the shards that changed.
        self._loaded: dict[str, tuple[int, dict[int, int] | None]] = {}

    # --- lease
    def acquire_lease(self, cluster: str, owner: str, seconds: float) -> bool:
        now = time.time()
        try:
            self._db.put_item(
                TableName=self.table,
                Item={"pk": _s(f"lease#{cluster}"), "owner": _s(owner), "lease_until": _n(now + seconds),
                      "expires_at": _n(int(now + seconds + 86400))},
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now OR #o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":now": _n(now), ":me": _s(owner)},
            )
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    def release_lease(self, cluster: str, owner: str) -> None:
        try:
            self._db.delete_item(
                TableName=self.table,
                Key={"pk": _s(f"lease#{cluster}")},
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": _s(owner)},
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            pass  # it expired and someone else holds it now: theirs to release

    # --- cursor
    def load_cursor(self, cluster: str) -> Cursor:
        item = self._db.get_item(
            TableName=self.table, Key={"pk": _s(f"cursor#{cluster}")}, ConsistentRead=True
        ).get("Item")
        self._loaded.pop(cluster, None)
        if not item:
            return Cursor()
        if "shards" in item:
            count = int(item["shards"]["N"])
            shards = self._get_shards(cluster, count)
            self._loaded[cluster] = (count, {n: zlib.crc32(raw) for n, raw in shards.items()})
            parts = [json.loads(raw) for raw in shards.values()]
            known = {int(k): v for part in parts for k, v in part.get("known", {}).items()}
            queue = sorted((pos, int(k), since) for part in parts for k, (since, pos) in part.get("vanished", {}).items())
            vanished = {job_id: since for _, job_id, since in queue}
        else:  # the old layout, all in this item: read once, the next save writes shards
            known, vanished = ({int(k): v for k, v in _unpack(item[name]["B"]).items()} if name in item else {}
                               for name in ("known", "vanished"))
        return Cursor(
            update_time=int(item["update_time"]["N"]) if "update_time" in item else None,
            last_sweep=float(item["last_sweep"]["N"]) if "last_sweep" in item else None,
            top_job_id=int(item["top_job_id"]["N"]) if "top_job_id" in item else None,
            known=known,
            vanished=vanished,
            version=int(item["version"]["N"]),
        )

    def save_cursor(self, cluster: str, cursor: Cursor) -> bool:
        """The changed shards first (unconditionally: they are a filter), then the cursor
        item, conditional on its version."""
        loaded_count, crcs = self._loaded.get(cluster, (0, None))
        count = max(loaded_count, _shard_count(len(cursor.known) + len(cursor.vanished)))
        shards = _split(cursor, count)
        while max(map(len, shards.values())) > MAX_SHARD_BYTES:
            count *= 2  # entries much longer than usual: split further
            shards = _split(cursor, count)
        if count != loaded_count or crcs is None:
            crcs = {}  # a new layout, or nothing loaded (the old one-item cursor): write all
        for n, raw in shards.items():
            crc = zlib.crc32(raw)
            if crcs.get(n) != crc:
                self._db.put_item(
                    TableName=self.table, Item={"pk": _s(_shard_pk(cluster, n)), "data": {"B": zlib.compress(raw, 6)}}
                )
                crcs[n] = crc
        item: dict[str, Any] = {"pk": _s(f"cursor#{cluster}"), "version": _n(cursor.version + 1), "shards": _n(count)}
        if cursor.update_time is not None:
            item["update_time"] = _n(cursor.update_time)
        if cursor.last_sweep is not None:
            item["last_sweep"] = _n(cursor.last_sweep)
        if cursor.top_job_id is not None:
            item["top_job_id"] = _n(cursor.top_job_id)
        try:
            self._db.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR version = :v",
                ExpressionAttributeValues={":v": _n(cursor.version)},
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            self._loaded.pop(cluster, None)  # someone else's cursor now: their shards may differ
            return False
        self._loaded[cluster] = (count, crcs)
        cursor.version += 1
        return True

    def _get_shards(self, cluster: str, count: int) -> dict[int, bytes]:
        """The JSON of each of the ``count`` shards, in order (``{}`` for a missing one)."""
        shards = {n: b"{}" for n in range(count)}
        for item in self._batch_get([{"pk": _s(_shard_pk(cluster, n))} for n in range(count)]):
            shards[int(item["pk"]["S"].rsplit("#", 1)[1])] = zlib.decompress(item["data"]["B"])
        return shards

    # --- jobs
    def get_jobs(self, cluster: str, job_ids: Iterable[int]) -> dict[int, TrackedJob]:
        items = self._batch_get([{"pk": _s(_job_pk(cluster, i))} for i in dict.fromkeys(job_ids)])
        jobs = (_from_item(item) for item in items)
        return {job.job_id: job for job in jobs}

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items of ``keys`` that exist, strongly consistent, 100 keys a call."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            request = {self.table: {"Keys": keys[start : start + BATCH_GET_LIMIT], "ConsistentRead": True}}
            for attempt in range(8):
                answer = self._db.batch_get_item(RequestItems=request)
                found.extend(answer.get("Responses", {}).get(self.table, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 2.0))
            else:
                raise RuntimeError(f"DynamoDB left {len(request[self.table]['Keys'])} keys unprocessed")
        return found

    def save_job(self, job: TrackedJob, expected: TrackedJob | None) -> bool:
        item = _to_item(job)
        if job.final:
            item["expires_at"] = _n(int(time.time()) + self._ttl)
        if expected is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "#s = :s",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {":s": _s(expected.state)},
            }
        try:
            self._db.put_item(TableName=self.table, Item=item, **condition)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    def list_jobs(self, cluster: str) -> list[TrackedJob]:
        jobs = []
        for page in self._db.get_paginator("scan").paginate(
            TableName=self.table,
            FilterExpression="begins_with(pk, :p)",
            ExpressionAttributeValues={":p": _s(f"job#{cluster}#")},
        ):
            jobs.extend(_from_item(i) for i in page.get("Items", []))
        return sorted(jobs, key=lambda j: j.job_id)


def _unpack(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


def _shard_count(entries: int) -> int:
    """The smallest power of two that keeps ``JOBS_PER_SHARD`` entries a shard or fewer."""
    count = 1
    while count * JOBS_PER_SHARD < entries:
        count *= 2
    return count


def _split(cursor: Cursor, count: int) -> dict[int, bytes]:
    """Each shard's JSON: its ``known`` entries, and its ``vanished`` ones as id →
    [missing since, place in the queue] (the queue's order spans shards). A shard's
    bytes stay the same as long as its entries do."""
    known: list[dict[int, str]] = [{} for _ in range(count)]
    vanished: list[dict[int, list[Any]]] = [{} for _ in range(count)]
    for job_id, fp in cursor.known.items():
        known[job_id % count][job_id] = fp
    for pos, (job_id, since) in enumerate(cursor.vanished.items()):
        vanished[job_id % count][job_id] = [since, pos]
    return {
        n: json.dumps({"known": known[n], "vanished": vanished[n]} if vanished[n] else {"known": known[n]},
                      separators=(",", ":")).encode()
        for n in range(count)
    }


def _shard_pk(cluster: str, n: int) -> str:
    return f"known#{cluster}#{n}"


def _job_pk(cluster: str, job_id: int) -> str:
    return f"job#{cluster}#{job_id}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(value)}


_INT_FIELDS = {"job_id", "exit_code", "restarts", "array_job_id", "array_task_id", "attempt", "max_attempts"}


def _to_item(job: TrackedJob) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": _s(_job_pk(job.cluster, job.job_id))}
    for name, value in msgspec.structs.asdict(job).items():
        if value is None or value == "":
            continue
        item[name] = _n(value) if name in _INT_FIELDS else _s(str(value))
    return item


def _from_item(item: Mapping[str, Any]) -> TrackedJob:
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(TrackedJob):
        if f.name in item:
            raw = next(iter(item[f.name].values()))
            values[f.name] = int(raw) if f.name in _INT_FIELDS else raw
    return TrackedJob(**values)
