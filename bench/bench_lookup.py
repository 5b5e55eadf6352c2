"""What a steady tracker poll and a takeover lookup download and cost, asking ``/jobs/state``
and then the details of a few jobs, side by side with listing all of ``/jobs`` (what
v0.0.38/v0.0.39 clusters, and this code before, do), in one run.

For N in 10,000 and 100,000 (or ``--sizes``), recorded v0.0.42 answers (tests/fixtures/
recorded/v0.0.42: ``jobs.json``, ``job-running.json``, ``job-states.json``) are replicated
to N jobs with distinct ids, one submitted every 10 s, and replayed through the real
``SlurmClient`` (its session's adapter answers from memory: no socket, no server thread in
the measured process) and the real ``Tracker``:

* **steady poll**: all N jobs tracked and known to the cursor, 1% of them moved to another
  state (bench_poll.py's second poll). ``states`` asks ``/jobs/state`` and ``GET /job/{id}``
  for each moved job; ``jobs`` lists ``/jobs``. Both must publish the same events.
* **takeover lookup**: ``find_jobs_by_comment(key, since=claimed_at)``, the claim taken
  5 minutes before the lookup, the job submitted right after it. ``states`` walks the
  newest ids of ``/jobs/state``; ``jobs`` is the search without ``since`` (all of ``/jobs``).

Per row: bytes downloaded, requests, CPU (``process_time``) and peak traced memory
(``tracemalloc``, a separate run; the answers' bytes, made before the call, are left out).
Goals: the state-based way ≤ 0.05x the bytes of the full listing and less CPU and memory,
at 10,000 and 100,000 jobs, and a takeover that fits a 256 MB function at 100,000 jobs
(≤ 64 MB peak). A steady poll's CPU is mostly what both ways share (diffing, publishing
and saving the 1% that moved) plus one request per detail; slurmctld's and slurmrestd's
side (packing every job, ~5.5 KB each, for ``/jobs``) and the time on the wire are not in it.

Run: ``.venv/bin/python bench/bench_lookup.py [--sizes 10000,100000]``
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import requests
from requests.adapters import BaseAdapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_poll import CountingEvents, MemoryJobStore, table  # noqa: E402

from slurm_trigger import provenance  # noqa: E402
from slurm_trigger.eventbus import EventBus  # noqa: E402
from slurm_trigger.provenance import Source  # noqa: E402
from slurm_trigger.slurm.auth import StaticToken  # noqa: E402
from slurm_trigger.slurm.client import SlurmClient  # noqa: E402
from slurm_trigger.tracker import Tracker  # noqa: E402

VERSION = "v0.0.42"
RECORDED = ROOT / "tests" / "fixtures" / "recorded" / VERSION
FIRST_ID = 100_000
T0 = 1_795_000_000
EVERY = 10  # seconds between two submits
KEY = "st-0123456789abcdef0123456789abcdef01234567"


class Recorded:
    """N jobs' answers as bytes: ``/jobs``, ``/jobs/state`` and each ``/job/{id}``, built from
    one recorded job serialized once per state (ids, times and comments put in as bytes)."""

    def __init__(self, n: int, moved: int, ours: int | None = None) -> None:
        listing = json.loads((RECORDED / "jobs.json").read_text())
        running = next(j for j in listing["jobs"] if "RUNNING" in str(j["job_state"]))
        self.templates = {}
        for state in ("RUNNING", "COMPLETED"):
            raw = dict(running, job_id=-1, comment="@COMMENT@", submit_time=-7, job_state=[state])
            self.templates[state] = json.dumps(raw).encode()
        self.n, self.ours = n, ours
        self.jobs = [self._job(i, "COMPLETED" if i < moved else "RUNNING") for i in range(n)]
        listing["jobs"] = []
        self.jobs_body = _envelope(listing, self.jobs)
        states = json.loads((RECORDED / "job-states.json").read_text())
        states["jobs"] = []
        self.states_body = _envelope(states, [
            b'{"job_id": "%d", "state": ["%s"]}' % (FIRST_ID + i, b"COMPLETED" if i < moved else b"RUNNING") for i in range(n)
        ])
        self.job_envelope = json.loads((RECORDED / "job-running.json").read_text())
        self.job_envelope["jobs"] = []

    def _job(self, i: int, state: str) -> bytes:
        src = Source(bucket="bench", key=f"objects/{i:06d}.csv", pipeline="bench", version_id=f"v{i}")
        comment = provenance.encode(src, KEY if i == self.ours else None)
        job = self.templates[state].replace(b'"job_id": -1', b'"job_id": %d' % (FIRST_ID + i), 1)
        job = job.replace(b'"submit_time": -7', b'"submit_time": %d' % (T0 + EVERY * i), 1)
        return job.replace(b'"@COMMENT@"', json.dumps(comment).encode(), 1)

    def answer(self, path: str) -> bytes:
        endpoint = path.split(f"/slurm/{VERSION}/", 1)[1].rstrip("/")
        if endpoint == "jobs":
            return self.jobs_body
        if endpoint == "jobs/state":
            return self.states_body
        if endpoint.startswith("job/"):
            return _envelope(self.job_envelope, [self.jobs[int(endpoint[4:]) - FIRST_ID]])
        raise AssertionError(path)


def _envelope(body: dict[str, Any], jobs: list[bytes]) -> bytes:
    return json.dumps(body).encode().replace(b'"jobs": []', b'"jobs": [' + b", ".join(jobs) + b"]", 1)


class Replay(BaseAdapter):
    """Answers every request from ``Recorded``, counting requests and bytes."""

    def __init__(self, recorded: Recorded) -> None:
        super().__init__()
        self.recorded = recorded
        self.requests = self.bytes = 0

    def send(self, request: requests.PreparedRequest, **kw: Any) -> requests.Response:
        resp = requests.Response()
        resp.status_code, resp.request, resp.url = 200, request, request.url
        content = self.recorded.answer(request.path_url.split("?")[0])
        resp.raw = io.BytesIO(content)  # read as the client reads a stream=True answer
        resp.headers["Content-Type"] = "application/json"
        self.requests += 1
        self.bytes += len(content)
        return resp

    def close(self) -> None:
        pass


class FullListing(SlurmClient):
    """The client as a cluster without /jobs/state has it."""

    serves_job_states = False


def client(kind: type[SlurmClient], recorded: Recorded) -> tuple[SlurmClient, Replay]:
    session, adapter = requests.Session(), Replay(recorded)
    session.mount("http://", adapter)
    return kind("http://slurm", StaticToken("t"), user="bench", session=session, api_version=VERSION), adapter


def measured(run: Callable[[], Any], trace: bool) -> tuple[Any, float, float]:
    gc.collect()
    if trace:
        tracemalloc.start()
    cpu = time.process_time()
    out = run()
    cpu = time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else 0.0
    if trace:
        tracemalloc.stop()
    return out, cpu, peak


def steady_poll(n: int, trace: bool) -> list[dict[str, Any]]:
    before, after = Recorded(n, moved=0), Recorded(n, moved=max(1, n // 100))
    rows, published = [], {}
    for way, kind in (("states", SlurmClient), ("jobs", FullListing)):
        store, events = MemoryJobStore(), CountingEvents()
        first, _ = client(kind, before)
        Tracker(first, store, EventBus(events, "default", "slurm-trigger"), "bench", max_changes=0).poll()  # not measured
        slurm, adapter = client(kind, after)
        tracker = Tracker(slurm, store, EventBus(events, "default", "slurm-trigger"), "bench", max_changes=0)
        result, cpu, peak = measured(lambda: tracker.poll(sweep=False), trace)
        assert result.listing == way, (way, result.listing)
        published[way] = sorted((t["jobId"], t["state"]) for t in result.transitions)
        rows.append({"what": "steady poll", "jobs": n, "way": way, "requests": adapter.requests, "mb": adapter.bytes / 2**20,
                     "cpu_s": cpu, "peak_mb": peak, "events": len(result.transitions)})
    assert published["states"] == published["jobs"] and published["jobs"], "the two ways must publish the same events"
    return rows


def takeover(n: int, trace: bool) -> list[dict[str, Any]]:
    ours = n - 3  # submitted right after the claim; the lookup comes 5 minutes later
    recorded = Recorded(n, moved=0, ours=ours)
    claimed = T0 + EVERY * ours - 1
    rows, found = [], {}
    for way, since in (("states", claimed), ("jobs", None)):
        slurm, adapter = client(SlurmClient, recorded)
        slurm._served, slurm._served_db = [VERSION], []  # no accounting: slurmctld only
        jobs, cpu, peak = measured(lambda: slurm.find_jobs_by_comment(KEY, since=since), trace)
        found[way] = [j.job_id for j in jobs]
        rows.append({"what": "takeover lookup", "jobs": n, "way": way, "requests": adapter.requests, "mb": adapter.bytes / 2**20,
                     "cpu_s": cpu, "peak_mb": peak, "events": len(jobs)})
    assert found["states"] == found["jobs"] == [FIRST_ID + ours], found
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for scenario in (steady_poll, takeover):
            cpu_rows, mem_rows = scenario(n, False), scenario(n, True)
            rows += [{**c, "peak_mb": m["peak_mb"]} for c, m in zip(cpu_rows, mem_rows)]

    def fmt(column: str, value: Any) -> str:
        return f"{value:.3f}" if column.endswith("_s") else f"{value:.2f}" if column.endswith("mb") else str(value)

    print(f"{VERSION} answers replicated; 'states' = /jobs/state + GET /job/{{id}} of a few, 'jobs' = all of /jobs")
    print(table(rows, ["what", "jobs", "way", "requests", "mb", "cpu_s", "peak_mb", "events"], fmt))
    print()
    by = {(r["what"], r["jobs"], r["way"]): r for r in rows}
    for what, n in sorted({(r["what"], r["jobs"]) for r in rows}, key=lambda k: (k[0] != "steady poll", k[1])):
        s, j = by[(what, n, "states")], by[(what, n, "jobs")]
        line = (f"{what} at {n:,} jobs: {s['mb'] / j['mb']:.3f}x the bytes, {s['cpu_s'] / j['cpu_s']:.3f}x the CPU, "
                f"{s['peak_mb'] / j['peak_mb']:.3f}x the peak memory of the full listing (goals: <= 0.05x bytes, < 1x CPU and memory")
        if what == "takeover lookup" and n == 100_000:
            line += f"; peak {s['peak_mb']:.0f} MB, goal <= 64 MB"
        print(line + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
