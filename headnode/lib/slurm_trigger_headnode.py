"""The Python half of the head node kit (``slurm-trigger-headnode`` is the other).

Subcommands:

``hook SPOOL``
    Run by slurmctld as ``PrologSlurmctld`` (the job starts) and as the
    ``jobcomp/script`` ``JobCompLoc`` (the job ended, whatever way). For a job
    slurm-trigger submitted (its comment carries the provenance marker) it writes one
    ready-to-put EventBridge entry into SPOOL and exits 0 at once: slurmctld waits
    for a PrologSlurmctld before it starts the job, and requeues the job when it
    fails, so the hook never calls AWS, never fails and only needs the standard
    library (it runs under the system ``python3`` as SlurmUser).
``push SPOOL``
    The daemon (a systemd service) that puts the spooled entries on the bus through
    the head node's role: at most 10 per call, refused ones kept and tried again
    with backoff, entries older than ``--max-age`` dropped (the tracker's poll
    reconciles whatever a push missed; both give a change the same ``eventId``).
``publish-cert PEM_FILE``, ``put-token``, ``secret-exists``, ``remove``
    The kit's AWS calls (SSM parameter of the certificate, Secrets Manager secret
    of the service user's token); boto3 from the kit's Python.

The event's ``detail`` is the tracker's (``slurm_trigger.tracker.state_change_detail``);
its ``eventId`` and ``resources`` come from ``slurm_trigger_jobevents``, a link to
``slurm_trigger/jobevents.py`` (the bundle ships the file itself).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import slurm_trigger_jobevents as jobevents  # noqa: E402
import slurm_trigger_provenance as provenance  # noqa: E402

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
MAX_ENTRIES = 10


# ----------------------------------------------------------------------------- hook
def iso(epoch: float | None) -> str | None:
    """As the tracker writes times: ISO 8601 UTC, to the second, with Z."""
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and int(value) > 0 else None


def scontrol_job(job_id: str, scontrol: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict, times in UTC (``TZ=UTC``: scontrol prints
    local time). Fields are split on `` Key=``, so a value with spaces (a comment)
    stays whole. The id of a job array's last task is the array's id, for which
    scontrol prints a line per task: the job's own line is the one of its ``JobId``."""
    lines = subprocess.run(
        [scontrol, "show", "job", "-o", job_id],
        capture_output=True, text=True, timeout=5, env={**os.environ, "TZ": "UTC"}, check=True,
    ).stdout.strip().splitlines()
    out = next((line for line in lines if line.startswith(f"JobId={job_id} ")), lines[0] if lines else "")
    fields: dict[str, str] = {}
    parts = re.split(r" (?=[A-Za-z][A-Za-z0-9_:/]*=)", out)
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _scontrol_time(value: str | None) -> int | None:
    if not value or value in ("Unknown", "None", "N/A"):
        return None
    return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def _exit(value: str | None) -> tuple[int | None, int | None]:
    """scontrol's ``ExitCode=3:0`` (status:signal), as the tracker reports it: the
    exit status, or only the signal when one ended the job."""
    if not value or ":" not in value:
        return None, None
    code, _, sig = value.partition(":")
    if sig.isdigit() and int(sig):
        return None, int(sig)
    return (int(code) if code.isdigit() else None), None


def _number(value: str | None) -> int | None:
    """scontrol's ``ArrayJobId=``/``ArrayTaskId=`` (absent outside arrays; a range
    such as ``2-3%1`` for an array's pending remainder, which is no one task)."""
    return int(value) if value and value.isdigit() else None


def _reason(value: str | None) -> str | None:
    return value if value and value != "None" else None


