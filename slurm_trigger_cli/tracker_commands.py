"""Tracker subcommands: ``status`` (the tracked jobs, or with ``--sets`` the sets
waiting for members), ``poll`` (one poll now, as the
schedule would run it) and ``dashboard put|show`` (the CloudWatch dashboard)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import boto3

from slurm_trigger import provenance
from slurm_trigger_cli import dashboard
from slurm_trigger_cli import emit, settings_from_args
from slurm_trigger.jobstore import DynamoDBJobStore, TrackedJob
from slurm_trigger.observability import SERVICE
from slurm_trigger.pipelines import load_all
from slurm_trigger.setstore import DynamoDBSetStore, SetState
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from slurm_trigger.tracker import build_tracker, iso, tracked_from_job

STATUS_COLUMNS = ("job_id", "state", "previous_state", "pipeline", "s3_uri", "submitted_at", "started_at", "ended_at", "exit_code")
MIN_WATCH, MAX_WATCH = 1.0, 3600.0
SET_COLUMNS = ("pipeline", "set", "member_count", "missing", "first_at", "deadline", "reported_at")
MAX_URI = 72  # characters of s3_uri in the table


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "status", parents=[parent], help="Show the jobs the tracker follows.",
        description="The tracked jobs with their source object and last state, from the jobs table "
        "(JOBS_TABLE), or live from Slurm with --live; with --sets the sets still waiting for members "
        "(SETS_TABLE) and their deadlines.",
    )
    p.add_argument("--live", action="store_true", help="ask Slurm instead of the jobs table (only jobs it still holds)")
    p.add_argument("--sets", action="store_true", help="the sets waiting for members, soonest deadline first (SETS_TABLE)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="with --sets: show at most N sets (default 100)")
    p.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                   help=f"refresh every SECONDS (default 5, {MIN_WATCH:g}..{MAX_WATCH:g}) until Ctrl-C")
    p.add_argument("--times", type=int, metavar="N", help="with --watch: stop after N refreshes")
    p.set_defaults(handler=cmd_status, format="table")

    p = subparsers.add_parser(
        "poll", parents=[parent], help="Run one tracker poll now (publishes events, updates the jobs table).",
        description="One poll as the schedule runs it: list changed jobs, publish their state changes "
        "to EVENT_BUS_NAME, save them to JOBS_TABLE.",
    )
    p.add_argument("--sweep", action="store_true", help="also list every job and look up the ones Slurm may have forgotten")
    p.set_defaults(handler=cmd_poll)

    p = subparsers.add_parser("dashboard", help="The CloudWatch dashboard of slurm-trigger.")
    sub = p.add_subparsers(dest="dashboard_command", required=True, metavar="ACTION")
    put = sub.add_parser("put", help="Create or replace the dashboard in the current region.")
    put.add_argument("--name", default=dashboard.DEFAULT_NAME, help=f"dashboard name (default {dashboard.DEFAULT_NAME})")
    put.set_defaults(handler=cmd_dashboard_put)
    show = sub.add_parser("show", help="Print the dashboard body (what dashboards/slurm-trigger.json holds).")
    show.add_argument("--region", default=dashboard.DEFAULT_REGION, help="region written into the widgets")
    show.set_defaults(handler=cmd_dashboard_show)


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    columns, noun = STATUS_COLUMNS, "job"
    fetch: Callable[[], list[dict[str, Any]]]
    if args.sets:
        if args.live:
            raise ValueError("--sets reads the sets table; it has no --live")
        sets = DynamoDBSetStore(boto3.client("dynamodb"), settings.sets_table)
        specs = _collect_specs(settings.pipelines_path, settings.site)
        limit = max(args.limit, 1)

        def fetch() -> list[dict[str, Any]]:
            waiting = sets.waiting(limit)
            if len(waiting) == limit:
                print(f"slurm-trigger: showing {limit} waiting sets; more may wait (--limit)", file=sys.stderr)
            return [_set_row(s, specs.get(s.pipeline)) for s in waiting]

        columns, noun = SET_COLUMNS, "set"
    elif args.live:
        client = build_client(settings)
        fetch = lambda: _live_rows(client, settings.cluster_name, settings.track_all_jobs)  # noqa: E731
    else:
        store = DynamoDBJobStore(boto3.client("dynamodb"), settings.jobs_table)
        fetch = lambda: [_row(j) for j in store.list_jobs(settings.cluster_name)]  # noqa: E731
    if args.format == "table" and not args.sets:
        unshortened = fetch
        fetch = lambda: [_for_table(r) for r in unshortened()]  # noqa: E731
    if args.watch is None:
        emit(fetch(), args.format, columns)
        return 0
    interval = min(max(args.watch, MIN_WATCH), MAX_WATCH)
    shown = 0
    try:
        while args.times is None or shown < args.times:
            rows = fetch()
            if sys.stdout.isatty():
                print("\033[H\033[2J", end="")
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {len(rows)} {noun}(s), every {interval:g}s, Ctrl-C to stop")
            emit(rows, args.format, columns)
            sys.stdout.flush()
            shown += 1
            if args.times is None or shown < args.times:
                time.sleep(interval)
    except KeyboardInterrupt:
        print()
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    tracker = build_tracker(settings, dynamodb_client=boto3.client("dynamodb"), events_client=boto3.client("events"))
    result = tracker.poll(sweep=True if args.sweep else None)
    emit(dataclasses.asdict(result), "json")
    return 0


def cmd_dashboard_put(args: argparse.Namespace) -> int:
    cloudwatch = boto3.client("cloudwatch")
    region = cloudwatch.meta.region_name
    body = dashboard.build(namespace=Settings.from_env().metrics_namespace, service=SERVICE, region=region)
    messages = dashboard.put(cloudwatch, args.name, body)
    emit({"dashboard": args.name, "region": region, "validation": messages}, "json")
    return 0


def cmd_dashboard_show(args: argparse.Namespace) -> int:
    print(dashboard.render(dashboard.build(region=args.region)), end="")
    return 0


def _row(job: TrackedJob) -> dict[str, Any]:
    row = job.to_dict()
    row["s3_uri"] = job.s3_uri
    return row


def _collect_specs(path: str, site: Any) -> dict[str, Any]:
    """Each set pipeline's ``collect``, to say what a set still lacks; the sets are
    shown without it when the pipelines are not here (``validate`` reports errors)."""
    if not Path(path).exists():
        return {}
    pipelines, _ = load_all(path, site)
    return {p.name: p.collect for p in pipelines if p.collect is not None}


def _set_row(state: SetState, spec: Any) -> dict[str, Any]:
    """One waiting set. ``deadline``: when the scheduled check fires a window set or
    reports an incomplete one (none for sets without; a reported set waits on)."""
    return {
        "pipeline": state.pipeline,
        "set": state.name,
        "bucket": state.bucket,
        "idempotency_key": state.set_id,
        "member_count": len(state.members),
        "members": sorted(state.members),
        "expected": list(state.expected) if state.expected is not None else None,
        "missing": spec.missing(state.members, state.expected) if spec is not None else None,
        "first_at": iso(state.first_at),
        "deadline": iso(state.due_at),
        "reported_at": iso(state.reported_at),
    }


def _for_table(row: dict[str, Any], width: int = MAX_URI) -> dict[str, Any]:
    """Long object keys would push every other column off the screen (JSON keeps them)."""
    uri = row.get("s3_uri")
    if uri and len(uri) > width:
        half = (width - 1) // 2
        row = {**row, "s3_uri": f"{uri[:half]}…{uri[-half:]}"}
    return row


def _live_rows(client: Any, cluster: str, track_all: bool) -> list[dict[str, Any]]:
    rows = []
    for job in client.list_jobs().jobs:
        src = provenance.decode(job.comment)
        if src is not None or track_all:
            rows.append(_row(tracked_from_job(cluster, job, src)))
    return sorted(rows, key=lambda r: r["job_id"])

