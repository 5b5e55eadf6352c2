"""How one tracker poll scales with the number of jobs Slurm lists, side by side with
another revision of the code (``--baseline``, default ``main``) in the same run.

For N in 10,000 and 100,000 (or ``--sizes``), a recorded ``GET /jobs`` answer
(tests/fixtures/recorded/<version>/jobs.json) is replicated to N jobs with distinct ids,
each carrying a provenance comment (so every job is tracked), and replayed through the
same code as production: the client's ``decode`` of the body's bytes + the version's
dialect, then ``Tracker.poll`` with its diffing, ``EventBus`` batching and the store
protocol (the store in memory, counting calls as DynamoDB bills them).

Three polls per N: a first poll as the tracker runs it (``max_changes`` at its default,
2,000: that many transitions, the rest deferred to the next polls); a first poll that
takes every job at once (``first, all``: N transitions); then the same N jobs with 1%
of them moved to another state. For each: CPU time (``process_time``, after one small
poll has imported what a container imports once),
peak traced memory (``tracemalloc``, separate runs: tracing slows CPU) without the
answer's bytes (``peak_mb``: they exist before the poll decodes them; ``body_mb`` says
how big they are) and with them (``peak_body_mb``: the body read inside the poll from a
``requests`` response, as that revision's client reads it), PutEvents calls, and store
calls and items read and written. A second case (``--foreign``, 90% by default) gives
most jobs another user's comment, as on a shared cluster: CPU only. Each revision runs
in its own interpreter (``git archive`` of its ``slurm_trigger``), one after the other
per N. Goals: each poll at 100,000 jobs ≤ 3 s CPU and ≤ 300 MB, PutEvents calls =
ceil(transitions / 10), store work ∝ jobs that changed.

Run: ``.venv/bin/python bench/bench_poll.py [--version v0.0.42] [--sizes 10000,100000] [--baseline main] [--foreign 0.9] [--repeat 3]``
"""
from __future__ import annotations

import argparse
import copy
import gc
import io
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
# A worker measures the slurm_trigger under --code-root (another revision's, unpacked).
sys.path.insert(0, sys.argv[sys.argv.index("--code-root") + 1] if "--code-root" in sys.argv else str(ROOT))

import requests  # noqa: E402

from slurm_trigger import provenance  # noqa: E402
from slurm_trigger.eventbus import EventBus  # noqa: E402
from slurm_trigger.jobstore import Cursor, JobStore, TrackedJob  # noqa: E402
from slurm_trigger.provenance import Source  # noqa: E402
from slurm_trigger.slurm.auth import Token  # noqa: E402
from slurm_trigger.slurm import client  # noqa: E402
from slurm_trigger.slurm.client import decode  # noqa: E402
from slurm_trigger.slurm.dialects import DIALECTS  # noqa: E402
from slurm_trigger.slurm.models import JobsPage  # noqa: E402
from slurm_trigger.tracker import Tracker  # noqa: E402


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
    version's dialect on every call, as the real client does, the token redacted as the
    client does (a JWT-long one). ``read``: the bytes are read first, inside the call,
    from a ``requests`` response the way this revision's client reads a body, then
    dropped: whole (``read_body``, else ``Response.content``), or split into jobs as they
    stream in where the client does that (``read_answer`` with the dialect's
    ``decode_job_list``). Without ``read`` the bytes are there already: decoded whole, or
    handed to ``read_answer`` as slices of them (no copy), as the response's chunks."""

    def __init__(self, version: str, content: bytes, read: bool = False) -> None:
        self.dialect = DIALECTS[version]
        self.content = content
        self.read = read
        self.token = Token("eyJ" + "x" * 40 + "." + "y" * 80 + "." + "z" * 43, "the benchmark")

    def list_jobs(self, update_time: int | None = None) -> JobsPage:
        read_answer = getattr(client, "read_answer", None)
        if read_answer is not None and hasattr(self.dialect, "decode_job_list"):
            body, _ = read_answer(self._response(), self.token, self.dialect.decode_jobs, self.dialect.decode_job_list)
            return self.dialect.parse_jobs(200, body)
        content = client.redact(self._read() if self.read else self.content, self.token)
        body = decode(content, self.dialect.decode_jobs)
        del content
        return self.dialect.parse_jobs(200, body)

    def _response(self) -> requests.Response:
        resp = requests.Response()
        resp.status_code, resp.raw = 200, io.BytesIO(self.content)  # BytesIO shares the bytes
        if not self.read:
            view, size = memoryview(self.content), 1 << 20
            resp.iter_content = lambda chunk_size=1, decode_unicode=False: (  # type: ignore[method-assign]
                view[i:i + size] for i in range(0, len(view), size))
        return resp

    def _read(self) -> bytes | bytearray:
        resp = self._response()
        read_body = getattr(client, "read_body", None)
        return read_body(resp) if read_body else resp.content

    def get_job(self, job_id: int) -> Any:
        raise AssertionError("no job vanishes in this benchmark")


