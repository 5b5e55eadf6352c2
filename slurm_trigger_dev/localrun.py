"""The local loop's runner: real Slurm, local AWS (moto server), the app's own handlers.

``scripts/run-local`` starts the local Slurm clusters and a moto server, then runs
``python -m slurm_trigger_dev.localrun``. This module holds NO handler logic. It only

* creates the AWS side the deployed stack would have (bucket with its notification, input
  queue, token secret ``slurm_token_<cluster>``, the two DynamoDB tables, an event bus and
  a rule whose target is an SQS queue we can read);
* uploads sample objects for the example pipelines in ``pipelines/``;
* turns what S3 (moto) really notifies into the event a Lambda would get and calls the
  handler that ``app.py`` exposes for it (``on_queue_message``, ``on_object_created`` or
  ``on_object_event``), and calls ``poll_jobs`` with a scheduled event every few seconds;
* with ``--kit NAME=URL`` (``scripts/run-local`` gives it for the host cluster), talks to
  that cluster the way the functions talk to a head node set up by the kit (``headnode/``,
  run by ``scripts/run-local`` in its test mode): HTTPS through the kit's nginx, trusting
  the certificate the kit published to SSM, with the token of the kit's service user that
  the kit keeps in Secrets Manager (so the loop does not write that secret itself);
* with ``--push NAME`` (``scripts/run-local`` gives it with ``--kit``), expects that
  cluster's slurmctld to push each state change through the kit's hook onto the same bus
  as the tracker's poll (``detail.publishedBy`` says which path a copy came from; both
  carry the same ``eventId``), and reports each path's latency: from the change in Slurm
  (its ``startedAt``/``endedAt``, to the second) to the message the rule put in SQS;
* prints what happens (objects -> jobs -> states -> events read back from the rule's
  queue) and a summary. ``--ci`` (or ``CI=true``) asserts that the loop closed: every
  sample object became exactly one job (a duplicate notification included), the job
  finished COMPLETED, and its events reached the bus and went through the rule to SQS;
  with ``--push``, also that each job's end was pushed and that the pushed and polled
  copies of a change share one ``eventId``.

One pass per cluster, each in its own process (the app reads its settings from the
environment at import time).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote_plus

from slurm_trigger.jobevents import POLLED, PUSHED

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("SLURM_TRIGGER_STATE") or "/var/tmp/slurm-trigger")
REGION = "us-east-1"
ACCOUNT = "123456789012"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "BOOT_FAIL", "DEADLINE", "LOST"}
SUBMITTED = "Slurm Job Submitted"
SUBMIT_FAILED = "Slurm Job Submission Failed"
STATE_CHANGE = "Slurm Job State Change"
HANDLERS = {"sqs": "on_queue_message", "s3": "on_object_created", "eventbridge": "on_object_event"}  # SUBSCRIPTIONS
POLL_HANDLER = "poll_jobs"

T0 = time.monotonic()
UI = sys.stderr  # live output; the child points it at the real terminal (see _isolate_stdout)


def say(msg: str) -> None:
    UI.write(f"[{time.monotonic() - T0:6.1f}s] {msg}\n")
    UI.flush()


# ----------------------------------------------------------------------------- samples


@dataclass
class Sample:
    key: str
    body: bytes
    pipeline: str | None  # the pipeline expected to take it; None: no job expected
    why: str
    reported_as: str | None = None  # a set's job: the set's name, which its events carry as key

    @property
    def name(self) -> str:
        """What this sample's job is reported under: the object, or its set."""
        return self.reported_as or self.key


def samples(run: str) -> list[Sample]:
    """Objects for the example pipelines forecast-tile and paired-reads (a pair with
    Illumina's names: the first mate waits, the second completes the set)."""
    pair = f"fastq/{run}/sampleB_S2_L001"
    return [
        Sample(f"tiles/{run}/tile 042.tif", b"II*\x00fake tile", "forecast-tile", "a tile (space in the key)"),
        Sample(f"notes/{run}-readme.txt", b"not data", None, "matches no pipeline"),
        Sample(f"{pair}_R1_001.fastq.gz", b"@r1\nACGT\n+\nIIII\n", None, "first mate: its set waits for R2"),
        Sample(f"{pair}_R2_001.fastq.gz", b"@r2\nTGCA\n+\nIIII\n", "paired-reads",
               "second mate: the pair is complete, one job for both", reported_as=f"fastq/{run}/sampleB_L001"),
    ]


# ----------------------------------------------------------------------------- AWS side


