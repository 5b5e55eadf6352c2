"""Slurm subcommands: talk to slurmrestd directly (parity with the AWS blog's slurmapi.py).

Every command works against every REST version: job files use the normalized
``JobSubmission`` JSON (see ``examples/job.json``), and the client translates.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import datetime
from typing import Any

import msgspec

from slurm_trigger_cli import aws_problem, emit, settings_from_args
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import SlurmClient, build_client
from slurm_trigger.slurm.dialects import DIALECTS
from slurm_trigger.slurm.errors import SlurmError, SlurmNotFoundError
from slurm_trigger.slurm.models import Job, JobSubmission

JOB_COLUMNS = ("job_id", "name", "state", "reason", "exit_code", "user", "partition", "submit_time")


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    def add(name: str, help_text: str, handler: Any, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, parents=[parent], help=help_text, description=help_text, aliases=aliases)
        p.set_defaults(handler=handler)
        return p

    add("ping", "Ask slurmctld through slurmrestd whether it is up (and the token good).", cmd_ping)
    add("diag", "Print slurmctld's diagnostics (sdiag).", cmd_diag)
    add("versions", "Show the REST versions the server serves, the one negotiated, and whether "
        "accounting (slurmdbd) is served.", cmd_versions)
    p = add("submit-job", "Submit a job described by a JobSubmission JSON file.", cmd_submit)
    p.add_argument("-j", "--job", required=True, metavar="FILE",
                   help="JobSubmission JSON (see examples/job.json); '-' reads stdin")
    p.add_argument("--print-body", action="store_true",
                   help="print the body this API version would POST, and do not submit")
    p = add("list-jobs", "List the jobs slurmctld holds (ended jobs leave after MinJobAge).", cmd_list)
    p.add_argument("--update-time", type=int, metavar="EPOCH",
                   help="only if something changed since this epoch")
    # get-job: the name the AWS blog's slurmapi.py gives it
    p = add("describe-job", "Show one job (from accounting when slurmctld no longer knows it).",
            cmd_describe, aliases=("get-job",))
    p.add_argument("-j", "--job-id", required=True, type=int, metavar="ID", help="Slurm job id")
    p = add("cancel-job", "Cancel a job (a job that already ended is left as it is).", cmd_cancel)
    p.add_argument("-j", "--job-id", required=True, type=int, metavar="ID", help="Slurm job id")


def job_to_dict(job: Job) -> dict[str, Any]:
    """A job as JSON: ISO 8601 UTC times, lists for tuples."""
    out: dict[str, Any] = {}
    for name, value in msgspec.structs.asdict(job).items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    out["is_final"] = job.is_final
    return out


def _client(args: argparse.Namespace) -> SlurmClient:
    return build_client(settings_from_args(args))


def _without_meta(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "meta" and v not in ([], None)}


def cmd_ping(args: argparse.Namespace) -> int:
    client = _client(args)
    body = client.ping()
    pings = [
        {
            "hostname": p.get("hostname"),
            "status": client.dialect.ping_status(p),
            "mode": p.get("mode"),
            "latency": p.get("latency"),
        }
        for p in body.get("pings") or ()
    ]
    if args.format == "table":
        emit(pings, "table", ("hostname", "status", "mode", "latency"))
    else:
        emit({"url": client.base_url, "version": client.version, "pings": pings}, "json")
    return 0


def cmd_diag(args: argparse.Namespace) -> int:
    body = _without_meta(_client(args).diag())
    stats = body.get("statistics") or {}
    if args.format == "table":
        rows = [{"statistic": k, "value": v} for k, v in stats.items() if not isinstance(v, (dict, list))]
        emit(rows, "table", ("statistic", "value"))
    else:
        emit(body, "json")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    """Served, known and negotiated per target: every target of the deployment, or the
    one ``--target`` names. A target that cannot be reached gets its error, not a stop."""
    settings = settings_from_args(args)
    targets = {settings.cluster_name: settings} if args.target else dict(settings.targets())
    data = [_versions(name, target) for name, target in targets.items()]
    if args.format == "table":
        rows = [
            {"target": t["target"], "version": v, "served": v in t["served"], "known": v in DIALECTS,
             "used": v == t["negotiated"]}
            for t in data if "error" not in t for v in sorted(set(t["served"]) | set(DIALECTS))
        ]
        rows += [{"target": t["target"], "version": "-", "error": t["error"]} for t in data if "error" in t]
        emit(rows, "table", ("target", "version", "served", "known", "used", "error"))
    else:
        emit(data, "json")
    return 1 if any("error" in t for t in data) else 0


def _versions(name: str, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"target": name, "served": [], "known": list(DIALECTS),
                           "pinned": settings.api_version, "negotiated": None}
    try:
        client = build_client(settings)
        out["url"] = client.base_url
        out["served"] = client.served_versions()
        out["negotiated"] = client.version
        out["accounting"] = client.accounting  # slurmdbd's /slurmdb/ served for that version
    except (SlurmError, ValueError, OSError) as exc:
        out["error"] = str(exc)
    except Exception as exc:  # botocore's (no region, no credentials, AccessDenied): this target's error
        problem = aws_problem(exc, slurm_only=True)
        if problem is None:
            raise
        out["error"] = problem[0]
    return out


def _read_submission(path: str) -> JobSubmission:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a job file is a JSON object")
    return JobSubmission.from_dict(data)


def cmd_submit(args: argparse.Namespace) -> int:
    sub = _read_submission(args.job)
    client = _client(args)
    if args.print_body:
        emit({"version": client.version, "body": client.submit_body(sub)}, "json")
        return 0
    result = client.submit(sub)
    data = dataclasses.asdict(result)
    data["warnings"] = list(result.warnings)
    data["version"] = client.version
    emit(data, args.format, ("job_id", "step_id", "user_message", "warnings"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    page = _client(args).list_jobs(update_time=args.update_time)
    jobs = [job_to_dict(j) for j in page.jobs]
    if args.format == "table":
        emit(jobs, "table", JOB_COLUMNS)
    else:
        emit({"changed": page.changed, "last_update": page.last_update, "jobs": jobs}, "json")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        job, source = client.get_job(args.job_id), "slurmctld"
    except SlurmNotFoundError:
        # the job left slurmctld (MinJobAge): slurmdbd still knows it when there is accounting
        found = client.get_accounting_job(args.job_id)
        if found is None:
            raise
        job, source = found, "accounting"
    job = {**job_to_dict(job), "source": source}
    if args.format == "table":
        emit([{"field": k, "value": v} for k, v in job.items()], "table", ("field", "value"))
    else:
        emit(job, "json")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    _client(args).cancel_job(args.job_id)
    emit({"job_id": args.job_id, "cancelled": True}, args.format, ("job_id", "cancelled"))
    return 0
