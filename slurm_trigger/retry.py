"""Retries by policy: a pipeline's failed job submitted again, exactly once per attempt.

A pipeline may say ``retry: {attempts, exit_codes, states, delay}``. The trigger keeps
the rendered job of its first attempt beside that attempt's claim (the idempotency
record), and stamps every job with its attempt (``Source.attempt``). When the tracker
sees such a job end in a state or exit code the policy names, ``Retrier`` submits the
kept job again through ``Trigger.submit_rendered`` under the key
``<first key>#attempt-<n>``: a repeated poll, a restarted tracker or a second one
claims the same key and gets the job already made (counted in Slurm by its comment).
The attempt that fails last is reported once ("Slurm Job Retries Exhausted", a log
line, ``RetriesExhausted``) and never submitted again.

Slurm's own requeue keeps the job id and is followed by the tracker as the same job
(a ``REQUEUED`` flag), so it never reaches here and is no attempt. A delay becomes
Slurm's ``begin_time`` on the next attempt: no timer on our side.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from aws_lambda_powertools.metrics import MetricUnit

from slurm_trigger import provenance
from slurm_trigger.eventbus import Event
from slurm_trigger.observability import logger
from slurm_trigger.provenance import Source
from slurm_trigger.slurm.models import JobSubmission

if TYPE_CHECKING:  # the tracker's container imports the trigger only when a pipeline retries
    from slurm_trigger.idempotency import IdempotencyStore
    from slurm_trigger.jobstore import TrackedJob
    from slurm_trigger.trigger import Trigger

EXHAUSTED = "Slurm Job Retries Exhausted"
MAX_ATTEMPTS = 10  # AWS Batch's limit for a retry strategy
# Lost capacity, not the job's fault: what a Spot or cloud cluster retries by default.
DEFAULT_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"})
# States a policy may name. Not COMPLETED (success), CANCELLED (someone decided) or
# the tracker's LOST (the outcome is unknown: the job may still run).
STATES = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "DEADLINE"}) | DEFAULT_STATES
_FIELDS = {"attempts", "exit_codes", "states", "delay"}


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` counts every run, the first included (``attempts: 3``: two
    retries). ``exit_codes`` retry a job that FAILED with one of them (none unless
    listed); ``states`` retry a job that ended in one of them (default
    ``DEFAULT_STATES``; ``[]`` for none). ``delay``: seconds before the next attempt
    may start."""

    attempts: int
    exit_codes: frozenset[int] = frozenset()
    states: frozenset[str] = DEFAULT_STATES
    delay: int = 0

    def matches(self, state: str, exit_code: int | None) -> bool:
        """Whether a job that ended so is one to retry (attempts aside)."""
        if state in self.states:
            return True
        return state == "FAILED" and exit_code is not None and exit_code in self.exit_codes


def parse(data: Any) -> RetryPolicy:
    """The ``retry`` section of a pipeline; ``ValueError`` names the field."""
    from slurm_trigger.collect import duration  # the pipelines' module; the tracker needs it only to load them

    if not isinstance(data, Mapping):
        raise ValueError("'retry' must be an object {attempts, exit_codes, states, delay}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown retry field(s) {', '.join(unknown)}")
    attempts = data.get("attempts")
    if type(attempts) is not int or not 2 <= attempts <= MAX_ATTEMPTS:
        raise ValueError(f"'retry.attempts' must be an integer from 2 to {MAX_ATTEMPTS} (every run, the first included)")
    codes = data.get("exit_codes", [])
    if not isinstance(codes, list) or not all(type(c) is int and 1 <= c <= 255 for c in codes):
        raise ValueError("'retry.exit_codes' must be a list of exit codes from 1 to 255 (0 is success)")
    states = data.get("states", sorted(DEFAULT_STATES))
    if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
        raise ValueError("'retry.states' must be a list of job states")
    bad = sorted(set(states) - STATES)
    if bad:
        raise ValueError(f"'retry.states' cannot name {', '.join(bad)}: choose from {', '.join(sorted(STATES))}")
    delay = data.get("delay", 0)
    seconds = 0 if delay in (0, "0") else duration(delay, "'retry.delay'")
    if not codes and not states:
        raise ValueError("'retry' names no exit code and no state: nothing would be retried")
    return RetryPolicy(attempts, frozenset(codes), frozenset(states), seconds)


def attempt_key(original: str, attempt: int) -> str:
    """The idempotency key of attempt ``attempt`` (2 and on) of the job ``original`` keys."""
    return f"{original}#attempt-{attempt}"


def first_attempt(source: Source, policy: RetryPolicy | None, job: JobSubmission) -> tuple[Source, JobSubmission]:
    """A job about to be submitted for the first time, stamped as attempt 1 of its
    policy's (unchanged without a policy, or when already stamped)."""
    if policy is None or source.attempt is not None:
        return source, job
    source = dataclasses.replace(source, attempt=1, max_attempts=policy.attempts)
    return source, dataclasses.replace(job, comment=provenance.restamp(job.comment, source))


