"""A set of objects → exactly one job (or one job array): collecting and firing.

Each member's event records it (``SetStore.add``: one DynamoDB write); the write
that finds the set complete moves it OPEN → COMPLETE with a conditional write, which
one attempt wins however many race, and that attempt renders the set's job and hands
it to ``Trigger.submit_rendered`` under the set's idempotency key. A redelivered
member of a closed set drives that same submit, which answers "duplicate" once the
job exists or adopts the job a dead winner made. The scheduled ``check`` fires window
sets, reports sets past their deadline (event and metric; they stay open, so a late
member still completes them) and finishes sets whose winner died.

Members reach the job only through its environment (``collect.member_environment``);
the template sees the set's own values (its name, folder, the pattern's captures),
each inserted as safely as an object's values are.
"""
from __future__ import annotations

import dataclasses
import posixpath
import time
from typing import Any, Callable, Iterable

from aws_lambda_powertools.metrics import MetricUnit

from slurm_trigger.collect import Collect, Place, manifest_members, member_environment
from slurm_trigger import provenance
from slurm_trigger.eventbus import Event
from slurm_trigger.observability import logger
from slurm_trigger.outcome import Outcome
from slurm_trigger.pipelines import Pipeline
from slurm_trigger.provenance import Source
from slurm_trigger.s3events import ObjectRef, clean_etag
from slurm_trigger.setstore import COMPLETE, OPEN, SUBMITTED, Member, SetState, SetStore, Where
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.steps import Step
from slurm_trigger.templating import TemplateError, check_value, render

INCOMPLETE = "Slurm Trigger Set Incomplete"
MAX_MANIFEST = 1 << 20  # bytes read of a manifest
EVENT_MEMBERS = 100  # members listed in an event (EventBridge entries hold 256 KB)


def set_source(pipeline: Pipeline, bucket: str, place: Place) -> Source:
    """The provenance of a set's job: the set's name stands where an object key would."""
    return Source(bucket, place.name, pipeline.name, idempotency_key=place.set_id)


def render_set_job(
    pipeline: Pipeline,
    bucket: str,
    place: Place,
    members: list[tuple[str, Member]],
    step: Step | None = None,
    source: Source | None = None,
) -> JobSubmission:
    """The job a complete set makes (or one step of it): the template with the set's
    values, every member in the environment, one array task per member for
    ``as: array``. Raises ``TemplateError`` (permanent) for values it must refuse."""
    spec = pipeline.collect
    assert spec is not None
    for name, member in members:
        check_value("member key", member.key)
        check_value("member name", name)
    values = {
        "bucket": bucket,
        "pipeline": pipeline.name,
        "idempotency_key": place.set_id,
        "set": place.name,
        "folder": place.folder,
        "member_count": str(len(members)),
        **place.captures,
    }
    job = render(step.template if step else pipeline.template, values)
    job.environment.update({"SLURM_TRIGGER_SET": place.name, "SLURM_TRIGGER_BUCKET": bucket})
    job.environment.update(member_environment(spec, [(n, m.key) for n, m in members]))
    if spec.array if step is None or step.array is None else step.array:
        job = dataclasses.replace(job, array=spec.array_spec(len(members)))
    source = source or set_source(pipeline, bucket, place)
    return dataclasses.replace(job, comment=provenance.comment(source, job.comment))


def dry_run(pipeline: Pipeline, refs: Iterable[ObjectRef], manifest: str | None = None) -> list[dict[str, Any]]:
    """What a set pipeline would make of these objects, as if they landed in this
    order and nothing else were in the bucket: each set, complete or not, its
    members, what it lacks and the job it would submit (``slurm-trigger render``).
    ``manifest`` is the text of the manifest, for manifest sets."""
    spec = pipeline.collect
    assert spec is not None
    sets: dict[str, tuple[Place, str, dict[str, Member], bool]] = {}
    for ref in refs:
        if not pipeline.accepts(ref):
            continue
        place = spec.place(pipeline.name, ref)
        if place is None:
            continue
        control = spec.is_control(ref)
        _, _, present, landed = sets.get(place.set_id, (place, ref.bucket, {}, False))
        if not control:
            present[place.member] = _info(ref)
        sets[place.set_id] = (place, ref.bucket, present, landed or control)
    if spec.kind == "marker":  # members are the marker's folder, not a set of their own
        members = {m.key: m for _, _, p, landed in sets.values() if not landed for m in p.values()}
        sets = {k: v for k, v in sets.items() if v[3]}
        for place, bucket, present, _ in sets.values():
            prefix = f"{place.folder}/" if place.folder else ""
            present.update({k[len(prefix):]: m for k, m in members.items() if k.startswith(prefix)})
    out = []
    for place, bucket, present, landed in sets.values():
        expected = manifest_members(manifest) if spec.kind == "manifest" and landed and manifest else None
        complete = spec.complete(present, expected) or (spec.kind == "marker" and landed) or bool(spec.window)
        row: dict[str, Any] = {"pipeline": pipeline.name, "set": place.name, "idempotency_key": place.set_id, "complete": complete}
        if complete:
            ordered = [(m, present[m]) for m in spec.order(present, expected)]
            row["members"] = [m.key for _, m in ordered]
            source = set_source(pipeline, bucket, place)
            row["jobs"] = [
                (step, render_set_job(pipeline, bucket, place, ordered, step if step.name else None, step.source(source)))
                for step in pipeline.jobs
            ]
        else:
            row["members"] = sorted(m.key for m in present.values())
            row["missing"] = spec.missing(present, expected)
        out.append(row)
    return out


