#!/usr/bin/env python3
"""How late a job's state change reaches the bus: pushed from the head node, against polled.

    .venv/bin/python bench/bench_push.py [--jobs 8] [--poll-interval 60]

The head node kit in its test mode (``tests/integration/headnode_kit.py``: its own
slurmrestd behind its own nginx TLS, against the HOST cluster's slurmctld; a moto
server for AWS), its hook linked where the host's slurmctld calls it (``--hook-dir``:
``scripts/local-slurm`` makes its wrapper the host's ``PrologSlurmctld`` and
``JobCompLoc``). ``--jobs`` real jobs of the kit's service user (``sleep 2``), started
a few seconds apart. slurmctld runs the hook as each starts and ends, and the kit's
pusher puts the change on bus A; a watcher notes the moment each start and end shows
in slurmctld (``scontrol`` every 20 ms). Beside it, the tracker polls every
``--poll-interval`` seconds (the Lambda's schedule is 1 minute) and publishes to bus B.
Each bus has a rule to an SQS queue; latency = arrival in the queue - the moment the
watcher saw the change. Prints p50/p90 per path and their ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import os  # noqa: E402

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

from headnode_kit import FAKE_AWS, KitUnderTest, moto_server, scontrol_job  # noqa: E402

for k, v in FAKE_AWS.items():
    os.environ[k] = v

from slurm_trigger import provenance  # noqa: E402
from slurm_trigger.jobstore import create_table  # noqa: E402
from slurm_trigger.provenance import Source  # noqa: E402
from slurm_trigger.settings import Settings  # noqa: E402
from slurm_trigger.slurm.models import JobSubmission  # noqa: E402
from slurm_trigger.tracker import build_tracker  # noqa: E402

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


def bus_with_queue(kit: KitUnderTest, bus: str) -> str:
    events, sqs = kit.client("events"), kit.client("sqs")
    events.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName=f"{bus}-bench")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="bench", EventBusName=bus, EventPattern=json.dumps({"source": ["slurm-trigger"]}))
    events.put_targets(Rule="bench", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return queue


def receiver(kit: KitUnderTest, queue: str, arrivals: dict[tuple[int, str], float], stop: threading.Event) -> None:
    sqs = kit.client("sqs")
    while not stop.is_set():
        for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
            d = json.loads(m["Body"])["detail"]
            arrivals.setdefault((d["jobId"], "end" if d["state"] in FINAL else d["state"]), time.time())
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--poll-interval", type=float, default=60)
    args = parser.parse_args()
    server, endpoint = moto_server()
    kit = KitUnderTest(endpoint, hook_dir="/etc/slurm/slurm-trigger-hook.d")
    push_q = bus_with_queue(kit, kit.bus)
    poll_bus = f"{kit.bus}-poll"
    poll_q = bus_with_queue(kit, poll_bus)
    try:
        print(f"installing the kit under {kit.root} ...", flush=True)
        kit.install()
        s = Settings(cluster_name=kit.cluster, slurm_url=kit.url, slurm_user=kit.service_user, ca_parameter=kit.parameter,
                     token_secret=kit.secret, jobs_table="bench-jobs", event_bus=poll_bus, read_timeout=10)
        create_table(kit.client("dynamodb"), "bench-jobs")
        tracker = build_tracker(s, dynamodb_client=kit.client("dynamodb"), events_client=kit.client("events"),
                                secrets_client=kit.client("secretsmanager"), ssm_client=kit.client("ssm"))
        client = tracker.client
        pushed: dict[tuple[int, str], float] = {}
        polled: dict[tuple[int, str], float] = {}
        seen: dict[tuple[int, str], float] = {}
        stop = threading.Event()
        threads = [threading.Thread(target=receiver, args=(kit, q, a, stop), daemon=True)
                   for q, a in ((push_q, pushed), (poll_q, polled))]

        def poller() -> None:
            while not stop.is_set():
                began = time.monotonic()
                tracker.poll(sweep=True)
                stop.wait(max(0.0, args.poll_interval - (time.monotonic() - began)))

        threads.append(threading.Thread(target=poller, daemon=True))
        for t in threads:
            t.start()
        run = uuid.uuid4().hex[:8]
        jobs: list[int] = []

        def watcher() -> None:
            """Each start and end as it shows in slurmctld, from the first submission on."""
            while not stop.is_set():
                for j in list(jobs):
                    if (j, "end") in seen:
                        continue
                    state = scontrol_job(j)["JobState"]
                    for what, hit in (("RUNNING", state != "PENDING"), ("end", state in FINAL)):
                        if hit:
                            seen.setdefault((j, what), time.time())
                time.sleep(0.02)

        threading.Thread(target=watcher, daemon=True).start()
        for i in range(args.jobs):
            src = Source(bucket="bench", key=f"push/{run}/{i}", pipeline="bench")
            jobs.append(client.submit(JobSubmission(
                script="#!/bin/bash\nsleep 2\n", environment={"PATH": "/usr/bin:/bin"}, name=f"bench-push-{i}",
                partition="debug", working_directory="/tmp/slurm-trigger-jobs", standard_output="/dev/null",
                time_limit=1, comment=provenance.encode(src))).job_id)
            time.sleep(1.5)
        deadline = time.monotonic() + 120
        while len(seen) < 2 * len(jobs) and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_until = time.monotonic() + args.poll_interval + 15
        while time.monotonic() < wait_until and not all(k in polled and k in pushed for k in seen):
            time.sleep(0.2)
        stop.set()
        push_lat = [pushed[k] - t for k, t in seen.items() if k in pushed]
        poll_lat = [polled[k] - t for k, t in seen.items() if k in polled]
        print(f"{len(seen)} state changes of {args.jobs} jobs; poll interval {args.poll_interval:.0f} s")
        for name, lat in (("pushed (slurmctld's hook -> pusher -> bus)", push_lat), ("polled (tracker)", poll_lat)):
            if lat:
                q = statistics.quantiles(lat, n=10) if len(lat) > 1 else [lat[0]] * 9
                print(f"  {name:40s} n={len(lat):3d}  p50 {statistics.median(lat):6.2f} s  p90 {q[8]:6.2f} s")
            else:
                print(f"  {name:40s} none arrived")
        if push_lat and poll_lat:
            print(f"  ratio polled/pushed (p50): {statistics.median(poll_lat) / statistics.median(push_lat):.0f}x")
    finally:
        kit.uninstall()
        server.stop()


if __name__ == "__main__":
    main()