@dataclass
class Names:
    cluster: str
    bucket: str
    input_queue: str
    events_queue: str
    bus: str
    rule: str
    secret: str
    idempotency_table: str
    jobs_table: str
    sets_table: str

    @classmethod
    def for_cluster(cls, cluster: str) -> "Names":
        c = cluster.lower()
        return cls(
            cluster=cluster,
            bucket=f"slurm-trigger-local-{c}",
            input_queue=f"slurm-trigger-local-input-{c}",
            events_queue=f"slurm-trigger-local-events-{c}",
            bus="slurm-trigger-local",
            rule=f"slurm-trigger-local-to-sqs-{c}",
            secret=f"slurm_token_{cluster}",
            idempotency_table="slurm-trigger-local-idempotency",
            jobs_table="slurm-trigger-local-jobs",
            sets_table="slurm-trigger-local-sets",
        )


def site_root(cluster: dict[str, Any]) -> str:
    """A fresh SITE_ROOT for one pass, made on the cluster's filesystem (mode 1777, like
    /tmp): the example jobs create their result folders inside, as whichever user they
    run as (root, ciuser, the kit's service user), so no folder a job of another user
    made earlier is in their way."""
    path = f"/tmp/slurm-trigger-jobs/site-{uuid.uuid4().hex[:8]}"
    seen = Path(cluster.get("root") or "/") / path.lstrip("/")
    seen.mkdir(parents=True)
    seen.chmod(0o1777)
    return path


def app_env(
    cluster: dict[str, Any], names: Names, endpoint: str, via: str, kit_url: str | None = None, root: str = ""
) -> dict[str, str]:
    """The environment the app reads (slurm_trigger.settings), pointing at the local pieces;
    with ``kit_url``, at the head node kit's TLS endpoint, its published PEM and its secret."""
    kit = {
        "SLURM_URL": kit_url,
        "SLURM_SCHEME": "https",
        "SLURM_CA_PARAMETER": f"/slurm-trigger/{names.cluster}/ca.pem",  # the kit's default name
        "SLURM_INSECURE": "false",
    } if kit_url else {}
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": "slurm-trigger-local",
        "SLURM_CLUSTER_NAME": names.cluster,
        "SLURM_URL": cluster["url"],
        "SLURM_USER": cluster["user"],
        "SLURM_SCHEME": cluster["url"].split(":", 1)[0],
        "SLURM_TOKEN_SECRET": names.secret,
        "PIPELINES_PATH": str(REPO / "pipelines"),
        "SUBSCRIPTIONS": via,  # the names app.py uses: sqs, s3, eventbridge
        "INPUT_BUCKET": names.bucket,
        "INPUT_QUEUE": names.input_queue,
        # deliver_inputs plays a mapping with ReportBatchItemFailures (the chalice package route)
        "SQS_REPORT_BATCH_ITEM_FAILURES": "true",
        "IDEMPOTENCY_TABLE": names.idempotency_table,
        "JOBS_TABLE": names.jobs_table,
        "SETS_TABLE": names.sets_table,
        # the site values of the example pipelines, pointed at the local clusters
        "SITE_ROOT": root or "/tmp/slurm-trigger-jobs",
        "SITE_PARTITION": "debug",
        "SITE_DATA": "/tmp/slurm-trigger-jobs/data",
        "EVENT_BUS_NAME": names.bus,
        "EVENT_SOURCE": "slurm-trigger",
        "POWERTOOLS_SERVICE_NAME": "slurm-trigger",
        "POWERTOOLS_METRICS_NAMESPACE": "SlurmTrigger",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO"),
        **kit,
    }


def _client(service: str) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.purge_queue(QueueUrl=url)
    return url, arn