class Retrier:
    """The tracker's side: ``after`` each poll's finished jobs, before they are saved.

    ``trigger`` submits to the tracker's own cluster (where the job ran);
    ``store`` is the trigger's idempotency store, where the first attempt's job is kept.
    """

    def __init__(
        self,
        trigger: Trigger,
        store: IdempotencyStore,
        policies: Mapping[str, RetryPolicy],
        *,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.trigger = trigger
        self.store = store
        self.policies = dict(policies)
        self.metrics = metrics if metrics is not None else trigger.metrics
        self.clock = clock

    def after(self, jobs: Iterable[TrackedJob]) -> set[int]:
        """Retry, or report as exhausted, each job that ended as its policy says. The
        ids of the jobs whose retry failed for now: the tracker does not save them, so
        the next poll tries again (under the same key: never twice)."""
        again: set[int] = set()
        for job in jobs:
            source = job.source
            policy = self.policies.get(job.pipeline or "")
            if not (job.final and source and source.attempt and policy and policy.matches(job.state, job.exit_code)):
                continue
            try:
                if source.attempt < (source.max_attempts or policy.attempts):
                    self._resubmit(job, source, policy)
                else:
                    self._exhausted(job, source)
            except Exception as exc:  # noqa: BLE001 - logged; the next poll retries
                logger.warning("retry not done; the next poll tries again",
                               extra={"cluster": job.cluster, "job_id": job.job_id, "error": str(exc)})
                again.add(job.job_id)
        return again

    def _resubmit(self, job: TrackedJob, source: Source, policy: RetryPolicy) -> None:
        original = source.original_key or source.idempotency_key or ""
        kept = self.store.kept_job(original)
        if kept is None:  # e.g. submitted before the policy was added: nothing to run again
            self._exhausted(job, source, reason="the first attempt's job was not kept; it cannot be submitted again")
            return
        attempt = source.attempt + 1  # type: ignore[operator]
        nxt = dataclasses.replace(source, idempotency_key=attempt_key(original, attempt), attempt=attempt,
                                  max_attempts=source.max_attempts or policy.attempts, original_key=original)
        rendered = JobSubmission.from_dict(kept)
        rendered = dataclasses.replace(rendered, comment=provenance.restamp(rendered.comment, nxt))
        if policy.delay:
            rendered = dataclasses.replace(rendered, begin_time=int(self.clock()) + policy.delay)
        outcome = self.trigger.submit_rendered(nxt, rendered, {"retryOf": _ended(job)})
        logger.info("job ended as its pipeline's retry policy says: next attempt " + outcome.status,
                    extra={"cluster": job.cluster, "job_id": job.job_id, "state": job.state, "exit_code": job.exit_code,
                           "attempt": attempt, "next_job_id": outcome.job_id, "idempotency_key": nxt.idempotency_key})

    def _exhausted(self, job: TrackedJob, source: Source, reason: str | None = None) -> None:
        """The last attempt failed: reported once (one eventId per original key)."""
        original = source.original_key or source.idempotency_key or ""
        reason = reason or f"attempt {source.attempt} of {source.max_attempts} ended {job.state}; no attempt is left"
        detail = {"cluster": job.cluster, "source": source.to_detail(), "reason": reason, **_ended(job)}
        self.trigger.bus.put([Event(EXHAUSTED, detail, (f"slurm:{job.cluster}:job/{job.job_id}", source.object_arn),
                                    f"{original}:retries-exhausted")])
        logger.error("job failed and will not be retried", extra={"cluster": job.cluster, "job_id": job.job_id,
                                                                  "pipeline": job.pipeline, "reason": reason})
        self.metrics.add_metric(name="RetriesExhausted", unit=MetricUnit.Count, value=1)


def _ended(job: TrackedJob) -> dict[str, Any]:
    return {"jobId": job.job_id, "state": job.state, "exitCode": job.exit_code}


class OnDemand:
    """The tracker's ``Retrier``, built when a poll first sees a finished job stamped
    with an attempt: a tracker whose jobs never retry loads no pipeline and nothing of
    the trigger (a cold start stays as short as before)."""

    def __init__(self, build: Callable[[], Retrier | None]) -> None:
        self._build = build
        self._retrier: Retrier | None = None
        self._built = False

    def after(self, jobs: Iterable[TrackedJob]) -> set[int]:
        candidates = [j for j in jobs if j.final and j.attempt]
        if not candidates:
            return set()
        if not self._built:
            self._retrier, self._built = self._build(), True
        return self._retrier.after(candidates) if self._retrier else set()


def build_retrier(settings: Any, slurm_client: Any, *, dynamodb_client: Any, events_client: Any) -> Retrier | None:
    """The tracker's ``Retrier`` for ``settings``' cluster, or None when no pipeline
    retries; ``slurm_client`` is the tracker's own: a retry goes where the job ran."""
    from slurm_trigger.eventbus import EventBus
    from slurm_trigger.idempotency import DynamoDBIdempotencyStore
    from slurm_trigger.pipelines import load_all
    from slurm_trigger.trigger import Trigger

    loaded, errors = load_all(settings.pipelines_path, settings.site)
    for error in errors:  # the trigger refuses them; the tracker still tracks every job
        logger.error("pipeline not loaded: its failed jobs are not retried", extra={"error": str(error)})
    pipelines = [p for p in loaded if p.retry is not None]
    if not pipelines:
        return None
    store = DynamoDBIdempotencyStore(dynamodb_client, settings.idempotency_table, ttl_days=settings.idempotency_ttl_days)
    trigger = Trigger(
        # a retry goes where the job ran: this tracker's cluster, whatever ``target`` says now
        pipelines=[dataclasses.replace(p, target=None) for p in pipelines],
        client=slurm_client,
        store=store,
        bus=EventBus(events_client, settings.event_bus, settings.event_source),
        cluster=settings.cluster_name,
        settle_seconds=settings.read_timeout + settings.submit_settle_seconds,
        window_seconds=settings.idempotency_in_progress_seconds,
    )
    return Retrier(trigger, store, {p.name: p.retry for p in pipelines if p.retry})
