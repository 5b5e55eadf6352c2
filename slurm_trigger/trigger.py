"""Object → exactly one Slurm job per matching pipeline: the path all subscriptions share.

For each pipeline an object matches: render the job, then ``Trigger.submit_rendered``:
claim the object version's idempotency key (an owned lease), submit (or adopt the job
an earlier, silent attempt made), record the job id with its event (the outbox), publish
"Slurm Job Submitted" from that record, complete. Failures split in two:

* transient (Slurm unreachable or 5xx, token refused twice, a claim in progress,
  AWS errors): raised, so Lambda or SQS delivers the object again later. The claim is
  released when Slurm certainly has no job; held for the settle time when a submit's
  outcome is unknown, then taken over by a retry that asks Slurm first; a recorded job
  is published by the retry and never submitted again.
* permanent (template error, control characters, Slurm rejects the body): a
  "Slurm Job Submission Failed" event, a log line, ``SubmissionFailures``; the claim is
  released (a fixed pipeline can run again, e.g. by ``backfill``); nothing is raised.

An SQS batch goes through the same unit together (``submit_rendered_many``): one claim
transaction, the submits overlapped (``slurm_trigger.pacing``), one record transaction,
one ``PutEvents`` per 10 events, one complete transaction (docs/trigger.md#bursts).

Everything per container (clients, pipelines, the negotiated version) is built once and
handed in; a ``Trigger`` holds no per-event state. docs/trigger.md#exactly-once has the
state machine and its limits.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from slurm_trigger import provenance, s3events
from slurm_trigger.eventbus import Event, EventBus, EventBusError
from slurm_trigger.idempotency import Claim, ClaimLostError, DynamoDBIdempotencyStore, IdempotencyStore, idempotency_key
from slurm_trigger.observability import logger, metrics as default_metrics, tracer
from slurm_trigger.outcome import Outcome
from slurm_trigger.pacing import BUSY_TRIES, Pacer
from slurm_trigger.pipelines import Pipeline, PipelineError, load, matching
from slurm_trigger.provenance import Source
from slurm_trigger.retry import first_attempt
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.sets import SetCollector
from slurm_trigger.setstore import DynamoDBSetStore, SetStore
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from slurm_trigger.slurm.errors import SlurmBusyError, SlurmError
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.steps import Step
from slurm_trigger.templating import TemplateError, object_variables, render

SUBMITTED = "Slurm Job Submitted"
FAILED = "Slurm Job Submission Failed"
T = TypeVar("T")


def _source(ref: ObjectRef, pipeline: Pipeline) -> Source:
    key = idempotency_key(pipeline.name, ref)
    return Source(ref.bucket, ref.key, pipeline.name, ref.version_id, ref.etag, idempotency_key=key)


def render_job(
    ref: ObjectRef,
    pipeline: Pipeline,
    metadata: Mapping[str, str] | None = None,
    source: Source | None = None,
    step: Step | None = None,
) -> JobSubmission:
    """The job ``pipeline`` (or one of its steps) makes of ``ref``, its provenance
    stamped in the comment. Raises ``TemplateError`` (permanent) for values it must
    refuse."""
    source = source or (step.source(_source(ref, pipeline)) if step else _source(ref, pipeline))
    template = step.template if step else pipeline.template
    job = render(template, object_variables(ref, pipeline.name, source.idempotency_key or "", metadata))
    return dataclasses.replace(job, comment=provenance.comment(source, job.comment))


def _each(items: Iterable[T], work: Callable[[T], list[Outcome]]) -> list[Outcome]:
    """``work`` on every item; the first exception is raised only after all the items
    were tried, since retrying the ones that succeeded is harmless."""
    outcomes: list[Outcome] = []
    first: Exception | None = None
    for item in items:
        try:
            outcomes.extend(work(item))
        except Exception as exc:  # noqa: BLE001 - raised below
            first = first or exc
    if first is not None:
        raise first
    return outcomes


class BatchNotDone(Exception):
    """Some messages of an SQS batch failed on a mapping that cannot say which: the
    whole batch must come back (fail closed)."""

    def __init__(self, failed: Sequence[str], total: int) -> None:
        self.failed = list(failed)
        super().__init__(
            f"{len(self.failed)} of {total} messages failed ({', '.join(self.failed)}); the event source "
            "mapping does not report item failures, so the whole batch is returned to the queue"
        )


class DeadlinePassedError(Exception):
    """The attempt's deadline came before its submit was sent: nothing was sent, the
    claim is given back. Transient: retry later."""

    transient = True

    def __init__(self, key: str) -> None:
        super().__init__(f"the deadline passed before {key} was submitted; nothing was sent")
        self.key = key


@dataclass(frozen=True)
class _Attempt:
    """What a unit's calls to Slurm came to, for the thread that owns the claim to act
    on: ``made`` the job and its event to record, else ``write`` (release, hold or
    expire the claim) and then ``error`` to raise or ``failed`` to report."""

    made: tuple[int, Event] | None = None
    write: str | None = None
    error: BaseException | None = None
    failed: Exception | None = None


def _caught(work: Callable[[], T]) -> T | BaseException:
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - handed back as that item's answer
        return exc


def lambda_deadline(context: Any) -> float | None:
    """When Lambda ends this invocation (epoch seconds); None outside Lambda."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return time.time() + remaining() / 1000 if remaining else None


