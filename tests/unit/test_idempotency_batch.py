"""The batch writes of the idempotency store (one transaction for a batch's keys) give
each key the answer its single write gives, against moto's DynamoDB; and the calls they
make, counted."""
from __future__ import annotations

from typing import Any

import pytest

from slurm_trigger.idempotency import COMPLETED, FRESH, SUBMITTED, TAKEN_OVER, ClaimInProgressError, ClaimLostError
from test_idempotency import Clock, clock, ddb, store  # noqa: F401 - fixtures


@pytest.fixture
def calls(ddb) -> list[str]:  # noqa: F811
    seen: list[str] = []
    ddb.meta.events.register("before-call.*.*", lambda event_name, **_: seen.append(event_name.split(".")[-1]))
    return seen


def states(answers: list[Any]) -> list[str]:
    return [type(a).__name__ if isinstance(a, Exception) else a.state for a in answers]


def test_fresh_keys_are_one_transaction_and_every_move_after_it_too(store, calls):  # noqa: F811
    claims = store.claim_many([f"k{i}" for i in range(10)], 120)
    assert states(claims) == [FRESH] * 10 and len({c.owner for c in claims}) == 10
    assert store.record_many([(c, 100 + i, {"n": i}) for i, c in enumerate(claims)]) == [None] * 10
    assert store.complete_many(claims) == [None] * 10
    assert calls == ["TransactWriteItems"] * 3
    assert [store.claim(f"k{i}").job_id for i in range(10)] == [100 + i for i in range(10)]


def test_each_key_gets_what_its_single_claim_says(store, clock, calls):  # noqa: F811
    done = store.claim("done")
    store.record(done, 7, {})
    store.complete(done)
    store.claim("busy")  # another attempt, right now
    store.claim("silent", lease_seconds=5)  # an attempt that ended without a word
    unpublished = store.claim("unpublished", lease_seconds=5)
    store.record(unpublished, 8, {"detail_type": "x", "detail": {}})
    clock.now += 10
    calls.clear()
    claims = store.claim_many(["new1", "done", "busy", "silent", "unpublished", "new2"], 60)
    assert states(claims) == [FRESH, COMPLETED, "ClaimInProgressError", TAKEN_OVER, SUBMITTED, FRESH]
    assert claims[1].job_id == 7 and claims[4].job_id == 8 and claims[4].outbox == {"detail_type": "x", "detail": {}}
    # the cancelled transaction, then alone: busy, silent (+ its takeover) and unpublished
    # (+ its takeover), then the two fresh keys again in a transaction of their own
    assert calls == ["TransactWriteItems", "PutItem", "PutItem", "UpdateItem", "PutItem", "UpdateItem", "TransactWriteItems"]
    assert isinstance(claims[2], ClaimInProgressError)


def test_a_late_owner_is_refused_per_item_and_the_others_written(store, clock):  # noqa: F811
    claims = store.claim_many(["a", "b", "c"], 5)
    clock.now += 10
    taker = store.claim("b")  # b's lease ran out: taken over
    assert taker.taken_over
    answers = store.record_many([(c, 1, {}) for c in claims])
    assert [type(a).__name__ if a else None for a in answers] == [None, "ClaimLostError", None]
    assert isinstance(answers[1], ClaimLostError)
    store.record(taker, 2, {})
    assert [type(a).__name__ if a else None for a in store.complete_many(claims)] == [None, "ClaimLostError", None]
    store.complete(taker)
    assert [store.claim(k).job_id for k in "abc"] == [1, 2, 1]


def test_more_than_a_transaction_holds(store, calls):  # noqa: F811
    claims = store.claim_many([f"k{i}" for i in range(150)], 60)
    assert states(claims) == [FRESH] * 150 and calls == ["TransactWriteItems"] * 2
