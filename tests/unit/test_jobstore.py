"""DynamoDBJobStore on moto: lease, cursor compare-and-set, conditional job saves."""
from __future__ import annotations

import time

import boto3
import pytest

from slurm_trigger.jobstore import BATCH_GET_LIMIT, Cursor, DynamoDBJobStore, TrackedJob, create_table

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
    cursor = Cursor(update_time=1795578781, last_sweep=1795578700.5, top_job_id=6386, known={7: "RUNNING|2026-11-25T03:52:50Z"})
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


def _known(n: int, seed: int = 7) -> dict[int, str]:
    """``n`` live jobs as the tracker fingerprints them (random states and submit times)."""
    import random

    rnd = random.Random(seed)
    return {1_000_000 + i: f"{rnd.choice(['RUNNING', 'PENDING'])}|{1795578000 + rnd.randrange(10**6)}" for i in range(n)}


def _puts(store: DynamoDBJobStore) -> list[str]:
    """The pk of every PutItem the store sends from now on."""
    seen: list[str] = []
    store._db.meta.events.register("provide-client-params.dynamodb.PutItem", lambda params, **_: seen.append(params["Item"]["pk"]["S"]))
    return seen


def test_a_cursor_of_120000_jobs_round_trips_in_shards_under_the_item_limit(store: DynamoDBJobStore) -> None:
    known = _known(120_000)  # the one-item cursor failed past ~57,000
    vanished = {1_000_003: None, 1_000_001: 1795578000.5, 1_000_002: None}  # a queue, in this order
    cursor = Cursor(update_time=1795578781, known=known, vanished=vanished)
    assert store.save_cursor("c", cursor)
    loaded = DynamoDBJobStore(store._db, TABLE).load_cursor("c")  # another container
    assert loaded == cursor and list(loaded.vanished) == [1_000_003, 1_000_001, 1_000_002]
    items = store._db.scan(TableName=TABLE)["Items"]
    shards = [i for i in items if i["pk"]["S"].startswith("known#c#")]
    assert len(shards) == 32 and max(len(i["data"]["B"]) for i in shards) < 64 * 1024
    cursor_item = next(i for i in items if i["pk"]["S"] == "cursor#c")
    assert "known" not in cursor_item and cursor_item["shards"] == {"N": "32"}


def test_a_save_writes_only_the_shards_that_changed(store: DynamoDBJobStore) -> None:
    assert store.save_cursor("c", Cursor(known=_known(20_000)))
    cursor = store.load_cursor("c")
    puts = _puts(store)
    cursor.known[1_000_005] = "COMPLETED|1795578000"
    cursor.known.pop(1_000_010)
    cursor.vanished[1_000_021] = None
    assert store.save_cursor("c", cursor)
    shards = {1_000_005 % 8, 1_000_010 % 8, 1_000_021 % 8}
    assert sorted(puts) == sorted([f"known#c#{n}" for n in shards] + ["cursor#c"])
    puts.clear()
    assert store.save_cursor("c", cursor)  # nothing changed: the cursor item only
    assert puts == ["cursor#c"]
    assert store.load_cursor("c") == cursor


def test_shards_double_as_the_cluster_grows_and_an_emptied_one_is_cleared(store: DynamoDBJobStore) -> None:
    cursor = store.load_cursor("c")
    cursor.known = _known(100)
    assert store.save_cursor("c", cursor)
    cursor.known = _known(10_000)  # 4 shards now: every one rewritten
    assert store.save_cursor("c", cursor)
    assert store.load_cursor("c").known == cursor.known
    cursor.known = {1_000_000: "RUNNING|1"}  # never shrinks; the others are emptied
    assert store.save_cursor("c", cursor)
    assert store.load_cursor("c").known == {1_000_000: "RUNNING|1"}


def test_the_old_one_item_cursor_is_read_once_and_moved_to_shards(store: DynamoDBJobStore) -> None:
    import json
    import zlib

    known = {7: "RUNNING|1795578000", 8: "PENDING|"}
    store._db.put_item(TableName=TABLE, Item={  # as the previous release wrote it
        "pk": {"S": "cursor#c"}, "version": {"N": "41"}, "update_time": {"N": "1795578781"},
        "known": {"B": zlib.compress(json.dumps(known).encode())},
        "vanished": {"B": zlib.compress(json.dumps({"9": None}).encode())},
    })
    cursor = store.load_cursor("c")
    assert (cursor.known, cursor.vanished, cursor.version, cursor.update_time) == (known, {9: None}, 41, 1795578781)
    assert store.save_cursor("c", cursor)
    item = store._db.get_item(TableName=TABLE, Key={"pk": {"S": "cursor#c"}})["Item"]
    assert "known" not in item and "vanished" not in item
    assert DynamoDBJobStore(store._db, TABLE).load_cursor("c") == cursor  # no job forgotten


def test_a_lost_compare_and_set_keeps_their_cursor_and_writes_every_shard_next_time(store: DynamoDBJobStore) -> None:
    assert store.save_cursor("c", Cursor(update_time=1, known=_known(10)))
    mine, theirs = store.load_cursor("c"), DynamoDBJobStore(store._db, TABLE)
    other = theirs.load_cursor("c")
    other.update_time = 2
    assert theirs.save_cursor("c", other)
    mine.known[6] = "PENDING|"
    mine.update_time = 3
    assert not store.save_cursor("c", mine)
    again = store.load_cursor("c")
    # Their cursor item stands; the shard is the last writer's (ours): known is a filter,
    # a missing or stale entry costs one read of the job's item, never an event.
    assert (again.update_time, again.version) == (2, 2) and 6 in again.known
    puts = _puts(store)
    store._loaded.pop("c")  # as after the lost compare-and-set, before a load
    assert store.save_cursor("c", again)
    assert sorted(puts) == ["cursor#c", "known#c#0"]
