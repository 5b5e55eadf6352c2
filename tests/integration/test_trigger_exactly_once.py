"""One job per object version and pipeline whatever the timing, on the REAL local Slurm
(every version the local clusters serve) with moto for AWS. Jobs are counted in Slurm, by
the idempotency key in their comment, never in our table.

* Publishing fails after Slurm accepted the job, and the retry comes after the job ended
  and left /jobs (the local clusters keep ended jobs MinJobAge=120 s): the retry
  publishes the recorded job and submits nothing.
* Two deliveries race a submit that slurmctld (paused with SIGSTOP) answers too late:
  the second delivery does not even ask Slurm before the first submit's job can exist.
* A claim taken over while its first owner is still running: the late owner's writes
  fail and change nothing.
* 22.05's 500 + 5005 on submit: never POSTed again on the spot.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

from slurm_trigger.eventbus import EventBusError
from slurm_trigger.idempotency import ClaimLostError, idempotency_key
from slurm_trigger.slurm.dialects import DIALECTS
from slurm_trigger.slurm.errors import SlurmError, SlurmNotFoundError
from slurm_trigger.trigger import build_trigger
from conftest import STATE, SlurmTarget, _health, in_ci  # noqa: I001 - tests/ is on the path
from test_trigger import TABLE, TRUE_PIPELINE, _clients, make_world, obj  # noqa: I001 - same folder

pytestmark = pytest.mark.real_slurm

SUBMITTED = "Slurm Job Submitted"


class Outage:
    """An events client whose PutEvents refuses every entry while ``down``, as
    EventBridge does when throttling or failing (HTTP 200, ``FailedEntryCount``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.down:
            failed = {"ErrorCode": "InternalFailure", "ErrorMessage": "outage"}
            return {"FailedEntryCount": len(Entries), "Entries": [failed for _ in Entries]}
        return self.inner.put_events(Entries=Entries)


def min_job_age(target: SlurmTarget) -> int:
    """The MinJobAge the cluster runs with (its generated slurm.conf), 300 if unset."""
    conf = target.host_path("/etc/slurm/slurm.conf").read_text()
    found = re.search(r"^MinJobAge=(\d+)", conf, re.MULTILINE)
    return int(found.group(1)) if found else 300


def targets(clusters: dict[str, dict[str, Any]]) -> list[SlurmTarget]:
    """Every (cluster, version) the local clusters serve and this client speaks; a
    cluster that does not answer fails the test under CI and is left out elsewhere."""
    out = []
    for c in clusters.values():
        problem = _health(c)
        if problem:
            if in_ci():
                pytest.fail(f"CI=true and cluster {c['name']} is not usable: {problem}")
            print(f"left out: {problem}")
            continue
        for version in c.get("versions") or ():
            if version in DIALECTS:
                out.append(SlurmTarget(name=c["name"], url=c["url"].rstrip("/"), version=version, user=c["user"],
                                       cluster=c.get("cluster", c["name"]), root=c.get("root") or "/",
                                       workdir=c.get("workdir") or "/tmp/slurm-trigger-jobs"))
    return out


def gone(client: Any, job_id: int) -> bool:
    """The job has left /jobs; a slurmrestd restarted meanwhile (the clusters are
    shared) is asked again later."""
    try:
        client.get_job(job_id)
    except SlurmNotFoundError:
        return True
    except SlurmError as exc:
        assert exc.transient, exc
    return False


@pytest.mark.timeout(900)
def test_publish_fails_and_the_retry_comes_after_the_job_left_slurm(aws, slurm_clusters, tmp_path):
    """All versions at once, so the wait for slurmctld to purge the jobs is paid once
    (MinJobAge 120 s in scripts/local-slurm: about 3 minutes). A cluster running with a
    MinJobAge over 300 s is waited for only until its job ended."""
    every = targets(slurm_clusters)
    assert {"v0.0.38", "v0.0.40", "v0.0.41", "v0.0.42"} <= {t.version for t in every}, every
    cases = []
    for i, target in enumerate(every):
        world = make_world(target, tmp_path / str(i), TRUE_PIPELINE, suffix=f"-{i}")
        outage = Outage(boto3.client("events"))
        trigger = build_trigger(world.settings, **{**_clients(), "events_client": outage})
        ref = obj(f"many/left-{uuid.uuid4().hex[:8]}")
        cases.append({"target": target, "world": world, "trigger": trigger, "outage": outage, "ref": ref,
                      "key": idempotency_key("trivial", ref), "purged": min_job_age(target) <= 300})
    # 1. Slurm accepts each job, then EventBridge refuses "Slurm Job Submitted"
    for case in cases:
        case["outage"].down = True
        with pytest.raises(EventBusError):
            case["trigger"].handle(case["ref"])
        case["outage"].down = False
        [job] = case["world"].jobs_with(case["key"])
        case["job"] = job.job_id
    # 2. the jobs end, and slurmctld purges them (after MinJobAge, in its once-a-minute
    # sweep) where MinJobAge is short enough to wait for
    waited = time.monotonic()
    limit = max([min_job_age(c["target"]) for c in cases if c["purged"]] or [0]) + 150
    for case in cases:
        assert case["world"].wait_final(case["job"]).is_final
    while not all(gone(c["world"].trigger.client, c["job"]) for c in cases if c["purged"]):
        assert time.monotonic() - waited < limit, "slurmctld did not purge the ended jobs"
        time.sleep(5)
    # 3. the retry (another container) publishes the recorded job and submits nothing
    counts = {}
    for case in cases:
        world, key, job_id = case["world"], case["key"], case["job"]
        name = f"{case['target'].name}/{case['target'].version}"
        [outcome] = world.refetch_trigger().handle(case["ref"])
        assert (outcome.status, outcome.job_id) == ("adopted", job_id), name
        # in Slurm: the one job (gone from /jobs where purged; still in slurmdbd where
        # accounting is served), and no second one
        in_slurm = [j.job_id for j in world.jobs_with(key)]
        seen = not case["purged"] or slurm_clusters[case["target"].name].get("accounting")
        assert in_slurm == ([job_id] if seen else []), (name, in_slurm)
        counts[name] = 1 + len([j for j in in_slurm if j != job_id])
        submitted = [e for e in world.events() if e["detail-type"] == SUBMITTED]
        assert [(e["detail"]["jobId"], e["detail"]["eventId"]) for e in submitted] == [(job_id, key)], name
        assert world.refetch_trigger().handle(case["ref"])[0].status == "duplicate"
    print(f"jobs per object: {counts}; waited {time.monotonic() - waited:.0f} s for the purge; "
          f"purged: {[n for n, c in zip(counts, cases) if c['purged']]}")
    assert set(counts.values()) == {1}


# --------------------------------------------------------------------------- SIGSTOP race


@contextmanager
def paused_slurmctld(target: SlurmTarget) -> Iterator[list[float]]:
    """slurmctld stopped (SIGSTOP) for the body, holding scripts/local-slurm's lock so no
    concurrent `local-slurm start` restarts it meanwhile; always continued. Yields a
    list that gets the time it was continued."""
    pidfile = Path(target.root or "/") / "run" / "slurmctld.pid"
    pid = int(pidfile.read_text().strip())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "slurmctld"
    resumed: list[float] = []
    with open(STATE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.kill(pid, signal.SIGSTOP)
        try:
            yield resumed
        finally:
            os.kill(pid, signal.SIGCONT)
            resumed.append(time.time())


def test_two_deliveries_race_a_submit_slurmctld_answers_too_late(aws, slurm_target, tmp_path):
    """The first delivery's POST reaches a paused slurmctld and times out (its outcome
    unknown); a second delivery keeps coming meanwhile. The claim is held for the settle
    time, so the second one asks Slurm only once the job exists, and adopts it."""
    world = make_world(slurm_target, tmp_path, TRUE_PIPELINE)
    settings = replace(world.settings, read_timeout=2, submit_settle_seconds=4)
    first, second = (build_trigger(settings, **_clients()) for _ in range(2))
    ref = obj(f"many/race-{uuid.uuid4().hex[:8]}")
    key = idempotency_key("trivial", ref)
    posted = threading.Event()
    real_submit = first.client.submit

    def submit(job: Any) -> Any:
        posted.set()
        return real_submit(job)

    first.client.submit = submit  # type: ignore[method-assign]
    asked: list[float] = []
    real_find = second.client.find_jobs_by_comment

    def find(substring: str, **kw: Any) -> Any:
        asked.append(time.time())
        return real_find(substring, **kw)

    second.client.find_jobs_by_comment = find  # type: ignore[method-assign]
    results: dict[str, Any] = {}

    def deliver_first() -> None:
        try:
            results["first"] = first.handle(ref)
        except Exception as exc:  # noqa: BLE001 - the lost answer is expected
            results["first"] = exc

    def deliver_second_until_done() -> None:
        limit = time.monotonic() + 90
        while time.monotonic() < limit:
            try:
                results["second"] = second.handle(ref)
                return
            except Exception as exc:  # noqa: BLE001 - transient: SQS would deliver again
                assert getattr(exc, "transient", False), exc
                results.setdefault("retries", 0)
                results["retries"] += 1
                time.sleep(0.3)

    with paused_slurmctld(slurm_target) as resumed:
        a = threading.Thread(target=deliver_first)
        a.start()
        assert posted.wait(10)
        b = threading.Thread(target=deliver_second_until_done)
        b.start()
        a.join(10)  # the POST times out (2 s) while slurmctld is stopped
        time.sleep(0.5)
    b.join(120)
    assert isinstance(results["first"], SlurmError) and results["first"].maybe_submitted, results
    [outcome] = results["second"]
    in_slurm = world.jobs_with(key)
    assert len(in_slurm) == 1, in_slurm  # exactly one job, counted in Slurm
    assert (outcome.status, outcome.job_id) == ("adopted", in_slurm[0].job_id)
    assert asked and min(asked) >= resumed[0], "Slurm was asked before the held claim ran out"
    assert results["retries"] >= 3  # the second delivery kept trying while the claim was held
    print(f"{slurm_target.version}: 1 job; second delivery refused {results['retries']} times")


# --------------------------------------------------------------------------- the late owner


class SpyStore:
    """The store as it is, keeping the claims and write outcomes of its user."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.claims: list[Any] = []
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def claim(self, *args: Any) -> Any:
        self.claims.append(self.store.claim(*args))
        return self.claims[-1]

    def record(self, *args: Any) -> None:
        try:
            self.store.record(*args)
        except ClaimLostError:
            self.refused.append("record")
            raise


def item(key: str) -> dict[str, Any]:
    return boto3.client("dynamodb").get_item(TableName=TABLE, Key={"id": {"S": key}}, ConsistentRead=True)["Item"]


def test_a_late_owner_changes_nothing(aws, slurm_target, tmp_path):
    """The first attempt's submit outlives its claim's lease; a second delivery takes the
    claim over, finds the job by its comment, records and publishes it. The first attempt
    then comes back with the job id: its write is refused, it reports "superseded", and
    every other write it could make is refused too and changes nothing."""
    world = make_world(slurm_target, tmp_path, TRUE_PIPELINE)
    # Only the late attempt has the short lease (its read timeout bounds it); the taker
    # keeps the default timeout, as its accounting lookup may take longer than 1 s.
    late = build_trigger(replace(world.settings, read_timeout=1, submit_settle_seconds=1), **_clients())
    taker = build_trigger(world.settings, **_clients())
    late.store = SpyStore(late.store)
    ref = obj(f"many/late-{uuid.uuid4().hex[:8]}")
    key = idempotency_key("trivial", ref)
    real_submit = late.client.submit
    seen: dict[str, Any] = {}

    def slow_submit(job: Any) -> Any:
        result = real_submit(job)  # Slurm made the job; its answer is slow to come back
        # past the lease, which ends at the deadline + settle (read timeout 1 s + 1 s)
        time.sleep(max(0.0, deadline + 2 + 0.5 - time.time()))
        seen["taker"] = taker.handle(ref)
        seen["after_taker"] = item(key)
        return result

    late.client.submit = slow_submit  # type: ignore[method-assign]
    deadline = time.time() + 3  # ample to reach the POST on a loaded machine
    [outcome] = late.handle(ref, deadline=deadline)
    [taken] = seen["taker"]
    in_slurm = world.jobs_with(key)
    assert len(in_slurm) == 1, in_slurm  # one job, counted in Slurm
    assert (taken.status, taken.job_id) == ("adopted", in_slurm[0].job_id)
    assert (outcome.status, outcome.job_id) == ("superseded", in_slurm[0].job_id)
    assert late.store.refused == ["record"]
    assert item(key) == seen["after_taker"] and item(key)["status"]["S"] == "COMPLETED"
    [claim] = late.store.claims
    for write, args in [("record", (1, {})), ("complete", ()), ("release", ()), ("hold", (600,)), ("expire", ())]:
        with pytest.raises(ClaimLostError):
            getattr(late.store.store, write)(claim, *args)
    assert item(key) == seen["after_taker"]
    submitted = [e for e in world.events() if e["detail-type"] == SUBMITTED]
    assert [e["detail"]["jobId"] for e in submitted] == [in_slurm[0].job_id]
    assert late.handle(ref)[0].status == "duplicate"


# --------------------------------------------------------------------------- 22.05's 5005


def test_2205_bad_token_on_submit_is_held_not_posted_again(aws, slurm_clusters, tmp_path):
    """22.05 answers a refused token on submit with 500 + 5005, which a broken socket after
    slurmctld got the RPC also gives. The trigger does not POST again with a fresh token:
    it holds the claim, and the retry after the settle time asks Slurm, then submits."""
    [host] = [t for t in targets(slurm_clusters) if t.version == "v0.0.38"]
    world = make_world(host, tmp_path, TRUE_PIPELINE)
    secrets = boto3.client("secretsmanager")
    secrets.put_secret_value(SecretId=world.settings.secret_id, SecretString="not-a-valid-token")
    trigger = build_trigger(replace(world.settings, read_timeout=2, submit_settle_seconds=1), **_clients())
    trigger.client._auth.token()  # noqa: SLF001 - the container holds the old token...
    secrets.put_secret_value(SecretId=world.settings.secret_id, SecretString=host.token())  # ...rotated since
    ref = obj(f"many/5005-{uuid.uuid4().hex[:8]}")
    key = idempotency_key("trivial", ref)
    with pytest.raises(SlurmError) as info:
        trigger.handle(ref)
    assert info.value.maybe_submitted and info.value.status == 500
    assert world.jobs_with(key) == []  # refused, and not POSTed again on the spot
    time.sleep(3.5)  # the held claim: read timeout + settle
    assert trigger.handle(ref)[0].status == "submitted"  # asked Slurm first, then submitted
    assert len(world.jobs_with(key)) == 1
    print(json.dumps({"v0.0.38 5005": {"jobs after the first attempt": 0, "after the retry": 1}}))