def hook_entry(env: dict[str, str], cluster: str, bus: str, source: str, scontrol: str,
               track_all: bool = False, now: float | None = None) -> dict[str, Any] | None:
    """The PutEvents entry for the transition slurmctld is reporting, or None when
    the job is not slurm-trigger's (or the call is not one of the two hooks)."""
    now = time.time() if now is None else now
    if env.get("SLURM_SCRIPT_CONTEXT") == "prolog_slurmctld":
        job_id = env.get("SLURM_JOB_ID", "")
        comment = env.get("SLURM_JOB_COMMENT")
        if not job_id or (not track_all and not (comment and provenance.MARKER in comment)):
            return None
        info = scontrol_job(job_id, scontrol)
        state, previous = "RUNNING", "PENDING"
        submit = _scontrol_time(info.get("SubmitTime"))
        start = _epoch(env.get("SLURM_JOB_START_TIME")) or int(now)
        end = None
        name, user, partition = env.get("SLURM_JOB_NAME", ""), env.get("SLURM_JOB_USER"), env.get("SLURM_JOB_PARTITION")
        exit_code, signal, reason = None, None, _reason(info.get("Reason"))
    elif env.get("JOBID") and env.get("JOBSTATE"):  # jobcomp/script
        job_id = env["JOBID"]
        state = env["JOBSTATE"].split()[0].upper()
        if state not in FINAL:
            return None  # e.g. RESIZING: not a state change the tracker reports
        info = scontrol_job(job_id, scontrol)
        comment = info.get("Comment")
        if not track_all and not (comment and provenance.MARKER in comment):
            return None
        submit = _epoch(env.get("SUBMIT")) or _scontrol_time(info.get("SubmitTime"))
        start = _epoch(env.get("START"))
        end = _epoch(env.get("END")) or int(now)
        previous = "RUNNING" if start else "PENDING"
        name, user, partition = env.get("JOBNAME", ""), env.get("USERNAME"), env.get("PARTITION")
        exit_code, signal = _exit(info.get("ExitCode"))
        reason = _reason(info.get("Reason"))
    else:
        return None
    src = provenance.decode(comment)
    submitted_at = iso(submit)
    array_job = _number(info.get("ArrayJobId"))
    detail = {
        "cluster": cluster,
        "jobId": int(job_id),
        "jobName": name or "",
        "arrayJobId": array_job,
        "arrayTaskId": _number(info.get("ArrayTaskId")) if array_job else None,
        "state": state,
        "previousState": previous,
        "stateFlags": [],
        "reason": reason,
        "exitCode": exit_code,
        "signal": signal,
        "partition": partition or None,
        "user": user or None,
        "submittedAt": submitted_at,
        "startedAt": iso(start),
        "endedAt": iso(end),
        "source": src.to_detail() if src else None,
        "publishedBy": jobevents.PUSHED,
        "eventId": jobevents.event_id(cluster, int(job_id), state, submitted_at),
    }
    return {
        "Source": source,
        "DetailType": jobevents.DETAIL_TYPE,
        "Detail": json.dumps(detail, separators=(",", ":")),
        "Resources": list(jobevents.job_resources(cluster, int(job_id), src.object_arn if src else None)),
        "EventBusName": bus,
    }


def read_env_file(path: str) -> dict[str, str]:
    """The kit's ``headnode.env`` (KEY=value lines, no shell)."""
    values: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


def cmd_hook(args: argparse.Namespace) -> int:
    """Never fails: a failed PrologSlurmctld would requeue the job."""
    try:
        conf = read_env_file(args.config)
        entry = hook_entry(
            dict(os.environ), conf["CLUSTER_NAME"], conf["EVENT_BUS"], conf.get("EVENT_SOURCE", "slurm-trigger"),
            conf.get("SCONTROL", "scontrol"), track_all=conf.get("TRACK_ALL_JOBS") == "true",
        )
        if entry is None:
            return 0
        spool = Path(conf["SPOOL"])
        detail = json.loads(entry["Detail"])
        name = f"{time.time_ns()}-{detail['jobId']}-{detail['state']}.json"
        tmp = spool / f".{name}.tmp"
        old = os.umask(0o027)
        try:
            tmp.write_text(json.dumps({"entry": entry, "at": time.time()}))
        finally:
            os.umask(old)
        tmp.rename(spool / name)  # the pusher only reads whole files
    except Exception as exc:  # noqa: BLE001 - reported, never raised (see docstring)
        print(f"slurm-trigger hook: not pushed ({type(exc).__name__}: {exc}); the tracker's poll will report it",
              file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- push
def _events_client(endpoint: str | None, region: str | None) -> Any:
    import boto3

    return boto3.client("events", endpoint_url=endpoint or None, region_name=region or None)


def push_once(spool: Path, client: Any, max_age: float, state: dict[str, Any], now: float | None = None) -> int:
    """Put what the spool holds; returns how many entries were accepted."""
    now = time.time() if now is None else now
    files = sorted(p for p in spool.glob("*.json"))
    accepted = 0
    ready: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        if state.get(path.name, (0, 0.0))[1] > now:
            continue  # backing off after a refusal
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written, or unreadable: the next round sees it
        if now - float(record.get("at", now)) > max_age:
            print(f"dropping {path.name}: older than {max_age:.0f} s (the poll reports it)", file=sys.stderr)
            path.unlink(missing_ok=True)
            state.pop(path.name, None)
            continue
        ready.append((path, record["entry"]))
    for i in range(0, len(ready), MAX_ENTRIES):
        batch = ready[i:i + MAX_ENTRIES]
        try:
            answer = client.put_events(Entries=[e for _, e in batch])
            results = answer.get("Entries", [])
        except Exception as exc:  # noqa: BLE001 - the bus is away: keep the files, back off
            print(f"PutEvents failed ({type(exc).__name__}: {exc}); keeping {len(batch)} entries", file=sys.stderr)
            results = [{"ErrorCode": "Unreachable"}] * len(batch)
        for (path, _), result in zip(batch, results):
            if result.get("EventId") and not result.get("ErrorCode"):
                path.unlink(missing_ok=True)
                state.pop(path.name, None)
                accepted += 1
            else:
                tries = state.get(path.name, (0, 0.0))[0] + 1
                state[path.name] = (tries, now + min(60.0, 0.5 * 2 ** tries))
    return accepted


def cmd_push(args: argparse.Namespace) -> int:
    conf = read_env_file(args.config)
    client = _events_client(conf.get("AWS_ENDPOINT"), conf.get("REGION"))
    spool = Path(conf["SPOOL"])
    state: dict[str, Any] = {}
    while True:
        push_once(spool, client, float(conf.get("PUSH_MAX_AGE", "3600")), state)
        if args.once:
            return 0
        time.sleep(args.interval)


# ----------------------------------------------------------------------------- AWS objects
def _client(service: str, conf: dict[str, str]) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=conf.get("AWS_ENDPOINT") or None, region_name=conf.get("REGION") or None)


