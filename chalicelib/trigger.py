"""Object → exactly one Slurm job per matching pipeline: the path all subscriptions share.

For each pipeline an object matches: render the job, claim the object version's
idempotency key, submit (or adopt the job an earlier, silent attempt made), publish
"Slurm Job Submitted", then record the job id. Failures split in two:

* transient (Slurm unreachable or 5xx, token refused twice, a claim in progress,
  AWS errors): raised, so Lambda or SQS delivers the object again later; the claim is
  released when Slurm certainly has no job, else expired so the retry asks Slurm first.
* permanent (template error, control characters, Slurm rejects the body): a
  "Slurm Job Submission Failed" event, a log line, ``SubmissionFailures``; the claim is
  released (a fixed pipeline can run again, e.g. by ``backfill``); nothing is raised.

Everything per container (clients, pipelines, the negotiated version) is built once and
handed in; a ``Trigger`` holds no per-event state.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib import provenance, s3events
from chalicelib.eventbus import Event, EventBus
from chalicelib.idempotency import Claim, DynamoDBIdempotencyStore, IdempotencyStore, idempotency_key
from chalicelib.observability import logger, metrics as default_metrics, tracer
from chalicelib.pipelines import Pipeline, load, matching
from chalicelib.provenance import Source
from chalicelib.s3events import ObjectRef
from chalicelib.settings import Settings
from chalicelib.slurm import build_client
from chalicelib.slurm.errors import SlurmAuthError, SlurmError
from chalicelib.slurm.models import JobSubmission
from chalicelib.templating import TemplateError, object_variables, render

SUBMITTED = "Slurm Job Submitted"
FAILED = "Slurm Job Submission Failed"
MAX_COMMENT = 1024  # slurmctld refuses longer comments ("Pathname ... too long")
T = TypeVar("T")


def _comment(source: Source, template_comment: str | None) -> str:
    """The provenance comment, within Slurm's limit. Long keys (up to 1,024 bytes, and
    JSON escapes non-ASCII six-fold) first lose the template's comment, then the
    key is shortened, ending in "...". The idempotency key always stays whole, and
    the job's environment and the trigger's event carry the full object key."""
    text = provenance.encode(source, template_comment)
    if len(text.encode()) <= MAX_COMMENT:
        return text
    key = source.key
    text = provenance.encode(source)
    while len(text.encode()) > MAX_COMMENT:
        key = key[: max(0, len(key) - (len(text.encode()) - MAX_COMMENT) - 3)]
        text = provenance.encode(dataclasses.replace(source, key=key + "..."))
    return text


def _source(ref: ObjectRef, pipeline: Pipeline) -> Source:
    key = idempotency_key(pipeline.name, ref)
    return Source(ref.bucket, ref.key, pipeline.name, ref.version_id, ref.etag, idempotency_key=key)


def render_job(
    ref: ObjectRef,
    pipeline: Pipeline,
    metadata: Mapping[str, str] | None = None,
    source: Source | None = None,
) -> JobSubmission:
    """The job ``pipeline`` makes of ``ref``, its provenance stamped in the comment.
    Raises ``TemplateError`` (permanent) for values it must refuse."""
    source = source or _source(ref, pipeline)
    job = render(pipeline.template, object_variables(ref, pipeline.name, source.idempotency_key or "", metadata))
    return dataclasses.replace(job, comment=_comment(source, job.comment))


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


@dataclass(frozen=True)
class Outcome:
    """What became of one object for one pipeline (or of an unmatched object)."""

    status: str  # submitted | adopted | duplicate | unmatched | failed
    bucket: str
    key: str
    pipeline: str | None = None
    job_id: int | None = None
    idempotency_key: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class Trigger:
    """The exactly-once path from ``ObjectRef`` to Slurm job."""

    def __init__(
        self,
        *,
        pipelines: Sequence[Pipeline],
        client: Any,  # a SlurmClient: submit, find_jobs_by_comment, version
        store: IdempotencyStore,
        bus: EventBus,
        cluster: str,
        s3_client: Any = None,  # only for pipelines with ``metadata: true``
        metrics: Any = default_metrics,
        report_batch_item_failures: bool = False,  # the SQS mapping has ReportBatchItemFailures
    ) -> None:
        self.pipelines = list(pipelines)
        self.client = client
        self.store = store
        self.bus = bus
        self.cluster = cluster
        self.s3 = s3_client
        self.metrics = metrics
        self.report_batch_item_failures = report_batch_item_failures
        self._batch = BatchProcessor(event_type=EventType.SQS)

    # --- entry points, one per subscription shape
    def handle_event(self, event: Mapping[str, Any]) -> list[Outcome]:
        """A direct S3 notification or an EventBridge "Object Created" event."""
        return self.handle_objects(s3events.parse(event))

    def handle_sqs(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """An SQS batch. A message fails when its body is unreadable or any of its
        objects hit a transient error; the other messages of the batch are done.

        Where the event source mapping reports item failures
        (``report_batch_item_failures``), ``{"batchItemFailures": [...]}`` names the
        messages to retry. Elsewhere Lambda ignores that answer and deletes the whole
        batch on any normal return, so a batch with a failed message raises
        ``BatchNotDone`` instead: every message comes back, and the claims make the
        repeats of those already done duplicates."""
        answer = process_partial_response(
            event=dict(event), record_handler=self._sqs_record, processor=self._batch, context=context
        )
        failed = [f["itemIdentifier"] for f in answer.get("batchItemFailures") or []]
        if failed and not self.report_batch_item_failures:
            raise BatchNotDone(failed, len(event.get("Records") or []))
        return answer

    def _sqs_record(self, record: SQSRecord) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self.handle_objects(s3events.parse_sqs_body(record.body))]

    # --- the core
    def handle_objects(self, refs: Iterable[ObjectRef]) -> list[Outcome]:
        """Every object, every matching pipeline."""
        return _each(refs, self.handle)

    @tracer.capture_method
    def handle(self, ref: ObjectRef) -> list[Outcome]:
        """One object: one job per matching pipeline."""
        matched = matching(self.pipelines, ref)
        if not matched:
            logger.info("object matches no pipeline: skipped", extra={"bucket": ref.bucket, "key": ref.key})
            self.metrics.add_metric(name="UnmatchedObjects", unit=MetricUnit.Count, value=1)
            return [Outcome("unmatched", ref.bucket, ref.key)]
        metadata = self._metadata(ref) if any(p.metadata for p in matched) else None

        def one(pipeline: Pipeline) -> list[Outcome]:
            try:
                return [self.submit(ref, pipeline, metadata if pipeline.metadata else None)]
            except Exception as exc:
                logger.warning(
                    "submission will be retried",
                    extra={"bucket": ref.bucket, "key": ref.key, "pipeline": pipeline.name, "error": str(exc)},
                )
                raise

        return _each(matched, one)

    def submit(self, ref: ObjectRef, pipeline: Pipeline, metadata: Mapping[str, str] | None = None) -> Outcome:
        """At most one job for (pipeline, object version), however often called."""
        source = _source(ref, pipeline)
        key = source.idempotency_key
        try:
            job = render_job(ref, pipeline, metadata, source)
        except TemplateError as exc:
            return self._failed(source, exc)
        claim = self.store.claim(key)
        if claim.completed:
            logger.info("object version already has its job", extra={"key": key, "job_id": claim.job_id})
            self.metrics.add_metric(name="DuplicateObjectsSkipped", unit=MetricUnit.Count, value=1)
            return Outcome("duplicate", ref.bucket, ref.key, pipeline.name, claim.job_id, key)
        try:
            job_id, adopted = self._adopt_or_submit(claim, job)
        except SlurmError as exc:
            return self._submit_failed(claim, source, exc)
        except BaseException:
            self.store.expire(key)  # outcome unknown: the next attempt asks Slurm
            raise
        try:
            self._publish_submitted(source, job_id, adopted)
            self.store.complete(key, job_id)
        except BaseException:
            self.store.expire(key)  # the job exists: the next attempt adopts and publishes
            raise
        logger.info(
            "job adopted" if adopted else "job submitted",
            extra={"job_id": job_id, "pipeline": pipeline.name, "bucket": ref.bucket, "key": ref.key, "idempotency_key": key},
        )
        self.metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=1)
        return Outcome("adopted" if adopted else "submitted", ref.bucket, ref.key, pipeline.name, job_id, key)

    def _adopt_or_submit(self, claim: Claim, job: JobSubmission) -> tuple[int, bool]:
        if claim.taken_over:
            # An earlier attempt ended without a word: its job may exist.
            found = self.client.find_jobs_by_comment(claim.key)
            if found:
                return min(j.job_id for j in found), True
        return self.client.submit(job).job_id, False

    def _submit_failed(self, claim: Claim, source: Source, exc: SlurmError) -> Outcome:
        if exc.job_id:
            # Slurm made the job but reported errors (e.g. 22.05's 200 + errors): keep
            # it as the object's job so no second one is made, and report the errors.
            outcome = self._failed(source, exc, job_id=exc.job_id)
            self.store.complete(claim.key, exc.job_id)
            return outcome
        # Slurm certainly has no job when it refused the request itself (a rejection,
        # the token) or it was never reached. A 5xx may come from a proxy that did
        # forward the POST: like a timeout, the next attempt asks Slurm first.
        never_accepted = not exc.transient or isinstance(exc, SlurmAuthError) or (
            exc.status is None and not exc.maybe_submitted
        )
        if never_accepted and not claim.taken_over:
            self.store.release(claim.key)
        else:
            self.store.expire(claim.key)
        if exc.transient:
            raise exc
        return self._failed(source, exc)

    def _failed(self, source: Source, exc: Exception, job_id: int | None = None) -> Outcome:
        """Report a permanent failure; the caller returns normally (no retry)."""
        reason = str(exc)
        detail: dict[str, Any] = {"source": source.to_detail(), "cluster": self.cluster, "reason": reason}
        if isinstance(exc, SlurmError):
            detail["error"] = exc.to_dict()
        if job_id is not None:
            detail["jobId"] = job_id
        logger.error(
            "submission failed permanently",
            extra={"bucket": source.bucket, "key": source.key, "pipeline": source.pipeline, "reason": reason},
        )
        self.metrics.add_metric(name="SubmissionFailures", unit=MetricUnit.Count, value=1)
        self.bus.put([Event(FAILED, detail, (source.object_arn,), f"{source.idempotency_key}:failed")])
        return Outcome("failed", source.bucket, source.key, source.pipeline, job_id, source.idempotency_key, reason)

    def _publish_submitted(self, source: Source, job_id: int, adopted: bool) -> None:
        detail = {
            "source": source.to_detail(),
            "jobId": job_id,
            "cluster": self.cluster,
            "apiVersion": self.client.version,
            "idempotencyKey": source.idempotency_key,
            "adopted": adopted,
        }
        self.bus.put([Event(SUBMITTED, detail, (source.object_arn,), source.idempotency_key)])

    def _metadata(self, ref: ObjectRef) -> dict[str, str]:
        """User metadata of exactly this version (one HeadObject per object)."""
        args = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            args["VersionId"] = ref.version_id
        return dict(self.s3.head_object(**args).get("Metadata") or {})


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
    loaded and checked, the Slurm client built (its version is negotiated on first use)."""
    return Trigger(
        pipelines=load(settings.pipelines_path),
        client=build_client(settings, secrets_client=secrets_client, ec2_client=ec2_client, ssm_client=ssm_client),
        store=DynamoDBIdempotencyStore(
            dynamodb_client,
            settings.idempotency_table,
            ttl_days=settings.idempotency_ttl_days,
            in_progress_seconds=settings.idempotency_in_progress_seconds,
        ),
        bus=EventBus(events_client, settings.event_bus, settings.event_source),
        cluster=settings.cluster_name,
        s3_client=s3_client,
        report_batch_item_failures=settings.sqs_report_batch_item_failures,
    )