def replicate(version: str, n: int, moved: int = 0, foreign: float = 0.0) -> bytes:
    """The recorded answer with ``n`` jobs (distinct ids, our comment); the first
    ``moved`` jobs get another state than in the ``moved=0`` answer; a share ``foreign``
    of the jobs (every job but one in ten at 0.9) carry another user's comment instead.
    Each job is the recorded one serialized once, with its id and comment put in as bytes
    (100,000 deep copies and dumps took a minute)."""
    body = json.loads((ROOT / "tests" / "fixtures" / "recorded" / version / "jobs.json").read_text())
    samples = body["jobs"]
    templates = []
    for state in ("RUNNING", "COMPLETED"):
        raw = dict(next(j for j in samples if state in str(j["job_state"])), job_id=-1, comment="@COMMENT@")
        templates.append(json.dumps(raw).encode())
    jobs = []
    ours_every = round(1 / (1 - foreign)) if foreign else 1
    for i in range(n):
        src = Source(bucket="bench", key=f"objects/{i:06d}.csv", pipeline="bench", version_id=f"v{i}")
        comment = provenance.encode(src) if i % ours_every == 0 else f"someone else's run {i}: objects/{i:06d}.csv"
        job = templates[1 if i < moved else 0].replace(b'"job_id": -1', b'"job_id": %d' % (100_000 + i), 1)
        jobs.append(job.replace(b'"@COMMENT@"', json.dumps(comment).encode(), 1))
    body["jobs"] = []
    envelope = json.dumps(body).encode()
    return envelope.replace(b'"jobs": []', b'"jobs": [' + b", ".join(jobs) + b"]", 1)