def _info(ref: ObjectRef) -> Member:
    return Member(ref.key, ref.version_id, ref.etag, ref.size)


class SetCollector:
    """The set side of a ``Trigger``: it records members and fires sets through the
    trigger's exactly-once submit."""

    def __init__(self, trigger: Any, store: SetStore | None, *, redrive_after: int = 90, clock: Callable[[], float] = time.time) -> None:
        self.trigger = trigger
        self.store = store
        self.redrive_after = redrive_after  # a winner that went silent this long is finished by `check`
        self.clock = clock

    # --- one object
    def collect(self, ref: ObjectRef, pipeline: Pipeline, *, deadline: float | None = None) -> Any:
        """One object for a set pipeline: record it, and fire its set if it is the
        one that completes it (before ``deadline``, the attempt's end)."""
        spec = pipeline.collect
        assert spec is not None
        if self.store is None:
            raise RuntimeError(f"pipeline {pipeline.name!r} collects sets: the Trigger needs a SetStore (sets=...)")
        try:
            place = spec.place(pipeline.name, ref)
        except TemplateError as exc:  # a control character in a capture
            return self.trigger._failed(Source(ref.bucket, ref.key, pipeline.name, ref.version_id, ref.etag), exc)
        if place is None:
            logger.info("object is no member of a set", extra={"key": ref.key, "pipeline": pipeline.name})
            return Outcome("unmatched", ref.bucket, ref.key, pipeline.name)
        if spec.kind == "marker":
            if not spec.is_control(ref):  # members wait for the marker: nothing to record
                return Outcome("collected", ref.bucket, ref.key, pipeline.name, idempotency_key=None)
            return self._fire(pipeline, ref.bucket, place, self._listed(ref, pipeline), record=False, deadline=deadline)
        where = Where(place.set_id, pipeline.name, ref.bucket, place.name, spec.span)
        if spec.kind == "manifest" and spec.is_control(ref):
            try:
                expected = manifest_members(self._read(ref))
            except ValueError as exc:
                return self.trigger._failed(Source(ref.bucket, ref.key, pipeline.name, ref.version_id, ref.etag), exc)
            state = self.store.expect(where, expected)
        else:
            state = self.store.add(where, place.member, _info(ref))
            if not state.changed and not _info(ref).same_version(state.members.get(place.member)):
                logger.warning(
                    "member arrived after its set was closed: not in the set's job",
                    extra={"key": ref.key, "pipeline": pipeline.name, "set": place.name, "job_id": state.job_id},
                )
                self.trigger.metrics.add_metric(name="LateSetMembers", unit=MetricUnit.Count, value=1)
                return Outcome("late", ref.bucket, ref.key, pipeline.name, state.job_id, place.set_id)
        return self._advance(pipeline, place, state, ref, deadline=deadline)

    def _advance(
        self, pipeline: Pipeline, place: Place, state: SetState, ref: ObjectRef | None, *, deadline: float | None = None
    ) -> Any:
        spec = pipeline.collect
        assert spec is not None
        key = ref.key if ref else place.name
        if state.status == SUBMITTED:
            self.trigger.metrics.add_metric(name="DuplicateObjectsSkipped", unit=MetricUnit.Count, value=1)
            return Outcome("duplicate", state.bucket, key, pipeline.name, state.job_id, place.set_id)
        if state.status == OPEN:
            if not spec.complete(state.members, state.expected):
                logger.info("set member recorded", extra={"set": place.name, "pipeline": pipeline.name, "present": len(state.members)})
                return Outcome("collected", state.bucket, key, pipeline.name, idempotency_key=place.set_id)
            closed = self.store.close(place.set_id, redrive_after=self.redrive_after)
            if closed is None:  # a concurrent attempt closed it and fires it
                return Outcome("collected", state.bucket, key, pipeline.name, idempotency_key=place.set_id)
            state = closed
        if state.status != COMPLETE:  # FAILED: reported already
            return Outcome("failed", state.bucket, key, pipeline.name, idempotency_key=place.set_id, reason="the set's job was refused")
        members = [(m, state.members[m]) for m in spec.order(state.members, state.expected)]
        return self._fire(pipeline, state.bucket, place, members, record=True, deadline=deadline)

    def _fire(
        self,
        pipeline: Pipeline,
        bucket: str,
        place: Place,
        members: list[tuple[str, Member]],
        *,
        record: bool,
        deadline: float | None = None,
    ) -> Any:
        source = set_source(pipeline, bucket, place)
        if not members:
            outcome = self.trigger._failed(source, TemplateError("the set has no member"))
        else:
            keys = [m.key for _, m in members]
            detail = {"set": {"name": place.name, "memberCount": len(keys), "members": keys[:EVENT_MEMBERS]}}
            outcome = self.trigger.submit_steps(
                source,
                pipeline.jobs,
                lambda step, src: render_set_job(pipeline, bucket, place, members, step if step.name else None, src),
                detail,
                deadline=deadline,
            )
        if record and (outcome.job_id is not None or outcome.status == "failed"):
            self.store.finished(place.set_id, outcome.job_id)
        return outcome

    # --- reading S3
    def _listed(self, marker: ObjectRef, pipeline: Pipeline) -> list[tuple[str, Member]]:
        """A marker's set: every object under its folder that the pipeline's match
        accepts (ListObjectsV2), the marker excluded, by key."""
        folder = posixpath.dirname(marker.key)
        prefix = f"{folder}/" if folder else ""
        members = []
        for page in self.trigger.s3.get_paginator("list_objects_v2").paginate(Bucket=marker.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                ref = ObjectRef(marker.bucket, item["Key"], size=item.get("Size"), etag=clean_etag(item.get("ETag")))
                if item["Key"] != marker.key and pipeline.match(ref) and not pipeline.collect.is_control(ref):
                    members.append((item["Key"][len(prefix):], _info(ref)))
        return sorted(members)

    def _read(self, ref: ObjectRef) -> str:
        args = {"Bucket": ref.bucket, "Key": ref.key, "Range": f"bytes=0-{MAX_MANIFEST - 1}"}
        if ref.version_id:
            args["VersionId"] = ref.version_id
        body = self.trigger.s3.get_object(**args)["Body"].read()
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the manifest is not UTF-8 text: {exc}") from None

    # --- the scheduled check
    def check(self, pipelines: Iterable[Pipeline], now: int | None = None) -> list[Any]:
        """Every set something is due for: fire window sets, report sets past their
        deadline, finish closed sets whose job was not recorded. A transient error
        on one set is logged and left for the next check."""
        now = int(self.clock()) if now is None else now
        outcomes = []
        for pipeline in pipelines:
            spec = pipeline.collect
            if spec is None or spec.kind == "marker":
                continue
            for state in self.store.due(pipeline.name, now):
                try:
                    outcome = self._due(pipeline, spec, state)
                except Exception as exc:  # noqa: BLE001 - the next check tries again
                    logger.warning("set check will be retried", extra={"set": state.name, "pipeline": pipeline.name, "error": str(exc)})
                    continue
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _place(self, pipeline: Pipeline, spec: Collect, state: SetState) -> Place:
        """The set's place again, from any of its members' keys."""
        some = next(iter(state.members.values()), None)
        place = spec.place(pipeline.name, ObjectRef(state.bucket, some.key)) if some else None
        return place or Place(state.set_id, state.name, "", {}, state.name)

    def _due(self, pipeline: Pipeline, spec: Collect, state: SetState) -> Any:
        place = self._place(pipeline, spec, state)
        if state.status == OPEN and spec.window:
            if not state.members:
                return None
            closed = self.store.close(state.set_id, redrive_after=self.redrive_after)
            return None if closed is None else self._advance(pipeline, place, closed, None)
        if state.status == OPEN:
            self._report(pipeline, spec, state)
            self.store.reported(state.set_id)
            return None
        return self._advance(pipeline, place, state, None)

    def _report(self, pipeline: Pipeline, spec: Collect, state: SetState) -> None:
        """An incomplete set past its deadline: event, metric, log line."""
        present = sorted(m.key for m in state.members.values())
        missing = spec.missing(state.members, state.expected)
        detail: dict[str, Any] = {
            "source": Source(state.bucket, state.name, pipeline.name, idempotency_key=state.set_id).to_detail(),
            "cluster": self.trigger.target(pipeline.name)[0],
            "set": {
                "name": state.name,
                "idempotencyKey": state.set_id,
                "memberCount": len(present),
                "members": present[:EVENT_MEMBERS],
                "missing": missing,
                "expected": spec.count if spec.kind == "count" else None,
                "firstSeen": state.first_at,
                "deadline": state.due_at,
            },
        }
        logger.error("set incomplete past its deadline", extra={"set": state.name, "pipeline": pipeline.name, "missing": missing})
        self.trigger.metrics.add_metric(name="IncompleteSets", unit=MetricUnit.Count, value=1)
        arn = f"arn:aws:s3:::{state.bucket}/{state.name}"
        self.trigger.bus.put([Event(INCOMPLETE, detail, (arn,), f"{state.set_id}:incomplete:{state.due_at}")])
