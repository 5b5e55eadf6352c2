"""Claims on idempotency keys, against moto's DynamoDB."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from chalicelib.idempotency import (
    ClaimInProgressError,
    DynamoDBIdempotencyStore,
    create_table,
    idempotency_key,
)
from chalicelib.s3events import ObjectRef


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ddb():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "idem")
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(ddb, clock) -> DynamoDBIdempotencyStore:
    return DynamoDBIdempotencyStore(ddb, "idem", ttl_days=1, in_progress_seconds=60, clock=clock)


def test_key_depends_on_version_or_etag_and_sequencer():
    base = ObjectRef("b", "reads/a.fastq.gz", etag="e1", sequencer="s1")
    assert idempotency_key("p", base) == idempotency_key("p", base)
    others = [
        ObjectRef("b", "reads/a.fastq.gz", etag="e2", sequencer="s1"),
        ObjectRef("b", "reads/a.fastq.gz", etag="e1", sequencer="s2"),
        ObjectRef("b2", "reads/a.fastq.gz", etag="e1", sequencer="s1"),
        ObjectRef("b", "reads/b.fastq.gz", etag="e1", sequencer="s1"),
    ]
    keys = {idempotency_key("p", r) for r in [base, *others]} | {idempotency_key("q", base)}
    assert len(keys) == 6
    versioned = ObjectRef("b", "k", etag="e1", sequencer="s1", version_id="v1")
    # versioned buckets: the version id alone decides, redeliveries may differ in sequencer
    assert idempotency_key("p", versioned) == idempotency_key("p", ObjectRef("b", "k", version_id="v1"))
    assert idempotency_key("p", versioned) != idempotency_key("p", ObjectRef("b", "k", version_id="v2"))


def test_key_holds_nothing_of_the_object_key():
    key = idempotency_key("p", ObjectRef("b", "$(rm -rf /)", version_id="v"))
    assert key.startswith("st-") and len(key) == 43 and key[3:].isalnum()


def test_claim_complete_then_duplicate(store):
    claim = store.claim("k1")
    assert not claim.completed and not claim.taken_over
    store.complete("k1", 42)
    again = store.claim("k1")
    assert again.completed and again.job_id == 42


def test_concurrent_claim_is_in_progress(store):
    store.claim("k1")
    with pytest.raises(ClaimInProgressError) as info:
        store.claim("k1")
    assert info.value.transient


def test_release_lets_a_retry_submit(store):
    store.claim("k1")
    store.release("k1")
    claim = store.claim("k1")
    assert not claim.completed and not claim.taken_over


def test_release_never_deletes_completed(store):
    store.claim("k1")
    store.complete("k1", 7)
    store.release("k1")
    assert store.claim("k1").job_id == 7


def test_expired_claim_is_taken_over(store, clock):
    store.claim("k1")
    clock.now += 61
    claim = store.claim("k1")
    assert claim.taken_over and not claim.completed


def test_expire_hands_over_at_once(store):
    store.claim("k1")
    store.expire("k1")
    assert store.claim("k1").taken_over


def test_expire_after_complete_changes_nothing(store):
    store.claim("k1")
    store.complete("k1", 9)
    store.expire("k1")
    assert store.claim("k1").job_id == 9


def test_record_past_its_ttl_counts_as_absent(store, clock):
    store.claim("k1")
    store.complete("k1", 9)
    clock.now += 86400 + 1  # DynamoDB deletes TTL-expired items late; the claim must not wait
    claim = store.claim("k1")
    assert not claim.completed and not claim.taken_over


def test_table_has_ttl(ddb):
    ttl = ddb.describe_time_to_live(TableName="idem")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
