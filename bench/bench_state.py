#!/usr/bin/env python3
"""What the tracker's state costs at 1,000,000 tracked jobs (and fewer): the cursor's
shards in DynamoDB (moto, in-process), their count and largest size against the 400 KB
item limit, CPU to save and load them, and the items a save writes after 1% of the
jobs changed state (only the shards that changed).

    .venv/bin/python bench/bench_state.py [--jobs 100000,1000000]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ.setdefault(name, value)  # moto's fake credentials, never real ones

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from slurm_trigger.jobstore import Cursor, DynamoDBJobStore, create_table  # noqa: E402

ITEM_LIMIT = 400 * 1024


def measure(n: int) -> dict[str, float]:
    rnd = random.Random(n)
    known = {10_000_000 + i: f"{rnd.choice(['RUNNING', 'PENDING'])}|{1795578000 + rnd.randrange(10**6)}" for i in range(n)}
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        create_table(db, "jobs")
        store = DynamoDBJobStore(db, "jobs")
        puts: list[str] = []
        db.meta.events.register("provide-client-params.dynamodb.PutItem", lambda params, **_: puts.append(params["Item"]["pk"]["S"]))
        cpu = time.process_time()
        assert store.save_cursor("c", Cursor(update_time=1, known=known))
        save_s = time.process_time() - cpu
        items = [i for page in db.get_paginator("scan").paginate(TableName="jobs") for i in page["Items"]]
        shards = [i for i in items if i["pk"]["S"].startswith("known#")]
        cpu = time.process_time()
        cursor = DynamoDBJobStore(db, "jobs").load_cursor("c")
        load_s = time.process_time() - cpu
        assert cursor.known == known
        cursor = store.load_cursor("c")
        for job_id in rnd.sample(sorted(known), n // 100):
            cursor.known[job_id] = "COMPLETED|1795578000"
        puts.clear()
        cpu = time.process_time()
        assert store.save_cursor("c", cursor)
        resave_s = time.process_time() - cpu
    return {"jobs": n, "shards": len(shards), "largest_kb": max(len(i["data"]["B"]) for i in shards) / 1024,
            "save_s": save_s, "load_s": load_s, "resave_1pct_s": resave_s, "resave_puts": len(puts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="100000,1000000")
    args = parser.parse_args()
    print("jobs  shards  largest_kb  save_s  load_s  resave_1pct_s  resave_puts")
    for n in (int(s) for s in args.jobs.split(",")):
        r = measure(n)
        print(f"{r['jobs']:>7}  {r['shards']:>6}  {r['largest_kb']:>10.1f}  {r['save_s']:>6.2f}  {r['load_s']:>6.2f}  "
              f"{r['resave_1pct_s']:>13.2f}  {r['resave_puts']:>11}")
        assert r["largest_kb"] * 1024 < ITEM_LIMIT
    print(f"goal: every shard < {ITEM_LIMIT // 1024} KB (one item held ~57,000 jobs before)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
