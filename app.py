"""slurm-trigger's Chalice app: only wiring. Every handler calls into slurm_trigger.

slurm_trigger is imported when a handler first runs, not here: every function of the app
imports this file, and a new container should pay only for what its own first event
needs (the tracker never loads the trigger's modules, and the reverse);
bench/bench_import.py measures it.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

import boto3
from chalice import Chalice, Rate

if TYPE_CHECKING:
    from slurm_trigger.tracker import Tracker
    from slurm_trigger.trigger import Trigger

# Logs are the Powertools Logger's JSON lines (slurm_trigger/observability.py): Chalice's own
# handler would sit on the same "slurm-trigger" logger and print each line a second time.
app = Chalice(app_name="slurm-trigger", configure_logs=False)


def _flush_metrics() -> None:
    from slurm_trigger.observability import metrics

    metrics.flush_metrics()

# --- tracker (docs/tracker.md) -------------------------------------------------------------

# Minutes between polls; read at import because `chalice deploy` bakes it into the rule.
POLL_RATE_MINUTES = int(os.environ.get("POLL_RATE_MINUTES") or 1)


@lru_cache(maxsize=1)
def _trackers() -> tuple[Tracker, ...]:
    """One per target and container: token caches and HTTP connections survive warm starts."""
    from slurm_trigger.settings import Settings
    from slurm_trigger.tracker import build_tracker

    ddb, events = boto3.client("dynamodb"), boto3.client("events")
    return tuple(
        build_tracker(s, dynamodb_client=ddb, events_client=events) for s in Settings.from_env().targets().values()
    )


@app.schedule(Rate(POLL_RATE_MINUTES, unit=Rate.MINUTES))
def poll_jobs(event):
    """Publish every state change of the tracked jobs, each target under its own lease
    and cursor. A lease lasts as long as this invocation may, so a poll that dies frees
    the cluster for the next one."""
    from slurm_trigger.observability import metrics
    from slurm_trigger.tracker import record_metrics

    context = getattr(event, "context", None)
    out, failed = {}, []
    try:
        for tracker in _trackers():  # one unreachable cluster does not stop the others' polls
            lease = context.get_remaining_time_in_millis() / 1000 + 5 if context else None
            try:
                result = tracker.poll(lease_seconds=lease)
            except Exception as exc:
                failed.append(exc)
                continue
            record_metrics(result, metrics)
            out[tracker.cluster] = {"skipped": result.skipped, "transitions": result.transitions, "lost": result.lost}
    finally:
        metrics.flush_metrics()
    if failed:
        raise failed[0]
    return out if len(out) > 1 else next(iter(out.values()))


# --- trigger (docs/trigger.md) -------------------------------------------------------------

# Which subscriptions this stage has and on what: read at import because `chalice deploy`
# and `chalice package` turn the decorators below into resources. Both import app.py with
# the stage's environment_variables already set, as the Lambda runtime does.
SUBSCRIPTIONS = {s.strip() for s in (os.environ.get("SUBSCRIPTIONS") or "").split(",") if s.strip()}
INPUT_BUCKET = os.environ.get("INPUT_BUCKET") or ""
INPUT_QUEUE = os.environ.get("INPUT_QUEUE") or ""
if SUBSCRIPTIONS - {"s3", "sqs", "eventbridge"}:
    raise ValueError(f"SUBSCRIPTIONS={os.environ['SUBSCRIPTIONS']!r}: use s3, sqs and/or eventbridge")
if SUBSCRIPTIONS & {"s3", "eventbridge"} and not INPUT_BUCKET:
    raise ValueError("SUBSCRIPTIONS has s3 or eventbridge: set INPUT_BUCKET")
if "sqs" in SUBSCRIPTIONS and not INPUT_QUEUE:
    raise ValueError("SUBSCRIPTIONS has sqs: set INPUT_QUEUE")
# At most this many concurrent batches from the queue (the mapping's ScalingConfig):
# keep it <= the function's reserved_concurrency, so no batch is throttled and uses up a
# receive (docs/configuration.md).
SQS_MAXIMUM_CONCURRENCY = int(os.environ.get("SQS_MAXIMUM_CONCURRENCY") or 5)
# Messages per batch, and the seconds Lambda may wait to fill one: a batch shares its
# claim, record and complete transactions and sends its events ten to a PutEvents, so a
# burst costs 0.4 AWS calls an object at 10 and 0.13 at 100 (bench/bench_burst.py).
SQS_BATCH_SIZE = int(os.environ.get("SQS_BATCH_SIZE") or 10)
SQS_BATCHING_WINDOW_SECONDS = int(os.environ.get("SQS_BATCHING_WINDOW_SECONDS") or 0)
if not 1 <= SQS_BATCH_SIZE <= 100 or (SQS_BATCH_SIZE > 10 and SQS_BATCHING_WINDOW_SECONDS < 1):
    raise ValueError("SQS_BATCH_SIZE: 1 to 10, or up to 100 with SQS_BATCHING_WINDOW_SECONDS >= 1")


@lru_cache(maxsize=1)
def _trigger() -> Trigger:
    """One per container: pipelines loaded, clients and the negotiated version kept."""
    from slurm_trigger.settings import Settings
    from slurm_trigger.trigger import build_trigger

    return build_trigger(
        Settings.from_env(),
        dynamodb_client=boto3.client("dynamodb"),
        events_client=boto3.client("events"),
        s3_client=boto3.client("s3"),
    )


def _objects(event) -> list:
    """S3 notification or EventBridge event: transient errors raise, Lambda retries and
    then hands the event to the function's on-failure destination (docs/deploy.md).
    Claims last as long as this invocation may, plus the settle time of a submit."""
    from slurm_trigger.trigger import lambda_deadline

    deadline = lambda_deadline(getattr(event, "context", None))
    try:
        return [o.to_dict() for o in _trigger().handle_event(event.to_dict(), deadline=deadline)]
    finally:
        _flush_metrics()


# Minutes between two checks of waiting sets (windows that end, deadlines that pass).
SET_CHECK_MINUTES = int(os.environ.get("SET_CHECK_MINUTES") or 5)


@app.schedule(Rate(SET_CHECK_MINUTES, unit=Rate.MINUTES))
def check_sets(event):
    """Fire window sets, report sets past their deadline, finish sets whose job a
    dead attempt left unmade (docs/trigger.md#sets)."""
    try:
        return [o.to_dict() for o in _trigger().check_sets()]
    finally:
        _flush_metrics()


if "s3" in SUBSCRIPTIONS:

    @app.on_s3_event(bucket=INPUT_BUCKET, events=["s3:ObjectCreated:*"])
    def on_object_created(event):
        return _objects(event)


if "sqs" in SUBSCRIPTIONS:

    @app.on_sqs_message(
        queue=INPUT_QUEUE,
        batch_size=SQS_BATCH_SIZE,
        maximum_batching_window_in_seconds=SQS_BATCHING_WINDOW_SECONDS,
        maximum_concurrency=SQS_MAXIMUM_CONCURRENCY,
    )
    def on_queue_message(event):
        """Only the failed messages return where the mapping reports item failures;
        elsewhere a batch with a failed message raises and returns whole (docs/trigger.md)."""
        try:
            return _trigger().handle_sqs(event.to_dict(), getattr(event, "context", None))
        finally:
            _flush_metrics()


if "eventbridge" in SUBSCRIPTIONS:

    @app.on_cw_event(
        {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": {"bucket": {"name": [INPUT_BUCKET]}}}
    )
    def on_object_event(event):
        return _objects(event)
