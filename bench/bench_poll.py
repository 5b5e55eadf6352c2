"""How one tracker poll scales with the number of jobs Slurm lists.

For N in 100, 1,000 and 10,000 (or ``--sizes``), a recorded ``GET /jobs`` answer
(tests/fixtures/recorded/<version>/jobs.json) is replicated to N jobs with distinct ids,
each carrying a provenance comment (so every job is tracked), and replayed through the
same code as production: the client's ``decode`` of the body's bytes + the version's
dialect (which parses a job in full only when the tracker asks), then ``Tracker.poll``
with its diffing, ``EventBus`` batching and the store protocol.

Two polls per N: the first sees every job (N transitions), the second sees the same
N jobs with 1% of them moved to another state. For each: CPU time (``process_time``)
of the whole poll and of the poll without decoding/parsing (the tracker's own work),
peak traced memory of both (``tracemalloc``, separate runs: tracing slows CPU), PutEvents
calls, and store calls and items read and written. Goals (10,000 jobs): ≤ 0.5 s CPU,
≤ 200 MB, PutEvents calls = ceil(transitions / 10), store work ∝ jobs that changed.

Run: ``.venv/bin/python bench/bench_poll.py [--version v0.0.42] [--sizes 100,1000,10000]``
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib import provenance  # noqa: E402
from chalicelib.eventbus import EventBus  # noqa: E402
from chalicelib.jobstore import Cursor, JobStore, TrackedJob  # noqa: E402
from chalicelib.provenance import Source  # noqa: E402
from chalicelib.slurm.client import decode  # noqa: E402
from chalicelib.slurm.dialects import DIALECTS  # noqa: E402
from chalicelib.slurm.models import JobsPage  # noqa: E402
from chalicelib.tracker import Tracker  # noqa: E402


class MemoryJobStore(JobStore):
    """``JobStore`` in a dict, counting calls and items as DynamoDB would bill them."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], TrackedJob] = {}
        self.cursors: dict[str, Cursor] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.reset()

    def reset(self) -> None:
        self.calls = {"read": 0, "write": 0}
        self.items_read = self.items_written = 0

    def acquire_lease(self, cluster: str, owner: str, seconds: float) -> bool:
        self.calls["write"] += 1
        holder = self.leases.get(cluster)
        if holder and holder[0] != owner and holder[1] > time.time():
            return False
        self.leases[cluster] = (owner, time.time() + seconds)
        return True

    def release_lease(self, cluster: str, owner: str) -> None:
        self.calls["write"] += 1
        if self.leases.get(cluster, ("",))[0] == owner:
            del self.leases[cluster]

    def load_cursor(self, cluster: str) -> Cursor:
        self.calls["read"] += 1
        saved = self.cursors.get(cluster)
        return copy.deepcopy(saved) if saved else Cursor()

    def save_cursor(self, cluster: str, cursor: Cursor) -> bool:
        self.calls["write"] += 1
        if self.cursors.get(cluster, Cursor()).version != cursor.version:
            return False
        cursor.version += 1
        self.cursors[cluster] = copy.deepcopy(cursor)
        return True

    def get_jobs(self, cluster: str, job_ids: Iterable[int]) -> dict[int, TrackedJob]:
        ids = list(dict.fromkeys(job_ids))
        self.calls["read"] += math.ceil(len(ids) / 100)  # BatchGetItem, 100 keys per call
        self.items_read += len(ids)
        return {i: self.items[(cluster, i)] for i in ids if (cluster, i) in self.items}

    def save_job(self, job: TrackedJob, expected: TrackedJob | None) -> bool:
        self.calls["write"] += 1
        self.items_written += 1
        current = self.items.get((job.cluster, job.job_id))
        if (current.state if current else None) != (expected.state if expected else None):
            return False
        self.items[(job.cluster, job.job_id)] = job
        return True

    def list_jobs(self, cluster: str) -> list[TrackedJob]:
        return [j for (c, _), j in self.items.items() if c == cluster]


class CountingEvents:
    """An events client that accepts everything and counts calls."""

    def __init__(self) -> None:
        self.calls = self.entries = 0

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        self.entries += len(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(i)} for i in range(len(Entries))]}


