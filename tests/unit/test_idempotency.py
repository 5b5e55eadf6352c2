"""Claims on idempotency keys, against moto's DynamoDB."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from slurm_trigger.idempotency import (
    ClaimInProgressError,
    ClaimLostError,
    DynamoDBIdempotencyStore,
    create_table,
    idempotency_key,
)
from slurm_trigger.s3events import ObjectRef


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


def done(store, key: str, job_id: int) -> None:
    """Claim, record and complete: what a successful submit leaves."""
    claim = store.claim(key)
    store.record(claim, job_id, {"event": job_id})
    store.complete(claim)


def item(ddb, key: str) -> dict:
    return ddb.get_item(TableName="idem", Key={"id": {"S": key}}, ConsistentRead=True).get("Item")


def test_claim_complete_then_duplicate(store):
    claim = store.claim("k1")
    assert not claim.completed and not claim.taken_over and claim.owner
    store.record(claim, 42, {"event": 1})
    store.complete(claim)
    again = store.claim("k1")
    assert again.completed and again.job_id == 42


def test_concurrent_claim_is_in_progress(store):
    store.claim("k1")
    with pytest.raises(ClaimInProgressError) as info:
        store.claim("k1")
    assert info.value.transient


def test_release_lets_a_retry_submit(store):
    store.release(store.claim("k1"))
    claim = store.claim("k1")
    assert not claim.completed and not claim.taken_over


def test_release_never_deletes_recorded_or_completed(store):
    claim = store.claim("k1")
    store.record(claim, 7, {})
    with pytest.raises(ClaimLostError):
        store.release(claim)  # SUBMITTED: the job exists
    store.complete(claim)
    with pytest.raises(ClaimLostError):
        store.release(claim)
    assert store.claim("k1").job_id == 7


def test_expired_claim_is_taken_over(store, clock):
    store.claim("k1")
    clock.now += 61
    claim = store.claim("k1")
    assert claim.taken_over and not claim.completed


def test_a_takeover_knows_when_the_key_was_first_claimed(store, clock, ddb):
    """What bounds its search for the job: every takeover keeps the first claim's time."""
    first = clock.now
    store.claim("k1")
    for _ in range(3):
        clock.now += 61
        claim = store.claim("k1")
        assert claim.taken_over and claim.claimed_at == first
    assert store.claim("k2").claimed_at is None  # a fresh claim has nothing to search for
    ddb.update_item(TableName="idem", Key={"id": {"S": "k3"}}, UpdateExpression="SET #s = :s, #o = :o, in_progress_until = :u, expires_at = :e",
                    ExpressionAttributeNames={"#s": "status", "#o": "owner"},
                    ExpressionAttributeValues={":s": {"S": "IN_PROGRESS"}, ":o": {"S": "x"}, ":u": {"N": "0"}, ":e": {"N": str(int(clock.now) + 999)}})
    legacy = store.claim("k3")  # written before claimed_at existed: an unbounded search,
    assert legacy.taken_over and legacy.claimed_at is None
    clock.now += 61
    assert store.claim("k3").claimed_at == clock.now - 61  # after which this claim's time bounds it


def test_lease_is_the_callers(store, clock):
    store.claim("k1", lease_seconds=200)
    clock.now += 199
    with pytest.raises(ClaimInProgressError):
        store.claim("k1")
    clock.now += 2
    assert store.claim("k1").taken_over


def test_expire_hands_over_at_once(store):
    store.expire(store.claim("k1"))
    assert store.claim("k1").taken_over


def test_expire_after_complete_changes_nothing(store, ddb):
    claim = store.claim("k1")
    store.record(claim, 9, {})
    store.complete(claim)
    before = item(ddb, "k1")
    with pytest.raises(ClaimLostError):
        store.expire(claim)
    assert item(ddb, "k1") == before and store.claim("k1").job_id == 9


def test_hold_sets_the_lease_from_now(store, clock):
    claim = store.claim("k1", lease_seconds=5)
    store.hold(claim, 100)  # a submit's outcome is unknown: its job may still appear
    clock.now += 99
    with pytest.raises(ClaimInProgressError):
        store.claim("k1")
    clock.now += 2
    assert store.claim("k1").taken_over