def measure(version: str, n: int, trace: bool, read: bool = False, foreign: float = 0.0) -> list[dict[str, Any]]:
    """Three polls over ``n`` jobs; one row per poll: a first poll as the tracker runs
    it (``max_changes`` at its default: 2,000 jobs parsed and published, the rest left
    for the next polls), on a store of its own; then a first poll that takes all ``n``
    at once (``max_changes=0``), and after it the same jobs with 1% moved."""
    events = CountingEvents()
    first, second = replicate(version, n, foreign=foreign), replicate(version, n, moved=max(1, n // 100), foreign=foreign)
    rows = []
    for label, content, store, bound in (("first", first, MemoryJobStore(), {}),
                                         ("first, all", first, (store := MemoryJobStore()), {"max_changes": 0}),
                                         ("1% moved", second, store, {"max_changes": 0})):
        slurm = ReplayedSlurm(version, content, read)
        tracker = Tracker(slurm, store, EventBus(events, "default", "slurm-trigger"), "bench", **bound)
        store.reset()
        calls_before = events.calls
        gc.collect()
        if trace:
            tracemalloc.start()
        cpu = time.process_time()
        result = tracker.poll(sweep=False if label == "1% moved" else None)
        cpu = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
        transitions = len(result.transitions)
        rows.append({
            "case": f"{1 - foreign:.0%} ours", "poll": label, "jobs": n, "body_mb": len(content) / 2**20,
            "transitions": transitions, "deferred": result.deferred, "cpu_s": cpu,
            "peak_mb": peak / 2**20, "put_events": events.calls - calls_before, "expected_put_events": math.ceil(transitions / 10),
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


def worker(version: str, n: int, foreign: float) -> None:
    """One revision's rows for ``n`` jobs (CPU, then memory without and with the body;
    then the CPU of the case with foreign jobs), as JSON on stdout."""
    import logging

    logging.disable(logging.WARNING)  # the tracker's info logs are not what is measured
    measure(version, 10, False)  # once per container, not per job (the tracer's import): not counted
    runs = zip(measure(version, n, False), measure(version, n, True), measure(version, n, True, read=True))
    rows = [{**cpu, "peak_mb": mem["peak_mb"], "peak_body_mb": whole["peak_mb"]} for cpu, mem, whole in runs]
    if foreign:
        rows += [{**cpu, "peak_mb": None, "peak_body_mb": None} for cpu in measure(version, n, False, foreign=foreign)]
    print(json.dumps(rows))


def run_worker(code_root: Path, version: str, n: int, foreign: float) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "--code-root", str(code_root), "--version", version, "--sizes", str(n),
         "--foreign", str(foreign)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="v0.0.42", choices=sorted(v for v in DIALECTS if (ROOT / "tests/fixtures/recorded" / v / "jobs.json").exists()))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--baseline", default="main", help="the git revision to compare with ('' for none)")
    parser.add_argument("--foreign", type=float, default=0.9, help="share of other users' jobs in the second case (0: no such case)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each revision, alternating; CPU is their median")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        worker(args.version, sizes[0], args.foreign)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        codes = {"this": ROOT}
        if args.baseline:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "slurm_trigger"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            codes = {args.baseline: Path(tmp), **codes}
        rows = []
        for n in sizes:
            # the revisions alternate, run after run: a noisy minute meets both
            runs = {label: [] for label in codes}
            for _ in range(args.repeat):
                for label, root in codes.items():
                    runs[label].append(run_worker(root, args.version, n, args.foreign))
            for label, tries in runs.items():
                rows += [{"code": label, **row, "cpu_s": statistics.median(t[i]["cpu_s"] for t in tries)}
                         for i, row in enumerate(tries[0])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    def fmt(column: str, value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if column.endswith("_s") else f"{value:.1f}" if column.endswith("_mb") else str(value)

    print(f"one poll, {args.version} answers replicated; peak_mb leaves out the answer's bytes (body_mb), "
          "peak_body_mb has them, read as each revision's client reads a body")
    print(table(rows, ["code", "case", "poll", "jobs", "body_mb", "transitions", "deferred", "cpu_s", "peak_mb", "peak_body_mb", "put_events",
                       "expected_put_events", "store_read_calls", "store_write_calls", "items_read", "items_written"], fmt))
    by = {(r["code"], r["case"], r["poll"], r["jobs"]): r for r in rows}
    print()
    for n in sizes:
        for case, poll in [("100% ours", "first"), ("100% ours", "first, all"), ("100% ours", "1% moved")] + (
            [(f"{1 - args.foreign:.0%} ours", "1% moved")] if args.foreign else []
        ):
            mine = by[("this", case, poll, n)]
            line = f"{poll} poll at {n:,} jobs, {case}: {mine['cpu_s']:.2f} s CPU"
            if mine["peak_mb"] is not None:
                line += f", {mine['peak_mb']:.0f} MB peak ({mine['peak_body_mb']:.0f} MB with the {mine['body_mb']:.0f} MB body)"
            if n == 100_000 and case == "100% ours":
                line += " (goals: <= 3 s, <= 300 MB)"
            if args.baseline:
                base = by[(args.baseline, case, poll, n)]
                line += f"; {mine['cpu_s'] / base['cpu_s']:.2f}x the CPU"
                if mine["peak_mb"] is not None:
                    line += (f", {mine['peak_mb'] / base['peak_mb']:.2f}x the memory"
                             f" ({mine['peak_body_mb'] / base['peak_body_mb']:.2f}x with the body)")
                line += f" of {args.baseline}"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