class ReplayedSlurm:
    """Answers ``list_jobs`` with a recorded body: its bytes decoded and parsed by the
    version's dialect on every call (as the real client does), or a page parsed in
    full beforehand (the dialects parse lazily: only jobs the tracker asks for)."""

    def __init__(self, version: str, content: bytes, preparsed: bool) -> None:
        self.dialect = DIALECTS[version]
        self.content = content
        page = self._parse() if preparsed else None
        self.page: JobsPage | None = replace(page, jobs=tuple(page.jobs)) if page else None

    def _parse(self) -> JobsPage:
        return self.dialect.parse_jobs(200, decode(self.content, self.dialect.decode_jobs))

    def list_jobs(self, update_time: int | None = None) -> JobsPage:
        return self.page or self._parse()

    def get_job(self, job_id: int) -> Any:
        raise AssertionError("no job vanishes in this benchmark")


def replicate(version: str, n: int, moved: int = 0) -> bytes:
    """The recorded answer with ``n`` jobs (distinct ids, our comment); the first
    ``moved`` jobs get another state than in the ``moved=0`` answer."""
    body = json.loads((ROOT / "tests" / "fixtures" / "recorded" / version / "jobs.json").read_text())
    samples = body["jobs"]
    running = next(j for j in samples if "RUNNING" in str(j["job_state"]))
    done = next(j for j in samples if "COMPLETED" in str(j["job_state"]))
    jobs = []
    for i in range(n):
        raw = copy.deepcopy(done if i < moved else running)
        raw["job_id"] = 100_000 + i
        src = Source(bucket="bench", key=f"objects/{i:06d}.csv", pipeline="bench", version_id=f"v{i}")
        raw["comment"] = provenance.encode(src)
        jobs.append(raw)
    body["jobs"] = jobs
    return json.dumps(body).encode()


def measure(version: str, n: int, preparsed: bool, trace: bool) -> list[dict[str, Any]]:
    """Two polls over ``n`` jobs; one row per poll."""
    store, events = MemoryJobStore(), CountingEvents()
    first, second = replicate(version, n), replicate(version, n, moved=max(1, n // 100))
    rows = []
    for label, content in (("first", first), ("1% moved", second)):
        slurm = ReplayedSlurm(version, content, preparsed)
        tracker = Tracker(slurm, store, EventBus(events, "default", "slurm-trigger"), "bench", max_changes=0)
        store.reset()
        calls_before = events.calls
        gc.collect()
        if trace:
            tracemalloc.start()
        cpu = time.process_time()
        result = tracker.poll(sweep=False if label != "first" else None)
        cpu = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
        transitions = len(result.transitions)
        rows.append({
            "poll": label, "jobs": n, "transitions": transitions, "cpu_s": cpu, "peak_mb": peak / 2**20,
            "put_events": events.calls - calls_before, "expected_put_events": math.ceil(transitions / 10),
            "store_read_calls": store.calls["read"], "store_write_calls": store.calls["write"],
            "items_read": store.items_read, "items_written": store.items_written,
        })
    return rows


def table(rows: list[dict[str, Any]], columns: list[str], fmt: Callable[[str, Any], str]) -> str:
    cells = [[fmt(c, r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="v0.0.42", choices=sorted(v for v in DIALECTS if (ROOT / "tests/fixtures/recorded" / v / "jobs.json").exists()))
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import logging

    logging.disable(logging.WARNING)  # the tracker's info logs are not what is measured
    rows = []
    for n in sizes:
        full = measure(args.version, n, preparsed=False, trace=False)
        own = measure(args.version, n, preparsed=True, trace=False)
        mem = measure(args.version, n, preparsed=False, trace=True)
        own_mem = measure(args.version, n, preparsed=True, trace=True)
        for f, o, m, om in zip(full, own, mem, own_mem):
            rows.append({**f, "cpu_tracker_s": o["cpu_s"], "peak_mb": m["peak_mb"], "peak_tracker_mb": om["peak_mb"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    def fmt(column: str, value: Any) -> str:
        return f"{value:.3f}" if column.endswith("_s") else f"{value:.1f}" if column.endswith("_mb") else str(value)

    print(f"one poll, {args.version} answers replicated; cpu_s and peak_mb include decoding + dialect parsing, *_tracker_* do not")
    print(table(rows, ["poll", "jobs", "transitions", "cpu_s", "cpu_tracker_s", "peak_mb", "peak_tracker_mb", "put_events", "expected_put_events",
                       "store_read_calls", "store_write_calls", "items_read", "items_written"], fmt))
    firsts = {r["jobs"]: r for r in rows if r["poll"] == "first"}
    if len(firsts) > 1:
        lo, hi = min(firsts), max(firsts)
        print(f"\nfirst poll CPU per job: {1e6 * firsts[lo]['cpu_s'] / lo:.0f} µs at {lo}, {1e6 * firsts[hi]['cpu_s'] / hi:.0f} µs at {hi}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