def test_recorded_job_is_published_by_the_next_attempt_never_submitted(store, clock):
    """The outbox: after record, a retry gets the job and the event, not a fresh claim."""
    first = store.claim("k1")
    store.record(first, 5, {"detail_type": "Slurm Job Submitted", "detail": {"jobId": 5}})
    with pytest.raises(ClaimInProgressError):
        store.claim("k1")  # the recording attempt is still publishing
    store.expire(first)  # its publish failed: hand over at once
    retry = store.claim("k1")
    assert retry.submitted and retry.job_id == 5 and retry.outbox["detail"] == {"jobId": 5}
    assert retry.owner != first.owner
    with pytest.raises(ClaimInProgressError):
        store.claim("k1")  # one taker at a time
    store.complete(retry)
    assert store.claim("k1").job_id == 5


def test_recorded_job_is_taken_over_when_its_lease_ends(store, clock):
    claim = store.claim("k1", lease_seconds=10)
    store.record(claim, 5, {"x": 1})
    clock.now += 11  # the recording attempt died before publishing
    again = store.claim("k1")
    assert again.submitted and again.outbox == {"x": 1}


@pytest.mark.parametrize("write", ["record", "complete", "release", "hold", "expire"])
def test_late_owner_changes_nothing(store, ddb, clock, write):
    """An attempt whose lease ran out and was taken over: every write it makes is refused
    and leaves the new owner's record exactly as it was."""
    late = store.claim("k1", lease_seconds=10)
    clock.now += 11
    taker = store.claim("k1")
    assert taker.taken_over
    before = item(ddb, "k1")
    args = {"record": (7, {"late": True}), "hold": (1000,)}.get(write, ())
    with pytest.raises(ClaimLostError):
        getattr(store, write)(late, *args)
    assert item(ddb, "k1") == before
    # and the taker's own writes still work
    store.record(taker, 8, {})
    store.complete(taker)
    assert store.claim("k1").job_id == 8


@pytest.mark.parametrize("write", ["record", "complete", "release", "hold", "expire"])
def test_late_owner_of_a_recorded_job_changes_nothing(store, ddb, clock, write):
    late = store.claim("k1", lease_seconds=10)
    store.record(late, 5, {"e": 5})
    clock.now += 11
    taker = store.claim("k1")
    assert taker.submitted
    before = item(ddb, "k1")
    args = {"record": (6, {}), "hold": (1000,)}.get(write, ())
    with pytest.raises(ClaimLostError):
        getattr(store, write)(late, *args)
    assert item(ddb, "k1") == before


def test_late_owner_after_release_and_new_claim(store, clock):
    late = store.claim("k1", lease_seconds=10)
    clock.now += 11
    taker = store.claim("k1")
    store.release(taker)  # the taker asked Slurm, found nothing, its submit was refused
    fresh = store.claim("k1")
    with pytest.raises(ClaimLostError):
        store.record(late, 3, {})
    store.record(fresh, 4, {})


def test_record_past_its_ttl_counts_as_absent(store, clock):
    done(store, "k1", 9)
    clock.now += 86400 + 1  # DynamoDB deletes TTL-expired items late; the claim must not wait
    claim = store.claim("k1")
    assert not claim.completed and not claim.taken_over


def test_claims_race_across_processes(tmp_path):
    """Conditional writes are atomic in DynamoDB; moto's server mode (one thread serving
    separate client processes) shows it: of 4 processes claiming one key, one wins."""
    import subprocess
    import sys

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url,
                              aws_access_key_id="x", aws_secret_access_key="x")
        create_table(client, "idem")
        code = (
            "import boto3, sys\n"
            "from slurm_trigger.idempotency import DynamoDBIdempotencyStore, ClaimInProgressError\n"
            f"c = boto3.client('dynamodb', region_name='us-east-1', endpoint_url='{url}', "
            "aws_access_key_id='x', aws_secret_access_key='x')\n"
            "try:\n    DynamoDBIdempotencyStore(c, 'idem').claim('race'); print('won')\n"
            "except ClaimInProgressError:\n    print('lost')\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
        results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
        assert results == ["lost"] * 3 + ["won"]
    finally:
        server.stop()


def test_table_has_ttl(ddb):
    ttl = ddb.describe_time_to_live(TableName="idem")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
