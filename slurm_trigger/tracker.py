"""One poll of the job tracker: list what changed in Slurm, diff, publish, then save.

Order is what makes the guarantees (docs/tracker.md): a job's new state is saved only
after EventBridge accepted its event, so a crash in between publishes it again (same
``eventId``) instead of losing it; a lease keeps two polls of the same cluster apart,
and every save is conditional on the state it replaces.

Slurm answers ``GET /jobs?update_time=`` with every job as soon as any job changed, so
the page is diffed in memory against the cursor's ``known`` map first: the store is
read and written for the jobs whose state moved, not for every job of the cluster.
The next ``update_time`` is Slurm's own clock from that answer. Where slurmctld serves
``/jobs/state`` (v0.0.41+), a steady poll asks it instead (ids and states, ~1% of the
bytes) and fetches the details of only the jobs it shows new or moved. Every ``sweep_seconds``
the poll lists all jobs without ``update_time``; each tracked unfinished job no longer
listed joins the cursor's ``vanished`` queue, which every poll works through a bounded
share of: by id in slurmctld, then in accounting (slurmdbd) where the cluster has it;
a job neither knows becomes ``LOST`` (final). A requeued job (same id, a restart more,
a new submit time) is followed, not taken for a new job. docs/tracker.md says why.
"""
from __future__ import annotations

import gc
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import AbstractSet, Any, Iterator, Protocol

import msgspec
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from slurm_trigger import provenance
from slurm_trigger.eventbus import Event, EventBus, EventBusError, FailedEntry
from slurm_trigger.jobevents import DETAIL_TYPE, POLLED, event_id, job_resources
from slurm_trigger.jobstore import LOST, TRACKER_FINAL_STATES, Cursor, DynamoDBJobStore, JobStore, TrackedJob
from slurm_trigger.observability import SERVICE, logger, tracer
from slurm_trigger.provenance import MARKER, Source
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from slurm_trigger.slurm.client import details_budget
from slurm_trigger.slurm.dialects import server_time
from slurm_trigger.slurm.errors import SlurmError, SlurmNotFoundError
from slurm_trigger.slurm.models import Job, JobKey, JobsPage, job_key

LOST_REASON = "job no longer known to Slurm"
REQUEUED = "REQUEUED"  # in stateFlags of the event of a requeue (Slurm itself shows no such flag)
COMPLETING = "COMPLETING"
# States a job enters again after ``scontrol suspend``/``resume``: their eventId names the suspend time
_SUSPENDABLE = frozenset({"RUNNING", "SUSPENDED"})


class SlurmJobs(Protocol):
    """The part of ``SlurmClient`` the tracker uses. ``diag``, ``accounting``,
    ``get_accounting_job`` and ``serves_job_states`` are read with ``getattr``: a client
    without them works, with the cursor from ``last_update`` only, ``LOST`` instead of
    accounting, and every poll a listing of ``/jobs``."""

    def list_jobs(self, update_time: int | None = None) -> JobsPage: ...

    def get_job(self, job_id: int) -> Job: ...

    @property
    def serves_job_states(self) -> bool:
        """``job_states`` can be asked (v0.0.41+); read with ``getattr`` too."""

    def job_states(self, job_ids: Any = None) -> dict[int, str]:
        """Job id → base state of every job (``GET /jobs/state``)."""

    def get_jobs(self, job_ids: Any) -> JobsPage:
        """The jobs of these ids slurmctld holds, one ``GET /job/{id}`` each."""

    def diag(self) -> dict[str, Any]: ...

    @property
    def accounting(self) -> bool:
        """The server serves ``/slurmdb/`` (slurmdbd behind it)."""

    def get_accounting_job(self, job_id: int) -> Job | None:
        """The job as accounting knows it; None when it does not (yet)."""