def create_aws(names: Names, token: str | None, via: str) -> dict[str, str]:
    """Everything the deployed stack (infra + chalice) would provide. Idempotent. No
    ``token``: the head node kit keeps the secret (it must exist already)."""
    from slurm_trigger import idempotency, jobstore, setstore

    s3, sqs, sm, ddb, ev = (_client(s) for s in ("s3", "sqs", "secretsmanager", "dynamodb", "events"))
    tables = ddb.list_tables()["TableNames"]
    if names.idempotency_table not in tables:
        idempotency.create_table(ddb, names.idempotency_table)
    if names.jobs_table not in tables:
        jobstore.create_table(ddb, names.jobs_table)
    if names.sets_table not in tables:
        setstore.create_table(ddb, names.sets_table)
    if token is None:
        sm.describe_secret(SecretId=names.secret)  # written by the kit's rotation
    else:
        try:
            sm.create_secret(Name=names.secret, SecretString=token)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=names.secret, SecretString=token)

    in_url, in_arn = _queue(sqs, names.input_queue)
    ev_url, ev_arn = _queue(sqs, names.events_queue)
    if names.bus not in [b["Name"] for b in ev.list_event_buses()["EventBuses"]]:
        ev.create_event_bus(Name=names.bus)
    # the example rule: every event slurm-trigger publishes -> an SQS queue
    ev.put_rule(Name=names.rule, EventBusName=names.bus, State="ENABLED",
                EventPattern=json.dumps({"source": ["slurm-trigger"],
                                         "detail": {"cluster": [names.cluster]}}))
    ev.put_targets(Rule=names.rule, EventBusName=names.bus, Targets=[{"Id": "local-queue", "Arn": ev_arn}])

    s3.create_bucket(Bucket=names.bucket)
    if via == "eventbridge":
        # S3 -> default bus "Object Created" -> a rule -> the input queue; we hand the
        # EventBridge event itself to on_object_event
        s3.put_bucket_notification_configuration(
            Bucket=names.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})
        ev.put_rule(Name=f"{names.rule}-s3", State="ENABLED", EventPattern=json.dumps(
            {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": {"bucket": {"name": [names.bucket]}}}))
        ev.put_targets(Rule=f"{names.rule}-s3", Targets=[{"Id": "input", "Arn": in_arn}])
    else:
        # S3's own notification to the input queue (the deployed "sqs" subscription); in
        # "s3" (direct) mode the body of each message is exactly what S3 gives a Lambda
        s3.put_bucket_notification_configuration(Bucket=names.bucket, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": in_arn, "Events": ["s3:ObjectCreated:*"]}]})
    return {"input_url": in_url, "input_arn": in_arn, "events_url": ev_url}


# ----------------------------------------------------------------------------- Lambda glue


class LambdaContext:
    """What Lambda passes as ``context`` (the attributes Powertools reads)."""

    def __init__(self, name: str, timeout_s: float = 60) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        self.memory_limit_in_mb = 256
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_lambda_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping builds from received messages."""
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": m.get("MessageAttributes", {}),
        "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    } for m in messages]}


def scheduled_event(rule: str) -> dict[str, Any]:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": ACCOUNT, "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION, "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"], "detail": {},
    }


# ----------------------------------------------------------------------------- one pass


# the moment a state change happened, from the event's own detail
CHANGED_AT = {"PENDING": "submittedAt", "RUNNING": "startedAt"}


def changed_at(detail: dict[str, Any]) -> float | None:
    """When the job entered ``detail.state``, by Slurm's clock (to the second)."""
    key = CHANGED_AT.get(detail.get("state") or "", "endedAt" if detail.get("state") in FINAL else "")
    value = detail.get(key) if key else None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() if value else None


def p50(values: list[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


@dataclass
class Copies:
    """Every copy of every state change of this run's jobs, by the path that published it."""

    by_path: dict[str, list[float]] = field(default_factory=dict)  # publishedBy -> latencies (s)
    ids: dict[tuple[int, str], set[str]] = field(default_factory=dict)  # (job, state) -> eventIds
    pushed_final: set[int] = field(default_factory=set)  # jobs whose end came pushed

    def add(self, detail: dict[str, Any], on_bus_at: float) -> None:
        path, state, job = detail.get("publishedBy") or "tracker", detail.get("state") or "", detail.get("jobId")
        at = changed_at(detail)
        self.by_path.setdefault(path, [])
        if at is not None:
            self.by_path[path].append(max(0.0, on_bus_at - at))
        self.ids.setdefault((job, state), set()).add(detail.get("eventId") or "")
        if path == PUSHED and state in FINAL:
            self.pushed_final.add(job)

    def report(self) -> dict[str, Any]:
        pushed, polled = p50(self.by_path.get(PUSHED, [])), p50(self.by_path.get(POLLED, []))
        return {
            "pushed": len(self.by_path.get(PUSHED, [])), "polled": len(self.by_path.get(POLLED, [])),
            "changes": len(self.ids), "pushed_p50_s": pushed, "polled_p50_s": polled,
            "ratio": round(polled / pushed, 1) if pushed and polled else None,
            "ids_per_change_max": max((len(v) for v in self.ids.values()), default=0),
        }


@dataclass
class Tracking:
    expected: dict[str, Sample]  # s3 uri -> sample with a pipeline
    jobs_by_uri: dict[str, set[int]] = field(default_factory=dict)
    submitted_events: dict[str, int] = field(default_factory=dict)  # uri -> count of Submitted
    failed_events: list[dict[str, Any]] = field(default_factory=list)
    states: dict[int, list[str]] = field(default_factory=dict)  # job -> states seen in events
    uri_of_job: dict[int, str] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    events: int = 0
    duplicates: int = 0
    handler_errors: list[str] = field(default_factory=list)
    extra_jobs: set[int] = field(default_factory=set)  # jobs for objects of this run that expect none
    copies: Copies = field(default_factory=Copies)
    foreign_jobs: set[int] = field(default_factory=set)  # jobs of other runs/tests in the shared Slurm

    def closed(self, pushed: bool = False) -> bool:
        """Every expected object has one job that ended (and, with push on, whose end
        came pushed too: the pushed copy may come after the polled one)."""
        for uri in self.expected:
            jobs = self.jobs_by_uri.get(uri, set())
            if len(jobs) != 1:
                return False
            (job,) = jobs
            if not set(self.states.get(job, [])) & FINAL or (pushed and job not in self.copies.pushed_final):
                return False
        return True


def _uri(detail: dict[str, Any]) -> str | None:
    """Every slurm-trigger event carries its object under ``detail.source``."""
    return (detail.get("source") or {}).get("s3Uri")


def _job_id(detail: dict[str, Any]) -> int | None:
    return detail.get("jobId")


class Pass:
    def __init__(self, cluster: dict[str, Any], names: Names, aws: dict[str, str], via: str, app_module: Any,
                 poll_every: float, timeout: float, ci: bool, token: str, pushed: bool = False) -> None:
        self.token = token
        self.c = cluster
        self.n = names
        self.aws = aws
        self.via = via
        self.app = app_module
        self.poll_every = poll_every
        self.timeout = timeout
        self.ci = ci or os.environ.get("CI") == "true"
        self.pushed = pushed  # the cluster's slurmctld pushes through the head node kit's hook
        self.sqs = _client("sqs")
        self.s3 = _client("s3")
        self.run = datetime.now(timezone.utc).strftime("%H%M%S") + uuid.uuid4().hex[:4]
        self.samples = samples(self.run)
        self.t = Tracking({f"s3://{names.bucket}/{s.name}": s for s in self.samples if s.pipeline})
        self.last_notification: dict[str, Any] | None = None
        self.redelivered = False
        self.polls = 0
        self.slurm_seen: dict[str, dict[int, dict[str, Any]]] = {}  # uri -> job id -> last view
        self.slurm_error = ""

    # -- handlers, exactly as Lambda would call them
    def handler(self, name: str) -> Callable[..., Any]:
        fn = getattr(self.app, name, None)
        if fn is None:
            raise SystemExit(f"app.py has no handler {name!r} (needed for --via {self.via})")
        return fn

    def invoke(self, name: str, event: dict[str, Any]) -> tuple[bool, Any]:
        """(True, result), or (False, None) when the handler raised (a failed invocation)."""
        try:
            return True, self.handler(name)(event, LambdaContext(name))
        except SystemExit:
            raise
        except Exception as exc:  # a Lambda error: the message stays in the queue and comes back
            self.t.handler_errors.append(f"{name}: {type(exc).__name__}: {exc}")
            say(f"  !! {name} raised {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stdout)  # full trace to the pass log
            return False, None

    def upload(self) -> None:
        for s in self.samples:
            self.s3.put_object(Bucket=self.n.bucket, Key=s.key, Body=s.body)
            what = f"-> pipeline {s.pipeline}" if s.pipeline else "-> (no job expected)"
            say(f"upload s3://{self.n.bucket}/{s.key}  {what}: {s.why}")

    def deliver_inputs(self) -> None:
        r = self.sqs.receive_message(QueueUrl=self.aws["input_url"], MaxNumberOfMessages=10,
                                     AttributeNames=["All"], MessageAttributeNames=["All"], WaitTimeSeconds=0)
        msgs = r.get("Messages", [])
        if not msgs:
            return
        if self.via == "sqs":
            event = sqs_lambda_event(msgs, self.aws["input_arn"])
            say(f"trigger: {HANDLERS['sqs']}({len(msgs)} SQS record(s): {self._describe(msgs)})")
            ok, out = self.invoke(HANDLERS["sqs"], event)
            if not ok:
                failed = {m["MessageId"] for m in msgs}
            elif isinstance(out, dict):
                failed = {f.get("itemIdentifier") for f in out.get("batchItemFailures") or []}
            else:
                failed = set()
            for m in msgs:  # ReportBatchItemFailures: only the successes leave the queue
                if m["MessageId"] not in failed:
                    self.sqs.delete_message(QueueUrl=self.aws["input_url"], ReceiptHandle=m["ReceiptHandle"])
            if failed:
                say(f"  {len(failed)} message(s) reported failed: back to the queue")
            self.last_notification = self.last_notification or next(
                (event for m in msgs if "Records" in json.loads(m["Body"])), None)
            return
        for m in msgs:
            body = json.loads(m["Body"])
            if self.via == "s3":
                if body.get("Event") == "s3:TestEvent":  # S3 sends those to queues, never to Lambda
                    self.sqs.delete_message(QueueUrl=self.aws["input_url"], ReceiptHandle=m["ReceiptHandle"])
                    continue
                say(f"trigger: {HANDLERS['s3']}(S3 notification: {self._describe([m])})")
            else:
                say(f"trigger: {HANDLERS['eventbridge']}(EventBridge {body.get('detail-type')}: {self._describe([m])})")
            ok, _ = self.invoke(HANDLERS[self.via], body)
            if ok:
                self.sqs.delete_message(QueueUrl=self.aws["input_url"], ReceiptHandle=m["ReceiptHandle"])
            if self.last_notification is None and ("Records" in body or "detail" in body):
                self.last_notification = body

    def redeliver(self) -> None:
        """S3 delivers at least once: hand the same notification to the handler again."""
        if self.redelivered or self.last_notification is None:
            return
        self.redelivered = True
        ev = json.loads(json.dumps(self.last_notification))
        if self.via == "sqs":
            for r in ev["Records"]:
                r["messageId"] = str(uuid.uuid4())
        say(f"trigger: the same notification once more (at-least-once delivery) -> {HANDLERS[self.via]}")
        self.invoke(HANDLERS[self.via], ev)

    @staticmethod
    def _describe(msgs: list[dict[str, Any]]) -> str:
        keys = []
        for m in msgs:
            try:
                b = json.loads(m["Body"])
            except ValueError:
                continue
            if b.get("Event") == "s3:TestEvent":
                keys.append("s3:TestEvent")
            for r in b.get("Records", []) or []:
                keys.append(r.get("s3", {}).get("object", {}).get("key", "?"))
            if isinstance(b.get("detail"), dict):
                keys.append(b["detail"].get("object", {}).get("key", "?"))
        return ", ".join(unquote_plus(k) for k in keys) or "?"

    def poll(self) -> None:
        self.polls += 1
        began = time.monotonic()
        ok, out = self.invoke(POLL_HANDLER, scheduled_event(f"slurm-trigger-local-{POLL_HANDLER}"))
        took = time.monotonic() - began
        if ok and isinstance(out, dict) and (out.get("transitions") or out.get("skipped") or took > 5):
            moved = out.get("transitions") or []
            n = len(moved) if isinstance(moved, (list, tuple)) else moved
            what = "skipped (lease held)" if out.get("skipped") else f"{n} transition(s) published"
            say(f"tracker: {POLL_HANDLER} -> {what} in {took:.1f}s")
        self.snapshot()

    def read_events(self) -> None:
        while True:
            r = self.sqs.receive_message(QueueUrl=self.aws["events_url"], MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                         AttributeNames=["SentTimestamp"])
            msgs = r.get("Messages", [])
            if not msgs:
                return
            for m in msgs:
                self.sqs.delete_message(QueueUrl=self.aws["events_url"], ReceiptHandle=m["ReceiptHandle"])
                # when the rule delivered it: the event was on the bus by then
                sent = int(m.get("Attributes", {}).get("SentTimestamp") or time.time() * 1000) / 1000
                self.on_event(json.loads(m["Body"]), sent)

    def mine(self, uri: str | None) -> bool:
        """An object of this run (the local Slurm also runs other tests' and earlier runs' jobs)."""
        return bool(uri) and uri.startswith(f"s3://{self.n.bucket}/") and self.run in uri

    def on_event(self, ev: dict[str, Any], on_bus_at: float | None = None) -> None:
        self.t.events += 1
        dt, d = ev.get("detail-type"), ev.get("detail") or {}
        job, uri = _job_id(d), _uri(d)
        if not self.mine(uri):
            # jobs the tracker found in the shared local Slurm from other tests or runs
            if job is not None and job not in self.t.foreign_jobs:
                self.t.foreign_jobs.add(job)
                if len(self.t.foreign_jobs) == 1:
                    say("(events about jobs of earlier runs/tests in the same Slurm are counted, not shown)")
            return
        path = f" ({d['publishedBy']})" if d.get("publishedBy") else ""
        if dt == STATE_CHANGE:
            self.t.copies.add(d, time.time() if on_bus_at is None else on_bus_at)
        eid = f"{d.get('eventId') or ev.get('id')}/{job}"
        if eid in self.t.event_ids:
            self.t.duplicates += 1
            say(f"event (repeat, same eventId){path} {dt} job {job} {d.get('state') or ''}")
            return
        self.t.event_ids.add(eid)
        if dt == SUBMITTED:
            say(f"event {dt}: job {job} <- {uri}")
            self.t.submitted_events[uri] = self.t.submitted_events.get(uri, 0) + 1
        elif dt == SUBMIT_FAILED:
            say(f"event {dt}: {uri}: {json.dumps(d.get('error') or d.get('reason') or d, default=str)[:300]}")
            self.t.failed_events.append(d)
        elif dt == STATE_CHANGE:
            extra = f" (exit {d.get('exitCode')})" if d.get("state") in FINAL else ""
            say(f"event {dt}{path}: job {job} {d.get('previousState') or 'new'} -> {d.get('state')}{extra}  {uri}")
        else:
            say(f"event {dt}: {json.dumps(d, default=str)[:200]}")
        if job is not None:
            if uri in self.t.expected:
                self.t.jobs_by_uri.setdefault(uri, set()).add(job)
                self.t.uri_of_job[job] = uri
            else:
                self.t.extra_jobs.add(job)
            if d.get("state"):
                self.t.states.setdefault(job, []).append(d["state"])

    def loop(self) -> bool:
        say(f"== cluster {self.c['name']} ({self.c['cluster']}, {self.c['url']}, Slurm {self.c.get('slurm', '?')}), "
            f"subscription {self.via}")
        self.upload()
        end = time.monotonic() + self.timeout
        next_poll = time.monotonic() + 1.0
        while time.monotonic() < end:
            self.deliver_inputs()
            if self.t.jobs_by_uri and not self.redelivered:
                self.redeliver()
            if time.monotonic() >= next_poll:
                self.poll()
                next_poll = time.monotonic() + self.poll_every
            self.read_events()
            if self.t.closed(self.pushed) and self.redelivered:
                # one last poll + read: a late duplicate job would show up here
                self.poll()
                time.sleep(0.5)
                self.read_events()
                return True
            time.sleep(0.5)
        return False

    def snapshot(self) -> None:
        """Remember what Slurm says now: finished jobs leave /jobs after MinJobAge."""
        try:
            for uri, jobs in self.slurm_view().items():
                known = self.slurm_seen.setdefault(uri, {})
                for j in jobs:
                    known[j["job_id"]] = j
        except Exception as exc:  # reported in the summary if it never works
            self.slurm_error = f"{type(exc).__name__}: {exc}"

    def slurm_view(self) -> dict[str, list[dict[str, Any]]]:
        """Ask Slurm itself (not our events or tables): the jobs whose comment names an
        object of this run, by S3 URI, with their state and the last line of their output."""
        from slurm_trigger import provenance
        from slurm_trigger.slurm import SlurmClient
        from slurm_trigger.slurm.auth import StaticToken

        # the client (newest version both sides know) reads each version's job fields
        client = SlurmClient(self.c["url"], StaticToken(self.token), user=self.c["user"])
        out: dict[str, list[dict[str, Any]]] = {}
        for j in client.list_jobs().jobs:
            src = provenance.decode(j.comment)
            if src is None or not self.mine(src.s3_uri):
                continue
            last = ""
            if j.standard_output:
                f = Path(self.c.get("root") or "/") / j.standard_output.lstrip("/")
                try:
                    lines = f.read_text(errors="replace").strip().splitlines()
                    last = lines[-1] if lines else ""
                except OSError:
                    last = f"(no output at {f})"
            out.setdefault(src.s3_uri, []).append({"job_id": j.job_id, "state": j.state, "output": last})
        return out

    def summary(self, closed: bool, elapsed: float) -> dict[str, Any]:
        rows = []
        problems = []
        self.snapshot()
        slurm = {uri: sorted(jobs.values(), key=lambda j: j["job_id"]) for uri, jobs in self.slurm_seen.items()}
        if not self.slurm_seen and self.slurm_error:
            problems.append(f"could not list jobs from Slurm: {self.slurm_error}")
        for s in self.samples:
            uri = f"s3://{self.n.bucket}/{s.name}"
            jobs = sorted(self.t.jobs_by_uri.get(uri, set()))
            states = [st for j in jobs for st in self.t.states.get(j, [])]
            final = next((st for st in reversed(states) if st in FINAL), None)
            in_slurm = slurm.get(uri, [])
            rows.append({"object": uri, "pipeline": s.pipeline, "jobs": jobs, "states": states,
                         "final": final, "submitted_events": self.t.submitted_events.get(uri, 0),
                         "slurm": in_slurm})
            if s.pipeline is None:
                if jobs or self.t.submitted_events.get(uri) or in_slurm:
                    problems.append(f"{uri}: expected no job, got {jobs or in_slurm}")
                continue
            if len(in_slurm) != 1:
                problems.append(f"{uri}: Slurm has {len(in_slurm)} jobs for it, expected exactly 1: {in_slurm}")
            elif in_slurm[0]["state"] != "COMPLETED":
                problems.append(f"{uri}: Slurm says job {in_slurm[0]['job_id']} is {in_slurm[0]['state']}")
            if len(jobs) != 1:
                problems.append(f"{uri}: expected exactly one job, got {jobs or 'none'}")
            elif final != "COMPLETED":
                problems.append(f"{uri}: job {jobs[0]} did not finish COMPLETED (states seen: {states})")
            if self.t.submitted_events.get(uri, 0) != 1:
                problems.append(f"{uri}: {self.t.submitted_events.get(uri, 0)} '{SUBMITTED}' events, expected 1")
        if self.t.extra_jobs:
            problems.append(f"jobs for objects that should make none: {sorted(self.t.extra_jobs)}")
        if self.t.failed_events:
            problems.append(f"{len(self.t.failed_events)} '{SUBMIT_FAILED}' event(s)")
        if not self.redelivered:
            problems.append("the duplicate notification was never delivered")
        push = self.t.copies.report()
        if self.pushed and self.ci:
            if not push["pushed"]:
                problems.append("no state change came pushed from the head node kit's hook")
            unpushed = sorted(j for uri in self.t.expected for j in self.t.jobs_by_uri.get(uri, set())
                              if j not in self.t.copies.pushed_final)
            if unpushed:
                problems.append(f"the end of job(s) {unpushed} was not pushed")
        if push["ids_per_change_max"] > 1:
            problems.append(f"a state change reached the bus under {push['ids_per_change_max']} eventIds: {self.t.copies.ids}")
        if not closed and not problems:
            problems.append(f"loop not closed after {self.timeout:.0f}s")
        return {"cluster": self.c["name"], "slurm_cluster": self.n.cluster, "url": os.environ.get("SLURM_URL") or self.c["url"], "via": self.via,
                "closed": closed and not problems, "elapsed_s": round(elapsed, 1), "polls": self.polls,
                "events": self.t.events, "repeated_events": self.t.duplicates,
                "other_jobs_seen": len(self.t.foreign_jobs), "state_changes": push, "push": self.pushed,
                "handler_errors": self.t.handler_errors, "objects": rows, "problems": problems}


def _isolate_stdout(log_path: Path) -> None:
    """The app's logs and EMF metrics go to stdout: send fd 1 to the pass log, keep the UI."""
    global UI
    UI = os.fdopen(os.dup(1), "w", buffering=1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    os.dup2(fd, 1)
    os.close(fd)


def local_clusters(state: Path = STATE) -> list[dict[str, Any]]:
    """The local clusters: ``clusters.json``, plus any cluster whose own ``NAME.cluster.json``
    it lacks. ``clusters.json`` is rewritten by whichever ``scripts/local-slurm`` ran last, and
    an older checkout's script (on a shared machine) lists only the clusters it knows."""
    try:
        listed = json.loads((state / "clusters.json").read_text())
    except (OSError, ValueError):
        listed = []
    clusters = [c for c in listed if isinstance(c, dict) and c.get("name") and c.get("url")]
    names = {c["name"] for c in clusters}
    for f in sorted(state.glob("*.cluster.json")):
        try:
            c = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(c, dict) and c.get("url") and c.get("name") not in names:
            clusters.append(c)
            names.add(c["name"])
    return clusters


def _token(name: str) -> str:
    return subprocess.run([str(REPO / "scripts" / "local-slurm"), "token", name, "7200"],
                          check=True, capture_output=True, text=True).stdout.strip()


def run_pass(a: argparse.Namespace) -> int:
    clusters = {c["name"]: c for c in local_clusters()}
    cluster = clusters[a.cluster]
    names = Names.for_cluster(cluster["cluster"])
    log = Path(a.log_dir) / f"pass-{a.cluster}.log"
    _isolate_stdout(log)
    kit_url = dict(k.split("=", 1) for k in a.kit or []).get(a.cluster)
    os.environ.update(app_env(cluster, names, a.endpoint, a.via, kit_url, site_root(cluster)))
    started = time.monotonic()
    token = _token(a.cluster)  # root's, for our own look at Slurm (slurm_view), never the app's
    aws = create_aws(names, None if kit_url else token, a.via)
    if kit_url:
        say(f"{a.cluster}: through the head node kit: {kit_url} (TLS, the PEM published to SSM "
            f"{os.environ['SLURM_CA_PARAMETER']}, the kit's service user's token in {names.secret})")
    say(f"AWS (moto {a.endpoint}): bucket {names.bucket}, queue {names.input_queue}, secret {names.secret}, "
        f"tables {names.idempotency_table}/{names.jobs_table}, bus {names.bus} -> rule {names.rule} -> "
        f"SQS {names.events_queue}")
    sys.path.insert(0, os.environ.get("LOCALRUN_APP_DIR") or str(REPO))  # where app.py is
    import app as app_module  # the app's own handlers, settings read from the env above

    pushed = a.cluster in (a.push or [])
    if pushed:
        say(f"{a.cluster}: its slurmctld pushes state changes through the head node kit's hook onto bus {names.bus}")
    p = Pass(cluster, names, aws, a.via, app_module, a.poll_every, a.timeout, a.ci, token, pushed)
    try:
        closed = p.loop()
    except SystemExit as exc:
        say(f"!! {exc}")
        closed = False
        p.t.handler_errors.append(str(exc))
    s = p.summary(closed, time.monotonic() - started)
    s["log"] = str(log)
    Path(a.summary).write_text(json.dumps(s, indent=2, default=str))
    return 0 if s["closed"] else 1


# ----------------------------------------------------------------------------- driver


def print_summary(results: list[dict[str, Any]]) -> None:
    w = sys.stderr.write
    w("\n================ summary ================\n")
    for s in results:
        w(f"cluster {s['cluster']} ({s.get('slurm_cluster')}, {s.get('url')}) via {s.get('via')}: "
          f"{'CLOSED' if s.get('closed') else 'NOT CLOSED'} in {s.get('elapsed_s')}s, "
          f"{s.get('polls')} polls, {s.get('events')} events read back from SQS\n")
        for r in s.get("objects", []):
            jobs = ",".join(map(str, r["jobs"])) or "-"
            w(f"  {r['object']:<70} {r['pipeline'] or '(none)':<14} job {jobs:<6} "
              f"{' > '.join(r['states']) or '-'}\n")
            for sj in r.get("slurm", []):
                w(f"      Slurm: job {sj['job_id']} {sj['state']}; output: {sj['output'][:100]}\n")
        sc = s.get("state_changes") or {}
        if sc.get("changes"):
            lat = (f"; from the change in Slurm to the bus, p50 pushed {sc['pushed_p50_s']:.2f} s, "
                   f"polled {sc['polled_p50_s']:.2f} s ({sc['ratio']}x)") if sc.get("ratio") else ""
            w(f"  state changes: {sc['changes']} (one eventId each), {sc['pushed']} copies pushed by the head node, "
              f"{sc['polled']} polled by the tracker{lat}\n")
        for prob in s.get("problems", []):
            w(f"  PROBLEM: {prob}\n")
        for err in s.get("handler_errors", [])[:5]:
            w(f"  handler error: {err}\n")
        if s.get("log"):
            w(f"  app log: {s['log']}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m slurm_trigger_dev.localrun", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cluster", action="append", help="host|chroot|forky (repeatable; default: every cluster in clusters.json)")
    ap.add_argument("--via", choices=sorted(HANDLERS), default=os.environ.get("LOCALRUN_VIA", "sqs"),
                    help="how S3 notifications reach the trigger (default sqs, as deployed)")
    ap.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5055"))
    ap.add_argument("--poll-every", type=float, default=3.0, help="seconds between poll_jobs calls")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per cluster before giving up")
    ap.add_argument("--ci", action="store_true", help="non-interactive; exit 1 unless the loop closed")
    ap.add_argument("--kit", action="append", metavar="NAME=URL",
                    help="reach cluster NAME through the head node kit's TLS endpoint URL (scripts/run-local sets it up)")
    ap.add_argument("--push", action="append", metavar="NAME",
                    help="cluster NAME's slurmctld pushes state changes through the head node kit's hook (scripts/run-local sets it up)")
    ap.add_argument("--log-dir", default=str(STATE / "run-local"))
    ap.add_argument("--pass", dest="one_pass", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--summary", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    Path(a.log_dir).mkdir(parents=True, exist_ok=True)
    if a.one_pass:
        a.cluster = a.cluster[0]
        return run_pass(a)

    available = [c["name"] for c in local_clusters()]
    wanted = a.cluster or available
    results = []
    for name in wanted:
        if name not in available:
            results.append({"cluster": name, "closed": False, "problems": [f"{name} not in {STATE}/clusters.json"]})
            continue
        summary = Path(a.log_dir) / f"summary-{name}.json"
        summary.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "slurm_trigger_dev.localrun", "--pass", "--cluster", name, "--via", a.via,
               "--endpoint", a.endpoint, "--poll-every", str(a.poll_every), "--timeout", str(a.timeout),
               "--log-dir", a.log_dir, "--summary", str(summary)] + (["--ci"] if a.ci else []) \
            + [arg for k in a.kit or [] for arg in ("--kit", k)] + [arg for k in a.push or [] for arg in ("--push", k)]
        rc = subprocess.run(cmd, cwd=REPO).returncode
        if summary.exists():
            results.append(json.loads(summary.read_text()))
        else:
            results.append({"cluster": name, "closed": False,
                            "problems": [f"the pass exited {rc} without a summary (see {a.log_dir}/pass-{name}.log)"]})
    print_summary(results)
    ok = all(r.get("closed") for r in results) and bool(results)
    sys.stderr.write(f"\nloop {'closed' if ok else 'NOT closed'} for {len(results)} cluster(s)\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