TAGS = [{"Key": "slurm-trigger:managed-by", "Value": "headnode-kit"}]


def cmd_publish_cert(args: argparse.Namespace) -> int:
    """Put the PEM (bundle) at the parameter, unless it already holds exactly that."""
    conf = read_env_file(args.config)
    pem = Path(args.pem).read_text()
    ssm = _client("ssm", conf)
    name = conf["CA_PARAMETER"]
    try:
        if ssm.get_parameter(Name=name)["Parameter"]["Value"] == pem:
            print("unchanged")
            return 0
    except ssm.exceptions.ParameterNotFound:
        pass
    ssm.put_parameter(Name=name, Value=pem, Type="String", Overwrite=True,
                      Description=f"slurmrestd TLS certificate of cluster {conf['CLUSTER_NAME']} (slurm-trigger head node kit)")
    print("published")
    return 0


def cmd_put_token(args: argparse.Namespace) -> int:
    """The token comes on stdin (never an argument); the secret is created on first use."""
    conf = read_env_file(args.config)
    token = sys.stdin.read().strip()
    if not token:
        print("no token on stdin", file=sys.stderr)
        return 1
    value = json.dumps({"token": token, "user": conf["SERVICE_USER"]})
    sm = _client("secretsmanager", conf)
    name = conf["TOKEN_SECRET"]
    try:
        sm.put_secret_value(SecretId=name, SecretString=value)
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(Name=name, SecretString=value, Tags=TAGS,
                         Description=f"JWT of Slurm user {conf['SERVICE_USER']} on cluster {conf['CLUSTER_NAME']}, "
                                     "rotated by the slurm-trigger head node kit")
    print(f"token for {conf['SERVICE_USER']} stored in {name}")
    return 0


def cmd_secret_exists(args: argparse.Namespace) -> int:
    """Exit 0 when the token secret exists (a fresh account, or one cleaned up, has none)."""
    conf = read_env_file(args.config)
    sm = _client("secretsmanager", conf)
    try:
        sm.describe_secret(SecretId=conf["TOKEN_SECRET"])
        return 0
    except sm.exceptions.ResourceNotFoundException:
        return 1


def cmd_remove(args: argparse.Namespace) -> int:
    """Uninstall: the parameter and the secret go (no recovery window, so a new
    cluster of the same name can create them again at once)."""
    conf = read_env_file(args.config)
    ssm, sm = _client("ssm", conf), _client("secretsmanager", conf)
    try:
        ssm.delete_parameter(Name=conf["CA_PARAMETER"])
        print(f"deleted parameter {conf['CA_PARAMETER']}")
    except ssm.exceptions.ParameterNotFound:
        pass
    try:
        sm.delete_secret(SecretId=conf["TOKEN_SECRET"], ForceDeleteWithoutRecovery=True)
        print(f"deleted secret {conf['TOKEN_SECRET']}")
    except sm.exceptions.ResourceNotFoundException:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slurm_trigger_headnode.py")
    parser.add_argument("--config", default="/etc/slurm-trigger/headnode.env")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hook").set_defaults(func=cmd_hook)
    push = sub.add_parser("push")
    push.add_argument("--once", action="store_true")
    push.add_argument("--interval", type=float, default=0.1)
    push.set_defaults(func=cmd_push)
    publish = sub.add_parser("publish-cert")
    publish.add_argument("pem")
    publish.set_defaults(func=cmd_publish_cert)
    sub.add_parser("put-token").set_defaults(func=cmd_put_token)
    sub.add_parser("secret-exists").set_defaults(func=cmd_secret_exists)
    sub.add_parser("remove").set_defaults(func=cmd_remove)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