@dataclass
class PollResult:
    """What one poll did; the scheduled handler turns it into metrics, the CLI prints it."""

    cluster: str
    skipped: bool = False
    sweep: bool = False
    changed: bool = False
    listing: str = ""  # how Slurm was asked: "jobs" (GET /jobs) or "states" (/jobs/state, then details)
    jobs_seen: int = 0
    tracked_seen: int = 0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    published: int = 0
    conflicts: int = 0
    lost: int = 0
    deferred: int = 0
    retries_pending: int = 0  # failed jobs whose retry the next poll makes (not saved)
    looked_up: int = 0
    to_look_up: int = 0
    pending: int = 0
    running: int = 0
    duration_ms: float = 0.0

    def by_state(self) -> Counter[str]:
        return Counter(t["state"] for t in self.transitions)


# Seconds before the last sweep that a sweep asks accounting from (jobs no poll saw):
# slurmdbd learns of an end about a second after slurmctld, and clocks differ a little.
UNSEEN_MARGIN = 300

# Jobs diffed, published and saved together: bounds a poll's memory, whatever the
# number of jobs that changed (a first poll over 100,000 jobs is 200 chunks).
CHUNK = 500

# A listed job whose state differs from ``known``: parsed, its source, its new fingerprint.
_Moved = tuple[Job, Source | None, str]


@dataclass
class _Change:
    """A transition about to be published: the job as Slurm shows it now, its event,
    and its ``known`` entry (None when the job left slurmctld: LOST or accounting's)."""

    new: TrackedJob
    old: TrackedJob | None
    event: Event
    fingerprint: str | None


