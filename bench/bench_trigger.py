#!/usr/bin/env python3
"""What the trigger costs per object, against a bare POST of the same body.

    .venv/bin/python bench/bench_trigger.py [--cluster host|chroot] [--objects 200]

1. Per object, ``--objects`` times: an S3 notification in → job accepted (claim,
   POST, "Slurm Job Submitted", record), split into AWS calls (in-process moto:
   DynamoDB, EventBridge), the Slurm POST and the rest (our code); then a bare POST of
   the same rendered body with a plain ``requests`` session. Medians.
2. Bursts through the SQS handler: bench/bench_burst.py.

Real Slurm (scripts/local-slurm), AWS in-process moto. Every job it submits is a
``#!/bin/bash true`` and is cancelled at the end so the queue is left as it was found.
moto's in-process DynamoDB costs more than the real service's few milliseconds, so the
figure to hold against the goal (≤ 1.25x a bare POST) is the handler without AWS time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
STATE = Path(os.environ.get("SLURM_TRIGGER_STATE") or "/var/tmp/slurm-trigger")
for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ[k] = v
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

import boto3  # noqa: E402
import requests  # noqa: E402
from moto import mock_aws  # noqa: E402

from slurm_trigger.idempotency import create_table  # noqa: E402
from slurm_trigger.s3events import ObjectRef  # noqa: E402
from slurm_trigger.settings import Settings  # noqa: E402
from slurm_trigger.trigger import build_trigger, render_job  # noqa: E402

PIPELINE = """
name: bench
match: {prefix: "bench/"}
job:
  script: "#!/bin/bash\\ntrue\\n"
  partition: debug
  working_directory: /tmp/slurm-trigger-jobs
  standard_output: /dev/null
  environment: {PATH: /usr/bin:/bin}
  time_limit: 1
"""


class AwsMeter:
    """Counts and times every botocore call of the clients it is attached to."""

    def __init__(self) -> None:
        self.calls = 0
        self.by_service: dict[str, int] = {}
        self.seconds = 0.0

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call.*.*", self._before)
        client.meta.events.register("after-call.*.*", self._after)
        return client

    def _before(self, context: dict, event_name: str = "", **_: Any) -> None:
        context["bench_t0"] = time.perf_counter()
        self.calls += 1
        service = event_name.split(".")[1] if event_name.count(".") >= 2 else "?"
        self.by_service[service] = self.by_service.get(service, 0) + 1

    def _after(self, context: dict, **_: Any) -> None:
        self.seconds += time.perf_counter() - context.pop("bench_t0", time.perf_counter())


class TimedClient:
    """The Slurm client with the time spent in ``submit`` added up."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.seconds = 0.0

    def submit(self, sub: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._client.submit(sub)
        finally:
            self.seconds += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class NoMetrics:
    def add_metric(self, **_: Any) -> None:
        pass


def notification(ref: ObjectRef) -> dict[str, Any]:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T04:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": ref.bucket}, "object": {
            "key": ref.key, "size": 1, "eTag": "e", "versionId": ref.version_id, "sequencer": "00"}},
    }]}


def cluster_info(name: str) -> dict[str, Any]:
    clusters = {c["name"]: c for c in json.loads((STATE / "clusters.json").read_text())}
    info = clusters[name]
    info["token"] = subprocess.run([str(REPO / "scripts" / "local-slurm"), "token", name, "7200"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    return info


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cluster", default="host", choices=("host", "chroot"))
    ap.add_argument("--objects", type=int, default=200)
    args = ap.parse_args()
    info = cluster_info(args.cluster)
    version = info["versions"][-1]
    run = uuid.uuid4().hex[:8]
    tmp = tempfile.TemporaryDirectory(prefix="bench-pipelines-")  # removed when main returns
    folder = Path(tmp.name)
    (folder / "bench.yaml").write_text(PIPELINE)
    settings = Settings(cluster_name="bench", slurm_url=info["url"], slurm_user=info["user"], api_version=version,
                        slurm_scheme="http", pipelines_path=str(folder), idempotency_table="bench-idem")
    submitted: list[int] = []
    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name="slurm_token_bench", SecretString=info["token"])
        create_table(boto3.client("dynamodb"), "bench-idem")
        meter = AwsMeter()
        trigger = build_trigger(settings, dynamodb_client=meter.attach(boto3.client("dynamodb")),
                                events_client=meter.attach(boto3.client("events")))
        trigger.client = TimedClient(trigger.client)
        trigger.metrics = NoMetrics()  # Powertools would print EMF blobs into the figures
        trigger.client.version  # negotiated once per container, like the Lambda
        bare = requests.Session()
        bare.headers.update({"X-SLURM-USER-NAME": info["user"], "X-SLURM-USER-TOKEN": info["token"]})
        url = f"{info['url']}/slurm/{version}/job/submit"

        def post(body: dict[str, Any]) -> int:
            r = bare.post(url, json=body, timeout=30)
            r.raise_for_status()
            return int(r.json()["job_id"])

        # warm-up: connections, first DynamoDB table access, imports
        for i in range(5):
            ref = ObjectRef("b", f"bench/{run}/warm-{i}", version_id=f"w{i}")
            submitted.append(trigger.handle_event(notification(ref))[0].job_id)
            submitted.append(post(trigger.client.submit_body(render_job(ref, trigger.pipelines[0]))))

        # 1. per object
        handler, aws, slurm, bare_times = [], [], [], []
        for i in range(args.objects):
            ref = ObjectRef("b", f"bench/{run}/one-{i}", version_id=f"v{i}")
            a0, s0, t0 = meter.seconds, trigger.client.seconds, time.perf_counter()
            [out] = trigger.handle_event(notification(ref))
            handler.append(time.perf_counter() - t0)
            aws.append(meter.seconds - a0)
            slurm.append(trigger.client.seconds - s0)
            submitted.append(out.job_id)
            body = trigger.client.submit_body(render_job(ref, trigger.pipelines[0]))
            t0 = time.perf_counter()
            submitted.append(post(body))
            bare_times.append(time.perf_counter() - t0)
        without_aws = [h - a for h, a in zip(handler, aws)]
        per_object = {
            "objects": args.objects,
            "handler_ms": median_ms(handler),
            "handler_aws_ms": median_ms(aws),
            "handler_slurm_post_ms": median_ms(slurm),
            "handler_own_code_ms": median_ms([h - a - s for h, a, s in zip(handler, aws, slurm)]),
            "handler_without_aws_ms": median_ms(without_aws),
            "bare_post_ms": median_ms(bare_times),
            "ratio_handler_vs_bare": round(statistics.median(handler) / statistics.median(bare_times), 2),
            "ratio_without_aws_vs_bare": round(statistics.median(without_aws) / statistics.median(bare_times), 2),
        }
        print(json.dumps({"cluster": args.cluster, "api_version": version, "per_object": per_object}, indent=2))

        cancelled = 0
        for job_id in set(submitted):
            try:
                trigger.client.cancel_job(job_id)
                cancelled += 1
            except Exception:  # noqa: BLE001 - a job that is gone already is fine
                pass
        print(json.dumps({"cancelled_bench_jobs": cancelled}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
