"""DynamoDBJobStore on moto: lease, cursor compare-and-set, conditional job saves."""
from __future__ import annotations

import time

import boto3
import pytest

from chalicelib.jobstore import BATCH_GET_LIMIT, Cursor, DynamoDBJobStore, TrackedJob, create_table

TABLE = "jobs"


@pytest.fixture
def store(aws) -> DynamoDBJobStore:
    db = boto3.client("dynamodb", region_name="us-east-1")
    create_table(db, TABLE)
    return DynamoDBJobStore(db, TABLE)


def test_table_has_ttl_on_expires_at(store: DynamoDBJobStore) -> None:
    ttl = store._db.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"


def test_lease_keeps_a_second_owner_out_until_released_or_expired(store: DynamoDBJobStore) -> None:
    assert store.acquire_lease("c", "a", 60)
    assert not store.acquire_lease("c", "b", 60)
    assert store.acquire_lease("c", "a", 60)  # the holder may renew
    assert store.acquire_lease("other", "b", 60)  # per cluster
    store.release_lease("c", "b")  # not b's: no effect
    assert not store.acquire_lease("c", "b", 60)
    store.release_lease("c", "a")
    assert store.acquire_lease("c", "b", 0.01)
    time.sleep(0.05)
    assert store.acquire_lease("c", "a", 60)  # b's lease expired


def test_cursor_round_trip_and_compare_and_set(store: DynamoDBJobStore) -> None:
    empty = store.load_cursor("c")
    assert empty == Cursor()
    cursor = Cursor(update_time=1795578781, last_sweep=1795578700.5, known={7: "RUNNING|2026-11-25T03:52:50Z"})
    assert store.save_cursor("c", cursor)
    assert cursor.version == 1
    loaded = store.load_cursor("c")
    assert loaded == cursor
    stale = Cursor(version=0)
    assert not store.save_cursor("c", stale)  # someone saved since version 0
    loaded.known[8] = "PENDING|"
    assert store.save_cursor("c", loaded)
    assert store.load_cursor("c").known == {7: "RUNNING|2026-11-25T03:52:50Z", 8: "PENDING|"}


def test_save_job_is_conditional_on_the_state_it_replaces(store: DynamoDBJobStore) -> None:
    pending = TrackedJob("c", 1, "PENDING", name="j", bucket="b", key="k/x.csv", pipeline="p", exit_code=None)
    assert store.save_job(pending, None)
    assert not store.save_job(pending, None)  # already there
    running = TrackedJob("c", 1, "RUNNING", previous_state="PENDING")
    assert store.save_job(running, pending)
    assert not store.save_job(TrackedJob("c", 1, "COMPLETED"), pending)  # expected PENDING, is RUNNING
    done = TrackedJob("c", 1, "FAILED", previous_state="RUNNING", exit_code=3)
    assert store.save_job(done, running)
    assert store.get_jobs("c", [1]) == {1: done}
    item = store._db.get_item(TableName=TABLE, Key={"pk": {"S": "job#c#1"}})["Item"]
    assert int(item["expires_at"]["N"]) > time.time() + 29 * 86400


def test_get_jobs_in_batches_of_100(store: DynamoDBJobStore) -> None:
    for i in range(BATCH_GET_LIMIT + 30):
        store.save_job(TrackedJob("c", i, "RUNNING"), None)
    calls = []
    real = store._db.batch_get_item

    def counting(**kw):
        calls.append(len(kw["RequestItems"][TABLE]["Keys"]))
        return real(**kw)

    store._db.batch_get_item = counting
    found = store.get_jobs("c", list(range(BATCH_GET_LIMIT + 40)))
    assert sorted(found) == list(range(BATCH_GET_LIMIT + 30))
    assert calls == [100, 40]
    assert store.get_jobs("c", []) == {}


def test_list_jobs_only_this_cluster(store: DynamoDBJobStore) -> None:
    store.save_job(TrackedJob("c", 2, "RUNNING", bucket="b", key="k"), None)
    store.save_job(TrackedJob("c", 1, "PENDING"), None)
    store.save_job(TrackedJob("d", 1, "PENDING"), None)
    store.save_cursor("c", Cursor())
    store.acquire_lease("c", "a", 10)
    jobs = store.list_jobs("c")
    assert [j.job_id for j in jobs] == [1, 2]
    assert jobs[1].s3_uri == "s3://b/k"


def test_a_cursor_too_large_for_one_item_says_so(store: DynamoDBJobStore) -> None:
    import random

    rnd = random.Random(7)
    known = {1_000_000 + i: f"{rnd.choice(['RUNNING', 'PENDING'])}|{1795578000 + rnd.randrange(10**6)}" for i in range(90_000)}
    with pytest.raises(ValueError, match="do not fit"):
        store.save_cursor("c", Cursor(known=known))