class Tracker:
    """Poll one cluster.

    ``sweep_seconds``: how often a poll lists every job and queues the vanished ones.
    ``lease_seconds``: longer than any poll (the Lambda timeout). ``max_changes``:
    jobs diffed against the store per poll at most (0: no limit), so a first poll over
    a busy cluster fits in one invocation; the others wait for the next poll.
    ``max_lookups``: vanished jobs looked up per poll at most (0: no limit); lookups
    also stop once a third of the lease has passed or at the first Slurm error, and
    the next poll goes on where this one stopped. ``lost_after``: seconds accounting
    may take to know a job slurmctld forgot (slurmdbd lags, or queues its records
    while down) before the job is ``LOST``.
    """

    def __init__(
        self,
        client: SlurmJobs,
        store: JobStore,
        bus: EventBus,
        cluster: str,
        *,
        track_all: bool = False,
        sweep_seconds: float = 600,
        lease_seconds: float = 300,
        max_changes: int = 2000,
        max_lookups: int = 200,
        max_details: int | None = None,
        lost_after: float = 600,
        owner: str | None = None,
        clock: Any = time.time,
        retry: Any = None,  # a slurm_trigger.retry.Retrier: pipelines whose failed jobs are retried
    ) -> None:
        self.client = client
        self.store = store
        self.bus = bus
        self.cluster = cluster
        self.track_all = track_all
        self.sweep_seconds = sweep_seconds
        self.lease_seconds = lease_seconds
        self.max_changes = max_changes
        self.max_lookups = max_lookups
        self.max_details = max_details
        self.lost_after = lost_after
        self.owner = owner or uuid.uuid4().hex
        self._clock = clock
        self.retry = retry

    @tracer.capture_method
    def poll(self, *, sweep: bool | None = None, lease_seconds: float | None = None) -> PollResult:
        """Run one poll; ``sweep`` forces (True) or forbids (False) the full listing;
        ``lease_seconds`` overrides the lease (the handler passes the Lambda's time left).

        Returns quietly with ``skipped`` when another poll holds the lease. Raises
        ``EventBusError`` after saving what was published when some events were
        refused (their jobs are published again next poll), and ``SlurmError`` when
        Slurm cannot be listed (nothing saved).
        """
        began = time.perf_counter()
        result = PollResult(self.cluster)
        lease = lease_seconds or self.lease_seconds
        if not self.store.acquire_lease(self.cluster, self.owner, lease):
            logger.info("another poll holds the lease; skipping", extra={"cluster": self.cluster})
            result.skipped = True
            return result
        try:
            with _gc_paused():
                self._poll(result, sweep, lookups_until=self._clock() + lease / 3)
        finally:
            self.store.release_lease(self.cluster, self.owner)
            result.duration_ms = (time.perf_counter() - began) * 1000
        return result

    def _poll(self, result: PollResult, sweep: bool | None, lookups_until: float) -> None:
        """The steps of one poll, in the order that makes the guarantees."""
        cursor = self.store.load_cursor(self.cluster)
        now = self._clock()
        result.sweep = self._wants_sweep(cursor, now) if sweep is None else sweep
        page, slurm_now, top, present = self._list(cursor, result)
        moved, listed = self._scan(page, cursor, result)
        top = top if top is not None or not page.changed else max(listed, default=None)
        del page  # the decoded answer goes before the events are built
        # /jobs/state names every job slurmctld holds: what it lacks is gone, as a sweep would find
        self._update_vanished(cursor, listed if present is None else present, result.sweep or present is not None)
        error = self._publish_and_save(moved, cursor, iso(now), lookups_until, result)
        swept = result.sweep and error is None
        if swept and cursor.last_sweep is not None:  # the first sweep publishes no history
            try:
                error = self._publish_unseen(listed, cursor, cursor.last_sweep - UNSEEN_MARGIN, iso(now), result)
            except SlurmError as exc:  # slurmdbd down: the next poll sweeps again, from the same time
                logger.warning("could not ask accounting for jobs no poll saw; the next poll sweeps again",
                               extra={"cluster": self.cluster, "error": str(exc)})
                swept = False
            swept = swept and error is None
        done = error is None and not result.deferred and not result.retries_pending
        if done and top is not None:
            cursor.top_job_id = top
        self._save_cursor(cursor, slurm_now if done else None, now if swept else None, result)
        if error is not None:
            raise error

    def _wants_sweep(self, cursor: Cursor, now: float) -> bool:
        return cursor.update_time is None or cursor.last_sweep is None or now - cursor.last_sweep >= self.sweep_seconds

    def _list(
        self, cursor: Cursor, result: PollResult
    ) -> tuple[JobsPage, int | None, int | None, AbstractSet[int] | None]:
        """Slurm's listing (all jobs on a sweep, else those since the cursor), Slurm's
        clock for the next cursor (None: the cursor stays), the highest job id Slurm
        holds when the listing does not show every job (None: read it from the listing),
        and the id of every job slurmctld holds when ``/jobs/state`` said (None: unknown).

        A steady poll of a cluster that serves ``/jobs/state`` asks it first and fetches
        only the jobs it shows new or moved, unless they are more than ``max_details``
        (default: the client's ``details_budget``, 1% of the jobs): ``update_time`` is
        global, any change lists every job, ~5.5 KB each."""
        if not result.sweep and cursor.top_job_id is not None and getattr(self.client, "serves_job_states", False):
            states = self.client.job_states()
            wanted = _moved_states(states, cursor)
            if len(wanted) <= (self.max_details or details_budget(len(states))):
                result.listing, result.changed = "states", bool(wanted)
                # Slurm's answer is every job's state; the scan counts the fetched ones
                result.jobs_seen = len(states)
                fetched = set(wanted)
                result.tracked_seen = sum(1 for job_id in states if job_id in cursor.known and job_id not in fetched)
                page = self.client.get_jobs(wanted) if wanted else JobsPage(jobs=(), changed=False)
                return page, None, max(max(states), cursor.top_job_id) if wanted else None, states.keys()
        asked = time.monotonic()
        page = self.client.list_jobs(None if result.sweep else cursor.update_time)
        result.listing, result.changed, result.jobs_seen = "jobs", page.changed, len(page.jobs)
        return page, (page.last_update or self._server_time(asked)) if page.changed else None, None, None

    def _update_vanished(self, cursor: Cursor, listed: AbstractSet[int], complete: bool) -> None:
        """When ``listed`` is every job slurmctld holds (a sweep, or ``/jobs/state``),
        queue each tracked unfinished job it lacks (a finished one left after MinJobAge,
        as expected); drop from the queue what is listed again (diffed as usual) or no
        longer tracked."""
        if complete:
            for job_id in [i for i in cursor.known if i not in listed]:
                if _state_of(cursor.known[job_id]) in TRACKER_FINAL_STATES:
                    del cursor.known[job_id]
                else:
                    cursor.vanished.setdefault(job_id, None)
        for job_id in [i for i in cursor.vanished if i in listed or i not in cursor.known]:
            del cursor.vanished[job_id]

    def _publish_and_save(
        self, moved: list[_Moved], cursor: Cursor, updated_at: str | None, lookups_until: float, result: PollResult
    ) -> EventBusError | None:
        """Diff, publish and save the moved jobs, then the vanished ones, a chunk at a
        time (memory stays flat however many jobs changed). The events a chunk could
        not publish are not saved (the next poll publishes them again, same ids); the
        error that says so comes back once every chunk was tried."""
        failed: list[FailedEntry] = []
        for start in range(0, len(moved), CHUNK):
            chunk = moved[start : start + CHUNK]
            stored = self.store.get_jobs(self.cluster, [job.job_id for job, _, _ in chunk])
            changes: list[_Change] = []
            for job, src, fp in chunk:
                change = self._diff(job, src, stored.get(job.job_id), updated_at, fp)
                if change:
                    changes.append(change)
                elif COMPLETING not in job.state_flags:  # known was stale (e.g. a crash after saving the job): refresh only;
                    cursor.known[job.job_id] = fp  # a requeue still completing keeps the old entry, or a state poll
                    # would take its new run (the same base state, a new submit time) as known
            failed += self._publish(changes, cursor, result)
        todo = list(cursor.vanished)[: self.max_lookups or None]
        if todo:
            stored = self.store.get_jobs(self.cluster, todo)
            failed += self._publish(self._look_up(todo, stored, cursor, updated_at, lookups_until, result), cursor, result)
        return EventBusError(failed, result.published) if failed else None

    def _publish_unseen(
        self, listed: set[int], cursor: Cursor, since: float, updated_at: str | None, result: PollResult
    ) -> EventBusError | None:
        """Jobs no poll saw: submitted, ended and dropped by slurmctld (MinJobAge) between
        two polls (polls failing or paused). Where the cluster has slurmdbd, a sweep asks
        accounting for this user's jobs that ran or ended since the last sweep (less a
        margin) and publishes the end of each of ours that slurmctld no longer lists and
        the table does not know in that state (``previousState`` null)."""
        if not getattr(self.client, "accounting", False) or not hasattr(self.client, "list_accounting_jobs"):
            return None
        found = [
            (job, src) for job in self.client.list_accounting_jobs(int(since))
            if job.is_final and job.job_id not in listed and job.job_id not in cursor.known
            and job.job_id not in cursor.vanished
            and ((src := provenance.decode(job.comment)) is not None or self.track_all)
        ]
        failed: list[FailedEntry] = []
        for start in range(0, len(found), CHUNK):
            chunk = found[start : start + CHUNK]
            stored = self.store.get_jobs(self.cluster, [job.job_id for job, _ in chunk])
            changes = []
            for job, src in chunk:
                old = stored.get(job.job_id)
                if old is not None and _earlier(job, old):
                    continue  # an earlier job that had the id: ours is the stored one
                change = self._diff(job, src, old, updated_at)
                if change is not None:
                    change.fingerprint = None  # gone from slurmctld: never in known
                    changes.append(change)
            failed += self._publish(changes, cursor, result)
        return EventBusError(failed, result.published) if failed else None

    def _publish(self, changes: list[_Change], cursor: Cursor, result: PollResult) -> list[FailedEntry]:
        """Publish ``changes``; save each accepted one (conditional on the state it
        replaces) and note it in ``known``. Returns the refused ones."""
        if not changes:
            return []
        failed: list[FailedEntry] = []
        try:
            result.published += self.bus.put(c.event for c in changes)
        except EventBusError as exc:
            result.published += exc.accepted
            failed = exc.failed
        failed_ids = {f.event.event_id for f in failed}
        # failed jobs their pipeline retries: before saving, so a crash or a failed
        # retry is redone by the next poll (under the same attempt's key: never twice)
        redo = self.retry.after(c.new for c in changes if c.event.event_id not in failed_ids) if self.retry else set()
        result.retries_pending += len(redo)
        for change in changes:
            if change.event.event_id in failed_ids or change.new.job_id in redo:
                continue
            if self.store.save_job(change.new, change.old):
                result.transitions.append(
                    {"jobId": change.new.job_id, "previousState": change.old.state if change.old else None, "state": change.new.state}
                )
            else:
                result.conflicts += 1
                logger.warning("job state changed under us; not saved", extra={"cluster": self.cluster, "job_id": change.new.job_id})
            cursor.vanished.pop(change.new.job_id, None)
            if change.fingerprint is None:  # gone from slurmctld: it will never list it again
                cursor.known.pop(change.new.job_id, None)
                result.lost += change.new.state == LOST
            else:
                cursor.known[change.new.job_id] = change.fingerprint
        return failed

    def _save_cursor(self, cursor: Cursor, update_time: int | None, swept_at: float | None, result: PollResult) -> None:
        """Advance the cursor (``update_time`` only when every change is saved, ``swept_at``
        only after a complete sweep) and save it last."""
        if update_time is not None:
            cursor.update_time = update_time
        if swept_at is not None:
            cursor.last_sweep = swept_at
        states = Counter(_state_of(v) for v in cursor.known.values())
        result.pending, result.running = states["PENDING"], states["RUNNING"]
        result.to_look_up = len(cursor.vanished)
        if not self.store.save_cursor(self.cluster, cursor):
            logger.warning("cursor saved by someone else meanwhile; keeping theirs", extra={"cluster": self.cluster})

    def _server_time(self, asked: float) -> int | None:
        """Slurm's clock for answers without ``last_update`` (v0.0.38, v0.0.39): diag's
        time less the whole seconds since the listing was asked for, and one more for
        the rounding, so it is never later than the moment slurmctld built the listing.
        None (the cursor stays) when there is no diag or it fails."""
        diag = getattr(self.client, "diag", None)
        if diag is None:
            return None
        try:
            seconds = server_time(diag() or {})
        except SlurmError as exc:
            logger.warning("GET /diag failed; update_time stays", extra={"cluster": self.cluster, "error": str(exc)})
            return None
        return None if seconds is None else seconds - 1 - int(time.monotonic() - asked)

    def _scan(self, page: JobsPage, cursor: Cursor, result: PollResult) -> tuple[list[_Moved], set[int]]:
        """The tracked jobs whose key differs from ``known`` (parsed, with their source
        and new fingerprint), and the ids of all listed jobs. Only those jobs are parsed
        in full (a lazy page parses nothing else): a steady poll parses ~1% of them.

        Without ``track_all`` a job is ours when its comment carries the provenance
        marker, which the key holds: the others (another user's jobs, 90% of a shared
        cluster) are never parsed, on no poll, and need no entry in ``known``; a job
        whose comment gains the marker (``scontrol update comment=``) is ours from the
        next poll on. A job without it that ``known`` holds was followed while
        ``track_all`` was on: it leaves ``known`` when it moves (no more events).

        Work per invocation is bounded (``max_changes``): past the bound a job that
        moved is only counted (``deferred``), not parsed nor its provenance decoded;
        it stays unsaved and the cursor does not advance, so the next poll lists it
        again and takes the next share. A first poll over 100,000 jobs parses 2,000."""
        moved: list[_Moved] = []
        listed: set[int] = set()
        known, track_all = cursor.known, self.track_all
        room = self.max_changes or -1  # -1: no bound
        for key, parse in page.keyed():
            job_id = key.job_id
            listed.add(job_id)
            fp = _fingerprint(key)
            if known.get(job_id) == fp:  # tracked and unchanged: the common case
                result.tracked_seen += 1
                continue
            comment = key.comment
            ours = bool(comment and MARKER in comment)
            if not room and (ours or track_all):  # over the bound: a marked comment counts
                result.tracked_seen += 1
                result.deferred += 1
                continue
            src = provenance.decode(comment) if ours else None
            if src is not None or track_all:
                result.tracked_seen += 1
                moved.append((parse(), src, fp))
                room -= 1
            elif job_id in known:  # followed under TRACK_ALL_JOBS, which is off now: let it go
                del known[job_id]
        return moved, listed

    def _diff(
        self, job: Job, src: Source | None, old: TrackedJob | None, updated_at: str | None, fingerprint: str | None = None
    ) -> _Change | None:
        """The transition from ``old`` to ``job``, or None when there is none
        (``fingerprint``: the job's in ``known``, when the caller has it).

        A requeue keeps the job id, counts a restart and gives a new submit time: the
        job is followed (``previousState`` is its last state, ``REQUEUED`` is flagged).
        While the requeue is still completing Slurm shows the old submit time; the event
        waits for the new one, which makes its eventId that of the new run's state (the
        same whichever poll, or the head node's push, publishes it) and keeps it apart
        from the old run's. A new submit time without a restart more is another job that
        got the same id."""
        previous = old.state if old is not None else None
        submitted_at = iso(job.submit_time)
        requeued = old is not None and job.restarts > old.restarts
        if old is not None and old.submitted_at and submitted_at and old.submitted_at != submitted_at and not (
            job.restarts and job.restarts >= old.restarts
        ):
            previous, requeued = None, False  # Slurm reused the id: a new job in the same item
        elif requeued and old is not None and submitted_at == old.submitted_at and COMPLETING in job.state_flags:
            return None  # the requeue is still completing
        elif previous == job.state and not requeued:
            return None
        new = tracked_from_job(self.cluster, job, src, previous_state=previous, updated_at=updated_at, submitted_at=submitted_at)
        flags = job.state_flags + (REQUEUED,) if requeued and REQUEUED not in job.state_flags else job.state_flags
        suspended_at = iso(job.suspend_time) if job.suspend_time is not None and job.state in _SUSPENDABLE else None
        return _Change(new, old, self._event(new, flags, job.signal, src, suspended_at), fingerprint or _fingerprint(job_key(job)))

    def _look_up(
        self, todo: list[int], stored: dict[int, TrackedJob], cursor: Cursor, updated_at: str | None, until: float, result: PollResult
    ) -> list[_Change]:
        """Work through ``todo`` (the head of the ``vanished`` queue) until the time is
        up or Slurm fails: what is left stays queued for the next poll."""
        changes = []
        for job_id in todo:
            if self._clock() >= until:
                logger.info("lookup time used up; the next poll goes on", extra={"cluster": self.cluster, "left": len(cursor.vanished)})
                break
            result.looked_up += 1
            try:
                change = self._vanished(job_id, stored.get(job_id), cursor, updated_at)
            except SlurmError as exc:
                logger.warning("could not look up a vanished job; the next poll goes on from it", extra={"cluster": self.cluster, "job_id": job_id, "error": str(exc)})
                break
            if change:
                changes.append(change)
        return changes

    def _vanished(self, job_id: int, old: TrackedJob | None, cursor: Cursor, updated_at: str | None) -> _Change | None:
        """A tracked unfinished job missing from the full listing: by id in slurmctld
        (once), then in accounting (each poll until ``lost_after``), else ``LOST``.
        None when there is nothing to publish (yet); raises ``SlurmError`` to stop."""
        now = self._clock()
        missing_since = cursor.vanished[job_id]
        if missing_since is None:
            try:
                job: Job | None = self.client.get_job(job_id)
            except SlurmNotFoundError:
                job = None
            if job is not None:
                change = self._diff(job, provenance.decode(job.comment), old, updated_at)
                if change is None:
                    self._forget(job_id, cursor, _fingerprint(job_key(job)))
                return change
            missing_since = cursor.vanished[job_id] = now
        if old is None or (old.source is None and not self.track_all):
            # only in known, or another user's job followed while TRACK_ALL_JOBS was on:
            # nothing to say about it (no LOST for a job we no longer track)
            self._forget(job_id, cursor)
            return None
        if getattr(self.client, "accounting", False):
            try:
                job = self.client.get_accounting_job(job_id)  # type: ignore[attr-defined]
            except SlurmError:
                if now - missing_since < self.lost_after:
                    raise
                job = None
            if job is not None and job.is_final and not _earlier(job, old):
                change = self._diff(job, provenance.decode(job.comment) or old.source, old, updated_at)
                if change is None:
                    self._forget(job_id, cursor)
                    return None
                change.fingerprint = None  # gone from slurmctld: leaves known when saved
                return change
            if now - missing_since < self.lost_after:
                del cursor.vanished[job_id]  # slurmdbd may not have it yet: ask again at the
                cursor.vanished[job_id] = missing_since  # queue's end, after the others
                return None
        new = msgspec.structs.replace(old, state=LOST, previous_state=old.state, reason=LOST_REASON, updated_at=updated_at)
        return _Change(new, old, self._event(new, (), None, new.source), None)

    @staticmethod
    def _forget(job_id: int, cursor: Cursor, fingerprint: str | None = None) -> None:
        cursor.vanished.pop(job_id, None)
        if fingerprint is None:
            cursor.known.pop(job_id, None)
        else:
            cursor.known[job_id] = fingerprint

    def _event(
        self, job: TrackedJob, flags: tuple[str, ...], signal: int | None, source: Source | None, suspended_at: str | None = None
    ) -> Event:
        """``source`` is ``job.source``, which the caller has at hand (building it again
        costs more than the rest of the event); ``suspended_at`` the job's last suspend or
        resume, which gives a resumed ``RUNNING`` an id of its own."""
        return Event(
            DETAIL_TYPE,
            state_change_detail(job, flags, signal, source),
            job_resources(job.cluster, job.job_id, source.object_arn if source else None),
            event_id(job.cluster, job.job_id, job.state, job.submitted_at, suspended_at),
        )


