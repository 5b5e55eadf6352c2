#!/usr/bin/env python3
"""Cold import cost of the Slurm client, against ``import requests`` alone.

Each sample is a fresh interpreter (nothing cached in sys.modules) that times only the
import statement(s) with perf_counter, so interpreter start-up is not counted. Prints the
median of ``--runs`` samples per case and which heavy modules each case pulled in.

    .venv/bin/python bench/bench_import.py [--runs 15]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = {
    "import requests": "import requests",
    "import chalicelib.slurm.client": "import chalicelib.slurm.client",
    "build_client (url + token)": (
        "from chalicelib.settings import Settings\n"
        "from chalicelib.slurm import build_client\n"
        "build_client(Settings(slurm_url='http://127.0.0.1:1', token='t', slurm_user='u'))"
    ),
    # Lambda has no `cryptography`, so PyJWT loads only its HMAC algorithms there:
    # block it here too, or the figure is that of a dev machine.
    "build_client + mint (key file)": (
        "import sys, tempfile; sys.modules['cryptography'] = None\n"
        "from chalicelib.settings import Settings\n"
        "from chalicelib.slurm import build_client\n"
        "f = tempfile.NamedTemporaryFile(); f.write(b'k' * 32); f.flush()\n"
        "c = build_client(Settings(slurm_url='http://127.0.0.1:1', jwt_key_file=f.name, slurm_user='u'))\n"
        "c._auth.token()"
    ),
}
HEAVY = ("boto3", "botocore", "aws_lambda_powertools", "chalicelib.observability", "jwt", "cryptography")

PROBE = """
import sys, time, json
t = time.perf_counter()
exec(compile({code!r}, "<case>", "exec"))
dt = time.perf_counter() - t
print(json.dumps({{"ms": dt * 1000, "heavy": [m for m in {heavy!r} if sys.modules.get(m) is not None]}}))
"""


def sample(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results = {name: [] for name in CASES}
    heavy = {}
    for _ in range(args.runs):  # interleaved, so machine noise hits every case alike
        for name, code in CASES.items():
            s = sample(code)
            results[name].append(s["ms"])
            heavy[name] = s["heavy"]
    base = statistics.median(results["import requests"])
    print(f"{'case':34} {'median ms':>10} {'vs requests':>12}  heavy modules loaded")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:34} {med:10.1f} {med / base:11.2f}x  {', '.join(heavy[name]) or '-'}")
    print(f"({args.runs} fresh interpreters per case, {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