class Trigger:
    """The exactly-once path from ``ObjectRef`` to Slurm job.

    ``settle_seconds``: how long after a POST was sent its job may still appear (the
    read timeout plus slurmctld's slowest answer). A claim lasts the attempt's deadline
    plus this, and a submit whose outcome is unknown keeps its claim this long, so no
    other attempt asks Slurm before that job could exist. ``window_seconds``: the
    deadline of an attempt that is given none (outside Lambda).
    """

    def __init__(
        self,
        *,
        pipelines: Sequence[Pipeline],
        client: Any,  # a SlurmClient: submit, find_jobs_by_comment, version
        store: IdempotencyStore,
        bus: EventBus,
        cluster: str,
        s3_client: Any = None,  # pipelines with ``metadata: true``, marker and manifest sets
        metrics: Any = default_metrics,
        sets: SetStore | None = None,  # set membership, for pipelines with ``collect``
        redrive_after: int = 90,  # seconds before the set check finishes a silent set's job
        settle_seconds: float = 90.0,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        report_batch_item_failures: bool = False,  # the SQS mapping has ReportBatchItemFailures
        targets: Mapping[str, Any] | None = None,  # more clusters by name: their clients
        pacers: Mapping[str, Pacer] | None = None,  # per cluster: how many submits at once
    ) -> None:
        self.pipelines = list(pipelines)
        self.client = client
        self.store = store
        self.bus = bus
        self.cluster = cluster
        self.targets = {name: c for name, c in (targets or {}).items() if name != cluster}
        self._target_of = {p.name: p.target or cluster for p in self.pipelines}
        self._retry_of = {p.name: p.retry for p in self.pipelines if p.retry is not None}
        clusters = [cluster, *self.targets]
        unknown = [p for p in self.pipelines if self._target_of[p.name] not in clusters]
        if unknown:
            raise PipelineError("\n".join(
                f"{p.file}: pipeline {p.name!r}: target {p.target!r} is no configured cluster "
                f"(the clusters are {', '.join(clusters)}; more come from SLURM_TARGETS)" for p in unknown
            ))
        self.s3 = s3_client
        self.metrics = metrics
        self.settle_seconds = settle_seconds
        self.window_seconds = window_seconds
        self.clock = clock
        self.report_batch_item_failures = report_batch_item_failures
        self._batch = BatchProcessor(event_type=EventType.SQS)
        self.pacers = {name: (pacers or {}).get(name) or Pacer() for name in clusters}
        self.sets = SetCollector(self, sets, redrive_after=redrive_after)

    # --- entry points, one per subscription shape
    def handle_event(self, event: Mapping[str, Any], *, deadline: float | None = None) -> list[Outcome]:
        """A direct S3 notification or an EventBridge "Object Created" event."""
        return self.handle_objects(s3events.parse(event), deadline=deadline)

    def handle_sqs(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """An SQS batch. A message fails when its body is unreadable or any of its
        objects hit a transient error; the other messages of the batch are done.

        Where the event source mapping reports item failures
        (``report_batch_item_failures``), ``{"batchItemFailures": [...]}`` names the
        messages to retry. Elsewhere Lambda ignores that answer and deletes the whole
        batch on any normal return, so a batch with a failed message raises
        ``BatchNotDone`` instead: every message comes back, and the claims make the
        repeats of those already done duplicates.

        The batch's objects go through the exactly-once unit together
        (``submit_rendered_many``); Powertools' ``BatchProcessor`` then gives each
        message its answer and builds the response."""
        done = self._sqs_batch(event.get("Records") or [], lambda_deadline(context))

        def answer_of(record: SQSRecord) -> list[dict[str, Any]]:
            result = done[record.message_id]
            if isinstance(result, BaseException):
                raise result
            return result

        answer = process_partial_response(
            event=dict(event), record_handler=answer_of, processor=self._batch, context=context
        )
        failed = [f["itemIdentifier"] for f in answer.get("batchItemFailures") or []]
        if failed and not self.report_batch_item_failures:
            raise BatchNotDone(failed, len(event.get("Records") or []))
        return answer

    def _sqs_batch(
        self, records: Sequence[Mapping[str, Any]], deadline: float | None
    ) -> dict[str, list[dict[str, Any]] | BaseException]:
        """Each message's outcomes, or the first error of its objects (after all of
        them were tried). Single-job pipelines' objects go through
        ``submit_rendered_many`` at once; sets and steps one by one, as ever."""
        outcomes: dict[str, list[Outcome]] = {}
        errors: dict[str, BaseException] = {}
        units: list[tuple[str, ObjectRef, Pipeline, Source, JobSubmission]] = []
        one_by_one: list[tuple[str, ObjectRef, Pipeline, Mapping[str, str] | None]] = []

        def fail(message: str, exc: BaseException, ref: ObjectRef | None = None, pipeline: str | None = None) -> None:
            if ref is not None:
                logger.warning(
                    "submission will be retried",
                    extra={"bucket": ref.bucket, "key": ref.key, "pipeline": pipeline, "error": str(exc)},
                )
            errors.setdefault(message, exc)

        for record in records:
            message = str(record.get("messageId"))
            outcomes[message] = []
            try:
                refs = s3events.parse_sqs_body(record.get("body") or "")
            except Exception as exc:  # noqa: BLE001 - this message fails, the others go on
                fail(message, exc)
                continue
            for ref in refs:
                matched = matching(self.pipelines, ref)
                if not matched:
                    outcomes[message].append(self._unmatched(ref))
                    continue
                try:
                    metadata = self._metadata(ref) if any(p.metadata for p in matched) else None
                except Exception as exc:  # noqa: BLE001 - transient: this message comes back
                    fail(message, exc, ref)
                    continue
                for pipeline in matched:
                    meta = metadata if pipeline.metadata else None
                    if pipeline.collect is not None or len(pipeline.jobs) > 1:
                        one_by_one.append((message, ref, pipeline, meta))
                        continue
                    [step] = pipeline.jobs
                    source = step.source(_source(ref, pipeline))
                    try:
                        job = render_job(ref, pipeline, meta, source, step)
                    except TemplateError as exc:
                        reported = _caught(lambda: self._failed(source, exc))
                        if isinstance(reported, Outcome):
                            outcomes[message].append(reported)
                        else:
                            fail(message, reported, ref, pipeline.name)
                        continue
                    units.append((message, ref, pipeline, source, job))
        made = self.submit_rendered_many([(u[3], u[4]) for u in units], deadline=deadline)
        for (message, ref, pipeline, _, _), result in zip(units, made):
            if isinstance(result, BaseException):
                fail(message, result, ref, pipeline.name)
            else:
                outcomes[message].append(result)
        for message, ref, pipeline, meta in one_by_one:
            try:
                outcomes[message].append(self.submit(ref, pipeline, meta, deadline=deadline))
            except Exception as exc:  # noqa: BLE001 - this message fails, the others go on
                fail(message, exc, ref, pipeline.name)
        return {m: errors.get(m) or [o.to_dict() for o in found] for m, found in outcomes.items()}

    def target(self, pipeline: str | None) -> tuple[str, Any]:
        """The cluster name and client a pipeline's jobs go to: its ``target``, else the default."""
        name = self._target_of.get(pipeline or "", self.cluster)
        return name, self.client if name == self.cluster else self.targets[name]

    def check_sets(self) -> list[Outcome]:
        """The scheduled check of sets: window ends, deadlines, silent winners."""
        return self.sets.check(self.pipelines)

    # --- the core
    def handle_objects(self, refs: Iterable[ObjectRef], *, deadline: float | None = None) -> list[Outcome]:
        """Every object, every matching pipeline."""
        return _each(refs, lambda ref: self.handle(ref, deadline=deadline))

    @tracer.capture_method
    def handle(self, ref: ObjectRef, *, deadline: float | None = None) -> list[Outcome]:
        """One object: one job per matching pipeline."""
        matched = matching(self.pipelines, ref)
        if not matched:
            return [self._unmatched(ref)]
        metadata = self._metadata(ref) if any(p.metadata for p in matched) else None

        def one(pipeline: Pipeline) -> list[Outcome]:
            try:
                return [self.submit(ref, pipeline, metadata if pipeline.metadata else None, deadline=deadline)]
            except Exception as exc:
                logger.warning(
                    "submission will be retried",
                    extra={"bucket": ref.bucket, "key": ref.key, "pipeline": pipeline.name, "error": str(exc)},
                )
                raise

        return _each(matched, one)

    def _unmatched(self, ref: ObjectRef) -> Outcome:
        logger.info("object matches no pipeline: skipped", extra={"bucket": ref.bucket, "key": ref.key})
        self.metrics.add_metric(name="UnmatchedObjects", unit=MetricUnit.Count, value=1)
        return Outcome("unmatched", ref.bucket, ref.key)

    def submit(
        self,
        ref: ObjectRef,
        pipeline: Pipeline,
        metadata: Mapping[str, str] | None = None,
        *,
        deadline: float | None = None,
    ) -> Outcome:
        """At most one job for (pipeline, object version) (one per step), however often called."""
        if pipeline.collect is not None:
            return self.sets.collect(ref, pipeline, deadline=deadline)
        return self.submit_steps(
            _source(ref, pipeline),
            pipeline.jobs,
            lambda step, source: render_job(ref, pipeline, metadata, source, step),
            deadline=deadline,
        )

    def submit_steps(
        self,
        source: Source,
        steps: Sequence[Step],
        render_step: Callable[[Step, Source], JobSubmission],
        detail: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> Outcome:
        """Every step through ``submit_rendered``, in order, each under its own key and
        depending on the ids of the steps before it (docs/trigger.md#steps). A step
        that fails for good stops the rest; one that fails transiently raises, and
        the retry finds the steps already made."""
        job_ids: dict[str, int] = {}
        outcomes: list[Outcome] = []
        for step in steps:
            step_source = step.source(source)
            try:
                job = render_step(step, step_source)
            except TemplateError as exc:
                return self._failed(step_source, exc)
            dependency = step.dependency(job_ids)
            if dependency:
                job = dataclasses.replace(job, dependency=dependency)
            outcome = self.submit_rendered(step_source, job, detail, deadline=deadline)
            if outcome.job_id is None or outcome.status == "failed":
                return outcome
            outcomes.append(outcome)
            if step.name is not None:
                job_ids[step.name] = outcome.job_id
        if len(outcomes) == 1:
            return outcomes[0]
        first = outcomes[0]
        fresh = [o.status for o in outcomes if o.status != "duplicate"]
        return dataclasses.replace(
            first, status=fresh[0] if fresh else "duplicate", idempotency_key=source.idempotency_key, steps=job_ids
        )

    def submit_rendered(
        self,
        source: Source,
        job: JobSubmission,
        detail: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> Outcome:
        """The exactly-once unit, for any rendered job whose comment carries
        ``source.idempotency_key``: claim the key, adopt the job an earlier attempt made
        or submit ``job``, record the job id with its event (the outbox), publish the
        event from that record, complete. A retry that finds the job recorded publishes
        the recorded event and never submits. ``detail`` is added to the "Submitted"
        event (a set's members). ``deadline`` (epoch seconds) is when this attempt may
        be killed; no submit is sent after it."""
        key = source.idempotency_key
        if not key:
            raise ValueError("submit_rendered needs a source with its idempotency key")
        source, job = first_attempt(source, self._retry_of.get(source.pipeline), job)
        if deadline is None:
            deadline = self.clock() + self.window_seconds
        claim = self.store.claim(key, max(0.0, deadline - self.clock()) + self.settle_seconds)
        if claim.completed:
            return self._duplicate(source, claim)
        if claim.submitted:
            # an earlier attempt recorded the job but did not publish: publish what it recorded
            return self._publish(claim, source, _event(claim.outbox or {}), resumed=True)
        made = self._adopt_or_submit(claim, source, job, deadline, detail)
        if isinstance(made, Outcome):
            return made
        job_id, event = made
        try:
            self.store.record(claim, job_id, dataclasses.asdict(event), self._kept(source, job))
        except Exception as exc:
            unrecorded = self._unrecorded(claim, source, job_id, exc)
            if isinstance(unrecorded, Outcome):
                return unrecorded
            raise
        return self._publish(claim, source, event, resumed=False)

    def _kept(self, source: Source, job: JobSubmission) -> dict[str, Any] | None:
        """What a record keeps of the job: a retrying pipeline's first attempt, for the
        tracker to submit again; nothing otherwise."""
        return job.to_dict() if source.pipeline in self._retry_of and source.attempt == 1 else None

    def _unrecorded(self, claim: Claim, source: Source, job_id: int, exc: BaseException) -> Outcome | BaseException:
        """The job exists, but its record write failed with ``exc``: "superseded" when
        another attempt took the claim over (it asked Slurm after this job could exist,
        so it adopts it), else ``exc`` to raise, after handing the claim over now (if
        the table takes that), so the retry asks Slurm soon, while the job is still in
        /jobs (or accounting), and adopts it."""
        extra = {"key": claim.key, "job_id": job_id, "pipeline": source.pipeline}
        if isinstance(exc, ClaimLostError):
            logger.warning("claim taken over while this attempt submitted: the attempt holding it adopts the job", extra=extra)
            return Outcome("superseded", source.bucket, source.key, source.pipeline, job_id, claim.key)
        logger.error("job submitted but not recorded: the next attempt adopts it by its comment", extra=extra)
        self._quietly(self.store.expire, claim)
        return exc

    def submit_rendered_many(
        self, items: Sequence[tuple[Source, JobSubmission]], *, deadline: float | None = None
    ) -> list[Outcome | BaseException]:
        """``submit_rendered`` of every ``(source, job)``, together: each item's answer is
        its ``Outcome`` or the exception ``submit_rendered`` would raise for it.

        The same states, in the same order for each key, and every write but the
        claim still conditional on its owner; only the calls are shared: the claims in
        one transaction, the Slurm calls overlapped on the target's ``Pacer`` (this
        thread waits and does every store write), the records in one transaction,
        the events in one ``PutEvents`` per 10 (only refused entries retried), the
        completions in one transaction. A key met twice is done once, then again
        alone (a duplicate by then)."""
        if not items:
            return []
        items = [first_attempt(source, self._retry_of.get(source.pipeline), job) for source, job in items]
        if deadline is None:
            deadline = self.clock() + self.window_seconds
        results: list[Outcome | BaseException | None] = [None] * len(items)
        firsts: dict[str, int] = {}
        for i, (source, _) in enumerate(items):
            if not source.idempotency_key:
                raise ValueError("submit_rendered_many needs sources with their idempotency keys")
            firsts.setdefault(source.idempotency_key, i)
        order = list(firsts.values())
        lease = max(0.0, deadline - self.clock()) + self.settle_seconds
        to_publish: list[tuple[int, Claim | None, Event, bool]] = []  # (item, claim, event, resumed)
        to_send: list[tuple[int, Claim]] = []
        for i, claim in zip(order, self.store.claim_many(list(firsts), lease)):
            if isinstance(claim, BaseException):
                results[i] = claim
            elif claim.completed:
                results[i] = self._duplicate(items[i][0], claim)
            elif claim.submitted:
                to_publish.append((i, claim, _event(claim.outbox or {}), True))
            else:
                to_send.append((i, claim))

        def attempt(i: int, claim: Claim) -> _Attempt:
            return self._attempt(claim, items[i][0], items[i][1], deadline, None)

        if len(to_send) > 1:
            futures = [self.pacers[self.target(items[i][0].pipeline)[0]].run(lambda i=i, c=c: attempt(i, c))
                       for i, c in to_send]
            attempts = [f.result() for f in futures]
        else:
            attempts = [attempt(i, c) for i, c in to_send]
        to_record: list[tuple[int, Claim, int, Event]] = []
        for (i, claim), tried in zip(to_send, attempts):
            if tried.made is not None:
                to_record.append((i, claim, *tried.made))
                continue
            written = _caught(lambda: self._write_claim(claim, tried))
            if isinstance(written, BaseException):
                results[i] = written
            else:  # failed for good and released: report it with the batch's events
                to_publish.append((i, None, self._failure_event(items[i][0], tried.failed), False))
        recorded = self.store.record_many(
            [(c, job_id, dataclasses.asdict(e), self._kept(*items[i])) for i, c, job_id, e in to_record]
        )
        for (i, claim, job_id, event), refused in zip(to_record, recorded):
            if refused is None:
                to_publish.append((i, claim, event, False))
            else:
                results[i] = self._unrecorded(claim, items[i][0], job_id, refused)
        unpublished: dict[int, BaseException] = {}
        try:
            self.bus.put([event for _, _, event, _ in to_publish])
        except EventBusError as exc:
            unpublished = {id(f.event): exc for f in exc.failed}
        except Exception as exc:  # noqa: BLE001 - none of them published
            unpublished = {id(event): exc for _, _, event, _ in to_publish}
        to_complete: list[tuple[int, Claim, Event, bool]] = []
        for i, claim, event, resumed in to_publish:
            if id(event) in unpublished:
                if claim is not None:
                    self._quietly(self.store.expire, claim)  # the next attempt publishes the record at once
                results[i] = unpublished[id(event)]
            elif claim is None:
                results[i] = self._report(items[i][0], event, resumed=False)
            else:
                to_complete.append((i, claim, event, resumed))
        for (i, claim, event, resumed), refused in zip(
            to_complete, self.store.complete_many([c for _, c, _, _ in to_complete])
        ):
            if isinstance(refused, ClaimLostError):
                logger.info("claim taken over after the job was recorded", extra={"key": claim.key})
            elif refused is not None:
                results[i] = refused
                continue
            results[i] = self._report(items[i][0], event, resumed=resumed)
        for i, (source, job) in enumerate(items):
            if results[i] is None:  # a key met twice in the batch: the first is done by now
                results[i] = _caught(lambda: self.submit_rendered(source, job, deadline=deadline))
        return results  # type: ignore[return-value]

    def _adopt_or_submit(
        self, claim: Claim, source: Source, job: JobSubmission, deadline: float, detail: Mapping[str, Any] | None
    ) -> tuple[int, Event] | Outcome:
        """The job id and the event to record, or the ``Outcome`` of a failure that
        made no job."""
        return self._settle(claim, source, self._attempt(claim, source, job, deadline, detail))

    def _attempt(
        self, claim: Claim, source: Source, job: JobSubmission, deadline: float, detail: Mapping[str, Any] | None
    ) -> _Attempt:
        """Adopt the job an earlier attempt made, or submit ``job``: only calls to
        Slurm, so a batch runs these side by side while its own thread writes the
        claims. Whatever may have made a job keeps the claim (``hold``), whatever
        certainly made none gives it back (``release``)."""
        client = self.target(source.pipeline)[1]
        pacer = self.pacers[self.target(source.pipeline)[0]]
        if claim.taken_over:
            # An earlier attempt ended without a word after its lease, which outlasts
            # any job its submit could make: if Slurm has none now, it never will.
            try:
                # no attempt submitted before the key was first claimed: only newer jobs are asked for
                found = pacer.call(lambda: client.find_jobs_by_comment(claim.key, name=job.name, since=claim.claimed_at))
            except BaseException as exc:  # noqa: BLE001 - not asked: the next attempt asks
                return _Attempt(write="expire", error=exc)
            # Slurm matches a substring: a hostile key or template comment may carry
            # another object's key, so only a job stamped with exactly this key counts.
            found = [j for j in found if _stamped_key(j.comment) == claim.key]
            if found:
                job_id = min(j.job_id for j in found)
                return _Attempt(made=(job_id, self._submitted_event(source, job_id, adopted=True, extra=detail)))
        for tries in itertools.count(1):
            if self.clock() >= deadline:
                return _Attempt(write="release", error=DeadlinePassedError(claim.key))
            try:
                result = pacer.call(lambda: client.submit(job))
            except SlurmBusyError as exc:
                if tries < BUSY_TRIES:
                    continue  # slurmctld made nothing; the pacer holds the next send back
                return _Attempt(write="release", error=exc)
            except SlurmError as exc:
                if exc.job_id:
                    # Slurm made the job but reported errors (e.g. 22.05's 200 + errors): keep
                    # it as the object's job so no second one is made, and report the errors.
                    return _Attempt(made=(exc.job_id, self._failure_event(source, exc, exc.job_id)))
                if exc.maybe_submitted:
                    return _Attempt(write="hold", error=exc)
                if exc.transient:
                    return _Attempt(write="release", error=exc)
                return _Attempt(write="release", failed=exc)
            except BaseException as exc:  # noqa: BLE001 - after sending? unknown
                return _Attempt(write="hold", error=exc)
            return _Attempt(made=(result.job_id, self._submitted_event(source, result.job_id, adopted=False, extra=detail)))
        raise AssertionError("unreachable")

    def _settle(self, claim: Claim, source: Source, attempt: _Attempt) -> tuple[int, Event] | Outcome:
        """Act on an ``_Attempt`` in the claim's thread: hand back the job to record,
        or write the claim, then raise or report."""
        if attempt.made is not None:
            return attempt.made
        self._write_claim(claim, attempt)
        assert attempt.failed is not None
        return self._failed(source, attempt.failed)

    def _write_claim(self, claim: Claim, attempt: _Attempt) -> None:
        """The claim write a failed attempt asks for, then its error raised."""
        if attempt.write == "hold":
            self._quietly(self.store.hold, claim, self.settle_seconds)
        elif attempt.write:
            self._quietly(getattr(self.store, attempt.write), claim)
        if attempt.error is not None:
            raise attempt.error

    def _publish(self, claim: Claim, source: Source, event: Event, *, resumed: bool) -> Outcome:
        """Publish a recorded job's event, then complete the record."""
        try:
            self.bus.put([event])
        except BaseException:
            self._quietly(self.store.expire, claim)  # the next attempt publishes the record at once
            raise
        try:
            self.store.complete(claim)
        except ClaimLostError:
            # taken over after recording: the new owner publishes the same event (same
            # eventId, which consumers drop) and completes
            logger.info("claim taken over after the job was recorded", extra={"key": claim.key})
        return self._report(source, event, resumed=resumed)

    def _report(self, source: Source, event: Event, *, resumed: bool) -> Outcome:
        """Log, count and describe a published outcome."""
        job_id = event.detail.get("jobId")
        key = source.idempotency_key
        if event.detail_type == FAILED:
            reason = str(event.detail.get("reason"))
            logger.error(
                "submission failed permanently",
                extra={"bucket": source.bucket, "key": source.key, "pipeline": source.pipeline, "reason": reason},
            )
            self.metrics.add_metric(name="SubmissionFailures", unit=MetricUnit.Count, value=1)
            return Outcome("failed", source.bucket, source.key, source.pipeline, job_id, key, reason)
        adopted = resumed or bool(event.detail.get("adopted"))
        logger.info(
            "job adopted" if adopted else "job submitted",
            extra={"job_id": job_id, "pipeline": source.pipeline, "bucket": source.bucket, "key": source.key,
                   "idempotency_key": key},
        )
        self.metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=1)
        return Outcome("adopted" if adopted else "submitted", source.bucket, source.key, source.pipeline, job_id, key)

    def _duplicate(self, source: Source, claim: Claim) -> Outcome:
        logger.info("object version already has its job", extra={"key": claim.key, "job_id": claim.job_id})
        self.metrics.add_metric(name="DuplicateObjectsSkipped", unit=MetricUnit.Count, value=1)
        return Outcome("duplicate", source.bucket, source.key, source.pipeline, claim.job_id, claim.key)

    def _failed(self, source: Source, exc: Exception) -> Outcome:
        """Report a permanent failure that made no job; the caller returns normally."""
        event = self._failure_event(source, exc)
        self.bus.put([event])
        return self._report(source, event, resumed=False)

    def _failure_event(self, source: Source, exc: Exception, job_id: int | None = None) -> Event:
        detail: dict[str, Any] = {"source": source.to_detail(), "cluster": self.target(source.pipeline)[0], "reason": str(exc)}
        if isinstance(exc, SlurmError):
            detail["error"] = exc.to_dict()
        if job_id is not None:
            detail["jobId"] = job_id
        return Event(FAILED, detail, (source.object_arn,), f"{source.idempotency_key}:failed")

    def _submitted_event(
        self, source: Source, job_id: int, adopted: bool, extra: Mapping[str, Any] | None = None
    ) -> Event:
        cluster, client = self.target(source.pipeline)
        detail = {
            **(extra or {}),
            "source": source.to_detail(),
            "jobId": job_id,
            "cluster": cluster,
            "apiVersion": client.version,
            "idempotencyKey": source.idempotency_key,
            "adopted": adopted,
        }
        return Event(SUBMITTED, detail, (source.object_arn,), source.idempotency_key)

    @staticmethod
    def _quietly(write: Callable[..., None], claim: Claim, *args: Any) -> None:
        """A store write on a failure path: it must not hide the failure being raised,
        and its own failure is safe (the lease then simply runs out; a lost claim is
        someone else's)."""
        try:
            write(claim, *args)
        except Exception as exc:  # noqa: BLE001 - logged; the caller raises the real failure
            logger.warning("claim not updated", extra={"key": claim.key, "write": write.__name__, "error": str(exc)})

    def _metadata(self, ref: ObjectRef) -> dict[str, str]:
        """User metadata of exactly this version (one HeadObject per object)."""
        args = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            args["VersionId"] = ref.version_id
        return dict(self.s3.head_object(**args).get("Metadata") or {})


def _stamped_key(comment: str | None) -> str | None:
    source = provenance.decode(comment)
    return source.idempotency_key if source else None


def _event(outbox: Mapping[str, Any]) -> Event:
    """An ``Event`` back from its recorded form (``dataclasses.asdict``)."""
    return Event(outbox["detail_type"], dict(outbox["detail"]), tuple(outbox.get("resources") or ()), outbox.get("event_id"))


def build_trigger(
    settings: Settings,
    *,
    dynamodb_client: Any,
    events_client: Any,
    s3_client: Any = None,
    secrets_client: Any = None,
    ec2_client: Any = None,
    ssm_client: Any = None,
) -> Trigger:
    """A ``Trigger`` from ``Settings`` and boto3 clients (moto's in tests): pipelines
    loaded and checked, a Slurm client per target built (each negotiates its version on
    first use)."""
    clients = {
        name: build_client(target, secrets_client=secrets_client, ec2_client=ec2_client, ssm_client=ssm_client)
        for name, target in settings.targets().items()
    }
    return Trigger(
        pipelines=load(settings.pipelines_path, settings.site),
        client=clients.pop(settings.cluster_name),
        targets=clients,
        store=DynamoDBIdempotencyStore(dynamodb_client, settings.idempotency_table, ttl_days=settings.idempotency_ttl_days),
        bus=EventBus(events_client, settings.event_bus, settings.event_source),
        cluster=settings.cluster_name,
        s3_client=s3_client,
        sets=DynamoDBSetStore(dynamodb_client, settings.sets_table, ttl_days=settings.idempotency_ttl_days),
        redrive_after=settings.idempotency_in_progress_seconds,
        settle_seconds=settings.read_timeout + settings.submit_settle_seconds,
        window_seconds=settings.idempotency_in_progress_seconds,
        report_batch_item_failures=settings.sqs_report_batch_item_failures,
        pacers={name: Pacer(target.max_connections) for name, target in settings.targets().items()},
    )