def _earlier(job: Job, old: TrackedJob) -> bool:
    """Accounting's record is of an earlier job that had the same id (submitted before ours)."""
    submitted = iso(job.submit_time)
    return bool(submitted and old.submitted_at and submitted < old.submitted_at)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one poll: a 10,000-job answer is millions
    of new containers, the collector would scan them again and again, and a poll makes
    no reference cycles to reclaim (reference counting frees the rest). Halves the CPU
    of a poll over a v0.0.42 answer (bench/bench_poll.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _moved_states(states: dict[int, str], cursor: Cursor) -> list[int]:
    """The jobs of a ``/jobs/state`` answer that a full listing's scan would parse: a
    known job in another base state, and a job ``known`` lacks above ``top_job_id`` (one
    below it was listed before and is not tracked). What a state cannot show (a requeue
    or a reused id back in the same state: a new submit time) waits for the next sweep."""
    top = cursor.top_job_id or 0
    known = cursor.known
    moved = []
    for job_id, state in states.items():
        fp = known.get(job_id)
        if (fp is None and job_id > top) or (fp is not None and _state_of(fp) != state):
            moved.append(job_id)
    return moved


def _state_of(fp: str) -> str:
    return fp.partition("|")[0]


def _fingerprint(key: JobKey) -> str:
    """What ``Cursor.known`` keeps per job: its state and submit time, so a job id
    Slurm reuses (a new cluster, a wrapped counter) reads as another job."""
    return f"{key.state}|{key.submitted if key.submitted is not None else ''}"


def iso(moment: datetime | float | None) -> str | None:
    """ISO 8601 in UTC with ``Z``, to the second; None stays None."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    elif moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    if moment.microsecond:
        moment = moment.replace(microsecond=0)
    return _RFC3339.encode(moment)[1:-1].decode()  # msgspec's, in C: 1/7 of isoformat's time; 3 a job


_RFC3339 = msgspec.json.Encoder()


def tracked_from_job(
    cluster: str, job: Job, src: Source | None, *, previous_state: str | None = None,
    updated_at: str | None = None, submitted_at: str | None = None,
) -> TrackedJob:
    """The stored form of ``job``; ``submitted_at`` is ``iso(job.submit_time)`` when the
    caller has it already. The attempt's fields only for a pipeline with ``retry``."""
    attempt = src.attempt if src else None
    return TrackedJob(  # positional, in field order: keywords past 15 cost msgspec 5x the time
        cluster,
        job.job_id,
        job.state,
        previous_state,
        job.name,
        job.user,
        job.partition,
        src.pipeline if src else None,
        src.bucket if src else None,
        src.key if src else None,
        src.version_id if src else None,
        src.step if src else None,
        job.array_job_id,
        job.array_task_id,
        submitted_at or iso(job.submit_time),
        iso(job.start_time),  # started_at
        iso(job.end_time),  # ended_at
        job.exit_code,
        job.reason,
        updated_at,
        job.restarts,
        src.idempotency_key if attempt else None,  # type: ignore[union-attr]
        attempt or None,
        src.max_attempts if attempt else None,  # type: ignore[union-attr]
        src.original_key if attempt else None,  # type: ignore[union-attr]
    )


def resources(job: TrackedJob) -> tuple[str, ...]:
    source = job.source
    return job_resources(job.cluster, job.job_id, source.object_arn if source else None)


_NO_SOURCE: Any = object()


def state_change_detail(
    job: TrackedJob, flags: tuple[str, ...] = (), signal: int | None = None, source: Source | None = _NO_SOURCE
) -> dict[str, Any]:
    """The ``detail`` of "Slurm Job State Change" (schemas/slurm-job-state-change.schema.json);
    ``source`` is ``job.source`` when the caller has it at hand."""
    if source is _NO_SOURCE:
        source = job.source
    return {
        "cluster": job.cluster,
        "jobId": job.job_id,
        "jobName": job.name,
        "arrayJobId": job.array_job_id,
        "arrayTaskId": job.array_task_id,
        "state": job.state,
        "previousState": job.previous_state,
        "stateFlags": list(flags),
        "reason": job.reason,
        "exitCode": job.exit_code,
        "signal": signal,
        "partition": job.partition,
        "user": job.user,
        "submittedAt": job.submitted_at,
        "startedAt": job.started_at,
        "endedAt": job.ended_at,
        "source": source.to_detail() if source else None,
        "publishedBy": POLLED,
    }


def record_metrics(result: PollResult, metrics: Any) -> None:
    """Add one poll's figures to Powertools ``metrics``; transitions go out at once,
    one EMF line per state, because each needs its own ``State`` dimension."""
    if result.skipped:
        metrics.add_metric(name="PollsSkipped", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="JobsPending", unit=MetricUnit.Count, value=result.pending)
    metrics.add_metric(name="JobsRunning", unit=MetricUnit.Count, value=result.running)
    metrics.add_metric(name="JobsSeenPerPoll", unit=MetricUnit.Count, value=result.jobs_seen)
    metrics.add_metric(name="VanishedJobsToLookUp", unit=MetricUnit.Count, value=result.to_look_up)
    metrics.add_metric(name="PollDuration", unit=MetricUnit.Milliseconds, value=result.duration_ms)
    for state, count in sorted(result.by_state().items()):
        with single_metric(
            name="JobStateTransitions",
            unit=MetricUnit.Count,
            value=count,
            namespace=metrics.namespace,
            default_dimensions={"service": metrics.service or SERVICE, "State": state},
        ):
            pass


def build_tracker(
    settings: Settings,
    *,
    dynamodb_client: Any,
    events_client: Any,
    secrets_client: Any = None,
    ec2_client: Any = None,
    ssm_client: Any = None,
) -> Tracker:
    """The tracker of ``settings``' cluster from boto3 clients (moto's in tests), as
    ``build_trigger`` makes the trigger: its Slurm client is built here from the same
    settings, so the cluster it asks and the one its events and keys name cannot differ."""
    from slurm_trigger.retry import OnDemand, build_retrier

    client = build_client(settings, secrets_client=secrets_client, ec2_client=ec2_client, ssm_client=ssm_client)
    retry = OnDemand(lambda: build_retrier(settings, client, dynamodb_client=dynamodb_client, events_client=events_client))
    return Tracker(
        client,
        DynamoDBJobStore(dynamodb_client, settings.jobs_table),
        EventBus(events_client, settings.event_bus, settings.event_source),
        settings.cluster_name,
        track_all=settings.track_all_jobs,
        max_lookups=settings.tracker_max_lookups,
        retry=retry,
    )
