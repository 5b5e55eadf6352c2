#!/usr/bin/env python3
"""What a set costs: DynamoDB calls per member, and the time from the last member's
event to its job, against a single object's event to its job, side by side.

    .venv/bin/python bench/bench_sets.py [--cluster host|chroot] [--sets 50]

``--sets`` pairs (R1, R2 with Illumina names) and as many single objects, interleaved,
through the same trigger: real Slurm (scripts/local-slurm), AWS in-process moto.
When the completing member's handler returns, Slurm has accepted the job, so its time
is "last member → job". Every job is cancelled at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trigger import AwsMeter, NoMetrics, cluster_info, notification  # noqa: E402  (sets the fake AWS env)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from slurm_trigger import idempotency, setstore  # noqa: E402
from slurm_trigger.s3events import ObjectRef  # noqa: E402
from slurm_trigger.settings import Settings  # noqa: E402
from slurm_trigger.trigger import build_trigger  # noqa: E402

JOB = """
job:
  script: "#!/bin/bash\\ntrue\\n"
  partition: debug
  working_directory: /tmp/slurm-trigger-jobs
  standard_output: /dev/null
  environment: {PATH: /usr/bin:/bin}
  time_limit: 1
"""
PAIRS = r"""
name: pairs
match: {prefix: "pairs/"}
collect:
  pattern: '(?P<sample>pairs/.+)_S\d+_L(?P<lane>\d{3})_(?P<read>R[12])_001\.fastq\.gz'
  member: read
  members: [R1, R2]
  deadline: 6h
""" + JOB
SINGLE = 'name: single\nmatch: {prefix: "single/"}\n' + JOB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cluster", default="host", choices=("host", "chroot"))
    ap.add_argument("--sets", type=int, default=50)
    args = ap.parse_args()
    info = cluster_info(args.cluster)
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-sets-") as tmp, mock_aws():
        (Path(tmp) / "pairs.yaml").write_text(PAIRS)
        (Path(tmp) / "single.yaml").write_text(SINGLE)
        settings = Settings(cluster_name="bench", slurm_url=info["url"], slurm_user=info["user"],
                            api_version=info["versions"][-1], slurm_scheme="http", token=info["token"],
                            pipelines_path=tmp)
        meter = AwsMeter()
        ddb = meter.attach(boto3.client("dynamodb"))
        idempotency.create_table(ddb, settings.idempotency_table)
        setstore.create_table(ddb, settings.sets_table)
        trigger = build_trigger(settings, dynamodb_client=ddb, events_client=boto3.client("events"))
        trigger.metrics = NoMetrics()
        first, last, single, jobs = [], [], [], []
        ddb_calls = {"first member": 0, "last member": 0, "single object": 0}

        def timed(ref: ObjectRef, kind: str, into: list[float]) -> None:
            calls, t0 = meter.calls, time.perf_counter()
            [outcome] = trigger.handle_event(notification(ref))
            into.append(time.perf_counter() - t0)
            ddb_calls[kind] += meter.calls - calls
            if outcome.job_id:
                jobs.append(outcome.job_id)

        for i in range(args.sets):
            sample = f"pairs/{run}-{i}_S1_L001"
            timed(ObjectRef("b", f"{sample}_R1_001.fastq.gz", version_id=uuid.uuid4().hex), "first member", first)
            timed(ObjectRef("b", f"{sample}_R2_001.fastq.gz", version_id=uuid.uuid4().hex), "last member", last)
            timed(ObjectRef("b", f"single/{run}-{i}", version_id=uuid.uuid4().hex), "single object", single)
        for job_id in jobs:
            trigger.client.cancel_job(job_id)
    ms = lambda xs: round(statistics.median(xs) * 1000, 2)  # noqa: E731
    print(json.dumps({
        "cluster": args.cluster, "sets": args.sets,
        "median_ms": {"first member": ms(first), "last member -> job": ms(last), "single object -> job": ms(single)},
        "last member / single object": round(statistics.median(last) / statistics.median(single), 2),
        "dynamodb_calls_per": {k: v / args.sets for k, v in ddb_calls.items()},
        "dynamodb_calls_per_member_of_a_pair": (ddb_calls["first member"] + ddb_calls["last member"]) / (2 * args.sets),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
