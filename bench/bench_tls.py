#!/usr/bin/env python3
"""What a TLS verification failure costs a call, before and after it stopped being retried.

    .venv/bin/python bench/bench_tls.py [--runs 3]

A local HTTPS server with a self-signed certificate; the client trusts another one, so
every handshake fails verification. Side by side, same session settings (``retries=3``,
the default): the transport's policy (a verification failure ends the call) against
urllib3's plain ``Retry`` with the same parameters (what the transport used before).
Prints seconds per failed call and handshakes per call. Needs nothing else.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import requests  # noqa: E402
import urllib3  # noqa: E402
from urllib3.util.retry import Retry  # noqa: E402

from slurm_trigger.settings import Settings  # noqa: E402
from slurm_trigger.slurm.transport import build_session  # noqa: E402


class Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import ssl

    from test_headnode import self_signed  # the tests' certificate maker

    tmp = Path(tempfile.mkdtemp())
    cert, key = self_signed()
    (tmp / "cert.pem").write_text(cert)
    (tmp / "key.pem").write_text(key)
    (tmp / "other.pem").write_text(self_signed()[0])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/slurm/v0.0.42/ping"

    handshakes = 0
    original = urllib3.connection.HTTPSConnection.connect

    def counting(conn: object) -> None:
        nonlocal handshakes
        handshakes += 1
        original(conn)

    urllib3.connection.HTTPSConnection.connect = counting  # type: ignore[method-assign]
    settings = Settings(ca_bundle=str(tmp / "other.pem"))
    results: dict[str, tuple[list[float], list[int]]] = {"now (not retried)": ([], []), "before (urllib3 Retry)": ([], [])}
    for _ in range(args.runs):
        for name in results:
            session = build_session(settings)
            if name.startswith("before"):
                adapter = session.get_adapter(url)
                now = adapter.max_retries
                adapter.max_retries = Retry(total=now.total, backoff_factor=now.backoff_factor,
                                            status_forcelist=now.status_forcelist, allowed_methods=now.allowed_methods,
                                            respect_retry_after_header=True, raise_on_status=False)
            handshakes, began = 0, time.perf_counter()
            try:
                session.get(url)
            except requests.exceptions.SSLError:
                pass
            results[name][0].append(time.perf_counter() - began)
            results[name][1].append(handshakes)
    server.shutdown()
    print(f"TLS verification failure, retries=3, median of {args.runs}:")
    times = {}
    for name, (secs, counts) in results.items():
        times[name] = statistics.median(secs)
        print(f"  {name:24s} {times[name]:6.3f} s per call, {statistics.median(counts):.0f} handshakes")
    print(f"  ratio before/now: {times['before (urllib3 Retry)'] / times['now (not retried)']:.0f}x")


if __name__ == "__main__":
    main()
