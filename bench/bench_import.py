#!/usr/bin/env python3
"""Cold import cost: the Slurm client against ``import requests`` alone, and the Lambda
app (``import app``, what every new container pays before its first event) against
``import boto3, requests`` (goal: ≤ 1.15x).

Each sample is a fresh interpreter (nothing cached in sys.modules) that times only the
import statement(s) with perf_counter, so interpreter start-up is not counted. Prints the
median of ``--runs`` samples per case, the peak RSS, and which heavy modules each case
pulled in.

    .venv/bin/python bench/bench_import.py [--runs 15]
"""
from __future__ import annotations

import argparse
import json
import statistics
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The stage variables app.py reads at import (as the Lambda runtime has them).
APP_ENV = {"SUBSCRIPTIONS": "sqs,eventbridge", "INPUT_QUEUE": "q", "INPUT_BUCKET": "b"}
BASELINES = {"import requests": "import requests", "import app": "import boto3, requests",
             "import boto3, requests, jwt": "import boto3, requests"}
GOAL = {"import app": 1.15}
CASES = {
    "import requests": "import requests",
    "import slurm_trigger.slurm.client": "import slurm_trigger.slurm.client",
    "build_client (url + token)": (
        "from slurm_trigger.settings import Settings\n"
        "from slurm_trigger.slurm import build_client\n"
        "build_client(Settings(slurm_url='http://127.0.0.1:1', token='t', slurm_user='u'))"
    ),
    # Lambda has no `cryptography`, so PyJWT loads only its HMAC algorithms there:
    # block it here too, or the figure is that of a dev machine.
    "build_client + mint (key file)": (
        "import sys, tempfile; sys.modules['cryptography'] = None\n"
        "from slurm_trigger.settings import Settings\n"
        "from slurm_trigger.slurm import build_client\n"
        "f = tempfile.NamedTemporaryFile(); f.write(b'k' * 32); f.flush()\n"
        "c = build_client(Settings(slurm_url='http://127.0.0.1:1', jwt_key_file=f.name, slurm_user='u'))\n"
        "c._auth.token()"
    ),
    "import boto3, requests": "import boto3, requests",
    # What minting adds to a Lambda cold start, where boto3 and requests are loaded anyway.
    "import boto3, requests, jwt": "import sys; sys.modules['cryptography'] = None\nimport boto3, requests, jwt",
    "import app": "import app",
    # what the first object then adds (the trigger's modules, before any AWS or Slurm call)
    "import app + trigger modules": "import app, slurm_trigger.trigger",
    "import app + tracker modules": "import app, slurm_trigger.tracker, slurm_trigger.slurm",
}
HEAVY = ("boto3", "botocore", "aws_lambda_powertools", "slurm_trigger.observability", "aws_xray_sdk.core", "chalice", "jwt",
         "cryptography")

PROBE = """
import sys, time, json
t = time.perf_counter()
exec(compile({code!r}, "<case>", "exec"))
dt = time.perf_counter() - t
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"ms": dt * 1000, "mib": rss, "heavy": [m for m in {heavy!r} if sys.modules.get(m) is not None]}}))
"""


def sample(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)], cwd=REPO,
                         env={**os.environ, **APP_ENV}, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in CASES}
    rss: dict[str, list[float]] = {name: [] for name in CASES}
    heavy = {}
    for _ in range(args.runs):  # interleaved, so machine noise hits every case alike
        for name, code in CASES.items():
            s = sample(code)
            results[name].append(s["ms"])
            rss[name].append(s["mib"])
            heavy[name] = s["heavy"]
    print(f"{'case':34} {'median ms':>10} {'MiB':>6} {'ratio':>7} {'goal':>6}  vs / heavy modules loaded")
    base = "import requests"
    for name, values in results.items():
        base = next((b for case, b in BASELINES.items() if case == name), base)
        med = statistics.median(values)
        ratio = med / statistics.median(results[base])
        goal = f"{GOAL[name]:.2f}x" if name in GOAL else "-"
        print(f"{name:34} {med:10.1f} {statistics.median(rss[name]):6.1f} {ratio:6.2f}x {goal:>6}"
              f"  vs {base} / {', '.join(heavy[name]) or '-'}")
    print(f"({args.runs} fresh interpreters per case, {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
