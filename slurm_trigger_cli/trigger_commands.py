"""Trigger subcommands: check pipelines, see the job an object would make, backfill.

``backfill`` goes through the same exactly-once path as the Lambda handlers (claims in
the idempotency table, provenance in the comment, events on the bus), so running it
over objects that already have jobs submits nothing new.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import boto3

from slurm_trigger_cli import emit, settings_from_args
from slurm_trigger.idempotency import idempotency_key
from slurm_trigger.pipelines import load, load_all
from slurm_trigger.s3events import ObjectRef, clean_etag
from slurm_trigger.sets import dry_run
from slurm_trigger.steps import Step
from slurm_trigger.slurm import build_client
from slurm_trigger.slurm.dialects import DIALECTS
from slurm_trigger.trigger import Outcome, build_trigger, render_job

SUMMARY = ("submitted", "duplicates", "unmatched", "failed")
_COUNTED_AS = {"submitted": "submitted", "adopted": "submitted", "superseded": "submitted", "duplicate": "duplicates"}


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    def add(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, parents=[parent], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("validate", "Load every pipeline file and report every problem (exit 1 if any).", cmd_validate)
    p.add_argument("path", nargs="?", help="pipeline folder or file (default: env PIPELINES_PATH or ./pipelines)")

    p = add(
        "render",
        "Dry run: the pipelines an object matches and the exact JSON each would POST "
        "(exit 1 if none matches). With --api-version no cluster is needed.",
        cmd_render,
    )
    p.add_argument("uris", nargs="+", metavar="s3://BUCKET/KEY",
                   help="the object (key as stored, not URL-encoded); several: a dry run of sets, in landing order")
    p.add_argument("--pipelines", metavar="PATH", help="pipeline folder or file (default: env PIPELINES_PATH)")
    p.add_argument("--manifest", metavar="FILE", help="the text of a manifest set's manifest (a local file)")
    p.add_argument("--size", type=int, help="object size in bytes")
    p.add_argument("--etag", help="object ETag")
    p.add_argument("--version-id", help="object version id (versioned buckets)")
    p.add_argument("--sequencer", help="the event's sequencer (unversioned buckets)")
    p.add_argument("--metadata", action="append", default=[], metavar="NAME=VALUE",
                   help="user metadata for pipelines with 'metadata: true' (repeatable)")

    p = add(
        "backfill",
        "Submit the objects already under a prefix through the exactly-once path; "
        "prints a summary (exit 1 if any failed).",
        cmd_backfill,
    )
    p.add_argument("uri", metavar="s3://BUCKET/PREFIX", help="bucket and key prefix to list")
    p.add_argument("--pipelines", metavar="PATH", help="pipeline folder or file (default: env PIPELINES_PATH)")
    p.add_argument("--object-seconds", type=float, default=60.0, metavar="N",
                   help="the deadline of each object (default 60): its claims last N seconds plus the "
                        "settle time, so if backfill is killed a later delivery takes the object over "
                        "after that; nothing is submitted past it")


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); the key may be empty (a prefix)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def _settings(args: argparse.Namespace) -> Any:
    settings = settings_from_args(args)
    path = getattr(args, "pipelines", None) or getattr(args, "path", None)
    return dataclasses.replace(settings, pipelines_path=path) if path else settings


def _collects(pipeline: Any) -> str | None:
    """What a set pipeline waits for, in a few words (None: one job per object)."""
    spec = pipeline.collect
    if spec is None:
        return None
    what = {"members": f"members {'+'.join(spec.members)}", "count": f"{spec.count} objects" if spec.count else "a window",
            "manifest": f"manifest {spec.manifest}", "marker": f"marker {spec.marker}"}[spec.kind]
    if spec.window:
        what += f" within {spec.window}s"
    if spec.deadline:
        what += f", deadline {spec.deadline}s"
    return what + (f" -> array (%{spec.throttle})" if spec.array and spec.throttle else " -> array" if spec.array else " -> job")


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pipelines, errors = load_all(settings.pipelines_path, settings.site)
    rows = [{"pipeline": p.name, "file": p.file, "collect": _collects(p), "ok": True} for p in pipelines]
    rows += [{"pipeline": None, "file": None, "collect": None, "ok": False, "error": str(e)} for e in errors]
    emit(rows, args.format, ["pipeline", "file", "collect", "ok", "error"])
    for e in errors:
        print(f"slurm-trigger: {e}", file=sys.stderr)
    return 1 if errors or not pipelines else 0


def _bodies(jobs: list[tuple[Step, Any]], body_of: Any) -> dict[str, Any]:
    """``body`` for one job; ``steps`` (each step's name and body) for a pipeline with
    steps, the earlier steps' ids shown as ``<step>``: Slurm gives them."""
    if len(jobs) == 1 and jobs[0][0].name is None:
        return {"body": body_of(jobs[0][1])}
    names = {s.name: f"<{s.name}>" for s, _ in jobs if s.name}
    return {"steps": [
        {"step": s.name, "body": body_of(dataclasses.replace(job, dependency=s.dependency(names) or job.dependency))}
        for s, job in jobs
    ]}


def cmd_render(args: argparse.Namespace) -> int:
    settings = _settings(args)
    refs = []
    for uri in args.uris:
        bucket, key = parse_uri(uri)
        if not key:
            raise ValueError(f"{uri!r} names no object")
        refs.append(ObjectRef(bucket, key, size=args.size, etag=clean_etag(args.etag),
                              version_id=args.version_id, sequencer=args.sequencer))
    metadata = dict(item.split("=", 1) for item in args.metadata if "=" in item)
    pipelines = load(settings.pipelines_path, settings.site)
    if settings.api_version:  # pinned: the body is known without asking a cluster
        version, body_of = settings.api_version, DIALECTS[settings.api_version].submit_body
    else:
        client = build_client(settings)
        version, body_of = client.version, client.submit_body
    manifest = Path(args.manifest).read_text(encoding="utf-8") if args.manifest else None
    out: list[dict[str, Any]] = []
    for pipeline in pipelines:
        if pipeline.collect is not None:
            for row in dry_run(pipeline, refs, manifest):
                if "jobs" in row:
                    row.update(api_version=version, **_bodies(row.pop("jobs"), body_of))
                out.append(row)
            continue
        for ref in (r for r in refs if pipeline.accepts(r)):
            jobs = [(s, render_job(ref, pipeline, metadata if pipeline.metadata else None, step=s)) for s in pipeline.jobs]
            out.append({"pipeline": pipeline.name, "object": ref.s3_uri, "idempotency_key": idempotency_key(pipeline.name, ref),
                        "api_version": version, **_bodies(jobs, body_of)})
    emit(out, "json")  # always: the body is nested JSON, no table can show it
    if not out:
        verb = "matches" if len(refs) == 1 else "match"
        print(f"slurm-trigger: {', '.join(r.s3_uri for r in refs)} {verb} no pipeline: skipped", file=sys.stderr)
        return 1
    return 0


def list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[ObjectRef]:
    """Current objects under ``prefix``: with their version id when the bucket is
    versioned (the same idempotency key the events give), else ETag only."""
    versioned = s3.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")
    if versioned:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                if v.get("IsLatest"):
                    yield _ref(bucket, v, v.get("VersionId"))
    else:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                yield _ref(bucket, o, None)


def _ref(bucket: str, item: dict[str, Any], version_id: str | None) -> ObjectRef:
    modified = item.get("LastModified")
    return ObjectRef(
        bucket=bucket,
        key=item["Key"],
        size=item.get("Size"),
        etag=clean_etag(item.get("ETag")),
        version_id=version_id if version_id not in (None, "null") else None,
        event_time=modified.isoformat() if isinstance(modified, datetime) else None,
    )


def tally(outcomes: list[Outcome], counts: dict[str, int], errors: list[dict[str, Any]]) -> None:
    """Add ``outcomes`` to the ``SUMMARY`` counts; failed ones also to ``errors``."""
    for o in outcomes:
        counts[_COUNTED_AS.get(o.status, o.status)] += 1
        if o.status == "failed":
            errors.append(o.to_dict())


def _progress(done: int, total: int, counts: dict[str, int]) -> None:
    width = 30
    filled = width * done // total if total else width
    tally = " ".join(f"{k}={counts[k]}" for k in SUMMARY)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {tally}", end="", file=sys.stderr, flush=True)


def cmd_backfill(args: argparse.Namespace) -> int:
    settings = _settings(args)
    bucket, prefix = parse_uri(args.uri)
    s3 = boto3.client("s3")
    refs = list(list_objects(s3, bucket, prefix))
    trigger = build_trigger(
        settings,
        dynamodb_client=boto3.client("dynamodb"),
        events_client=boto3.client("events"),
        s3_client=s3,
    )
    counts = dict.fromkeys(SUMMARY, 0)
    errors: list[dict[str, Any]] = []
    for done, ref in enumerate(refs, 1):
        try:
            outcomes = trigger.handle(ref, deadline=time.time() + args.object_seconds)
        except Exception as exc:  # noqa: BLE001 - reported per object, the rest go on
            outcomes = [Outcome("failed", ref.bucket, ref.key, reason=f"{type(exc).__name__}: {exc}")]
        tally(outcomes, counts, errors)
        _progress(done, len(refs), counts)
    if refs:
        print(file=sys.stderr)
    emit({"objects": len(refs), **counts, "failures": errors}, args.format)
    return 1 if counts["failed"] else 0
