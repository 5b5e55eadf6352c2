#!/usr/bin/env python3
"""SlurmClient.submit() against a bare requests.post of the same body, on the local clusters.

For every API version each local slurmrestd serves (from clusters.json, written by
``scripts/local-slurm start``), both sides POST the same JSON with the same headers to the
same URL over their own keep-alive ``requests.Session``, interleaved (the side that goes
first alternates), ``--n`` times each. Prints the medians and the ratio (goal <= 1.10x).
Jobs are ``exit 0`` and are cancelled right after each pair, outside the timed region.

    .venv/bin/python bench/bench_submit.py [--n 200] [--only chroot] [--versions v0.0.42]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import requests

from slurm_trigger.settings import Settings
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.client import SlurmClient
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.slurm.transport import build_session

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("SLURM_TRIGGER_STATE") or "/var/tmp/slurm-trigger")


def token(name: str) -> str:
    return subprocess.run([str(REPO / "scripts" / "local-slurm"), "token", name, "3600"],
                          check=True, capture_output=True, text=True).stdout.strip()


def bench(cluster: dict, version: str, n: int) -> tuple[float, float]:
    jwt = token(cluster["name"])
    client = SlurmClient(cluster["url"], StaticToken(jwt), user=cluster["user"],
                         session=build_session(Settings()), api_version=version)
    sub = JobSubmission(script="#!/bin/bash\nexit 0\n", name="bench-submit",
                        working_directory=cluster.get("workdir") or "/tmp", time_limit=1)
    url = cluster["url"] + client.dialect.path("job/submit")
    body = client.submit_body(sub)
    headers = {"X-SLURM-USER-NAME": cluster["user"], "X-SLURM-USER-TOKEN": jwt}
    bare = requests.Session()

    def ours() -> int:
        return client.submit(sub).job_id

    def theirs() -> int:
        r = bare.post(url, json=body, headers=headers)
        r.raise_for_status()
        return r.json()["job_id"]

    for f in (ours, theirs):  # warm up: connections, negotiation-free (pinned)
        client.cancel_job(f())
    times: dict[str, list[float]] = {"client": [], "bare": []}
    for i in range(n):
        pair = [("client", ours), ("bare", theirs)]
        if i % 2:
            pair.reverse()
        for name, f in pair:
            t = time.perf_counter()
            job_id = f()
            times[name].append(time.perf_counter() - t)
            client.cancel_job(job_id)
    return statistics.median(times["client"]) * 1000, statistics.median(times["bare"]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--only", help="cluster name from clusters.json (host, chroot)")
    parser.add_argument("--versions", nargs="*", help="only these API versions")
    args = parser.parse_args()
    clusters = json.loads((STATE / "clusters.json").read_text())
    print(f"{'cluster':8} {'version':8} {'client ms':>10} {'bare ms':>9} {'ratio':>7}   (median of {args.n} each)")
    for cluster in clusters:
        if args.only and cluster["name"] != args.only:
            continue
        for version in cluster["versions"]:
            if args.versions and version not in args.versions:
                continue
            ours, bare = bench(cluster, version, args.n)
            print(f"{cluster['name']:8} {version:8} {ours:10.2f} {bare:9.2f} {ours / bare:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
