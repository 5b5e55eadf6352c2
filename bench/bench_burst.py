#!/usr/bin/env python3
"""A burst through the SQS handler against a bare sequential POST loop, side by side.

    .venv/bin/python bench/bench_burst.py [--cluster host|chroot] [--objects 1000] [--batch 10] [--chunk 100]

``--objects`` S3 notifications go through ``Trigger.handle_sqs`` in batches of ``--batch`` (10; one
container, as one Lambda; its submits overlap on the target's ``Pacer``), and as many
bodies, rendered the same way, go through a bare ``requests`` POST loop to the same
slurmrestd. The two alternate every ``--chunk`` objects, so both meet the same noise of
a shared machine. AWS is moto in a process of its own (``bench/moto_server.py``), so its
work is not done on the handler's interpreter; AWS calls are counted with a botocore
hook, events through a rule with an SQS target, jobs in Slurm by their comments.

Goals (issue 12): jobs/s of the handler >= 0.8x the bare loop; <= 1.3 AWS calls per
object. moto's emulation costs far more CPU than the calls it stands for (a PutEvents
of 10 entries is ~6 ms of moto's own code, plus the rule's SQS delivery; a transaction
~1.5 ms an item), on the same two cores as Slurm: so both ratios are printed, the
handler's wall time and the handler without the time it waited on AWS (the phases in
which it sends to Slurm and runs its own code; the AWS phases come between them, never
during them). Every job is a ``true`` of at most a minute, cancelled after its chunk (outside
the timed part), so the shared cluster stays light.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_trigger import PIPELINE, REPO, AwsMeter, NoMetrics, cluster_info, notification  # noqa: E402

import boto3  # noqa: E402
import requests  # noqa: E402

from slurm_trigger.idempotency import create_table  # noqa: E402
from slurm_trigger.s3events import ObjectRef  # noqa: E402
from slurm_trigger.settings import Settings  # noqa: E402
from slurm_trigger.trigger import build_trigger, render_job  # noqa: E402



def moto_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(HERE / "moto_server.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url + "/moto-api/", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def sqs_event(refs: list[ObjectRef], n: int) -> dict[str, Any]:
    return {"Records": [
        {"messageId": f"{n}-{i}", "receiptHandle": "r", "body": json.dumps(notification(r)), "attributes": {},
         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}
        for i, r in enumerate(refs)]}


def drain(sqs: Any, queue: str) -> list[dict[str, Any]]:
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        out.extend(json.loads(m["Body"]) for m in got)
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cluster", default="host", choices=("host", "chroot"))
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=10, help="messages per SQS batch (app.py's SQS_BATCH_SIZE; up to 100)")
    ap.add_argument("--chunk", type=int, default=100, help="objects per side before switching (a multiple of --batch)")
    args = ap.parse_args()
    batch_size = args.batch
    info = cluster_info(args.cluster)
    version = info["versions"][-1]
    run = uuid.uuid4().hex[:8]
    proc, endpoint = moto_server()
    tmp = tempfile.TemporaryDirectory(prefix="bench-pipelines-")
    (Path(tmp.name) / "bench.yaml").write_text(PIPELINE.replace("job:\n", f"job:\n  name: burst-{run}\n"))
    try:
        clients = {name: boto3.client(name, endpoint_url=endpoint) for name in ("dynamodb", "events", "sqs", "secretsmanager")}
        clients["secretsmanager"].create_secret(Name="slurm_token_bench", SecretString=info["token"])
        create_table(clients["dynamodb"], "bench-idem")
        queue = clients["sqs"].create_queue(QueueName="bench-events")["QueueUrl"]
        arn = clients["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        clients["events"].put_rule(Name="all", EventPattern=json.dumps({"source": ["slurm-trigger"]}))
        clients["events"].put_targets(Rule="all", Targets=[{"Id": "q", "Arn": arn}])
        settings = Settings(cluster_name="bench", slurm_url=info["url"], slurm_user=info["user"], api_version=version,
                            slurm_scheme="http", pipelines_path=tmp.name, idempotency_table="bench-idem")
        meter = AwsMeter()
        trigger = build_trigger(settings, dynamodb_client=meter.attach(clients["dynamodb"]),
                                events_client=meter.attach(clients["events"]),
                                secrets_client=clients["secretsmanager"])
        trigger.metrics = NoMetrics()  # Powertools would print EMF blobs into the figures
        trigger.client.version  # negotiated once per container, like the Lambda
        bare = requests.Session()
        bare.headers.update({"X-SLURM-USER-NAME": info["user"], "X-SLURM-USER-TOKEN": info["token"]})
        url = f"{info['url']}/slurm/{version}/job/submit"
        made: list[int] = []

        def post(body: dict[str, Any]) -> int:
            r = bare.post(url, json=body, timeout=30)
            r.raise_for_status()
            return int(r.json()["job_id"])

        def burst_refs(start: int, n: int, kind: str) -> list[ObjectRef]:
            return [ObjectRef("b", f"bench/{run}/{kind}-{i}", version_id=f"{kind}{i}") for i in range(start, start + n)]

        def cancel_ours() -> None:
            for job in trigger.client.list_jobs().jobs:
                if job.comment and f"bench/{run}/" in job.comment:
                    try:
                        trigger.client.cancel_job(job.job_id)
                    except Exception:  # noqa: BLE001 - gone already is fine
                        pass

        # warm-up: connections, the table's first writes, imports (not counted)
        trigger.handle_sqs(sqs_event(burst_refs(0, batch_size, "warm"), -1))
        for ref in burst_refs(batch_size, 3, "warm"):
            made.append(post(trigger.client.submit_body(render_job(ref, trigger.pipelines[0]))))
        cancel_ours()
        drain(clients["sqs"], queue)

        handler_s = bare_s = aws_s = 0.0
        calls: dict[str, int] = {}
        jobs_in_slurm: set[int] = set()
        keys_in_slurm: set[str] = set()
        events: list[dict[str, Any]] = []
        failures = 0
        for start in range(0, args.objects, args.chunk):
            n = min(args.chunk, args.objects - start)
            bodies = [trigger.client.submit_body(render_job(r, trigger.pipelines[0])) for r in burst_refs(start, n, "bare")]
            t0 = time.perf_counter()
            for body in bodies:
                post(body)
            bare_s += time.perf_counter() - t0
            refs = burst_refs(start, n, "burst")
            batches = [sqs_event(refs[i:i + batch_size], start + i) for i in range(0, n, batch_size)]
            before = dict(meter.by_service)
            aws0 = meter.seconds
            t0 = time.perf_counter()
            for batch in batches:
                failures += len(trigger.handle_sqs(batch)["batchItemFailures"])
            handler_s += time.perf_counter() - t0
            aws_s += meter.seconds - aws0
            for service, count in meter.by_service.items():
                calls[service] = calls.get(service, 0) + count - before.get(service, 0)
            # count where the results are: jobs in Slurm by the key in their comment
            for job in trigger.client.list_jobs().jobs:
                if job.comment and f"bench/{run}/burst-" in job.comment:
                    jobs_in_slurm.add(job.job_id)
                    keys_in_slurm.add(job.comment)
            events.extend(drain(clients["sqs"], queue))
            cancel_ours()
        submitted = [e for e in events if e["detail-type"] == "Slurm Job Submitted"]
        pacer = trigger.pacers["bench"]
        total_calls = sum(calls.values())
        print(json.dumps({
            "cluster": args.cluster, "api_version": version, "objects": args.objects, "batch": batch_size,
            "submit_pool": pacer.limit,
            "bare_post_jobs_per_s": round(args.objects / bare_s, 1),
            "handler_jobs_per_s": round(args.objects / handler_s, 1),
            "ratio_handler_vs_bare": round(bare_s / handler_s, 2),
            "handler_without_aws_jobs_per_s": round(args.objects / (handler_s - aws_s), 1),
            "ratio_handler_without_aws_vs_bare": round(bare_s / (handler_s - aws_s), 2),
            "goal_ratio": ">= 0.8",
            "aws_calls_per_object": round(total_calls / args.objects, 2),
            "handler_aws_ms_per_object": round(aws_s * 1000 / args.objects, 2),
            "aws_calls": calls,
            "goal_aws_calls_per_object": "<= 1.3",
            "jobs_in_slurm": len(jobs_in_slurm),
            "distinct_comments_in_slurm": len(keys_in_slurm),
            "submitted_events": len(submitted),
            "distinct_event_job_ids": len({e["detail"]["jobId"] for e in submitted}),
            "failed_messages": failures,
            "slurm_busy_answers": pacer.busy_answers, "slurm_slow_answers": pacer.slow_answers,
        }, indent=2))
        ok = len(jobs_in_slurm) == args.objects == len(submitted) and not failures
        return 0 if ok else 1
    finally:
        proc.terminate()
        proc.wait(10)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
