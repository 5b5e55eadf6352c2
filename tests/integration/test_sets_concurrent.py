"""The last members of a set landing at the same moment in separate Lambdas.

Each Lambda is a separate process with its own clients. AWS is moto's server run by
one thread (requests are handled one at a time, so each conditional write is atomic,
as in DynamoDB; moto's in-process backend is not atomic across threads). Slurm is real,
and the jobs are counted there.
"""
from __future__ import annotations

import json
import multiprocessing
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
import requests

from slurm_trigger import idempotency, setstore
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.settings import Settings
from slurm_trigger.trigger import build_trigger

pytestmark = pytest.mark.real_slurm

PIPELINE = r"""
name: pairs
match: {prefix: "reads/"}
collect:
  pattern: '(?P<sample>reads/[^/]+)_(?P<read>R[12])_001\.fastq\.gz'
  member: read
  members: [R1, R2]
job:
  script: "#!/bin/bash\ntrue\n"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {PATH: /usr/bin:/bin}
  time_limit: 1
"""
LAMBDAS = 4  # two deliveries of each mate, all at once
SETS = 5
RETRIES = 20  # what Lambda/SQS redelivery does for a transient error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server on one thread: ``threaded=False`` handles one request at a time."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from conftest import FAKE_AWS_ENV

    for k, v in FAKE_AWS_ENV.items():
        monkeypatch.setenv(k, v)
    port = _free_port()
    server = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    requests.post(f"{url}/moto-api/reset", timeout=10)  # moto's backends outlive the server
    server.shutdown()
    thread.join()


def _lambda(settings: Settings, refs: list[ObjectRef], start: Any, results: Any, index: int) -> None:
    """One Lambda container: its own clients; every set's member delivered at the
    barrier, a transient error retried as Lambda would."""
    trigger = build_trigger(
        settings, dynamodb_client=boto3.client("dynamodb"), events_client=boto3.client("events"), s3_client=boto3.client("s3")
    )
    for ref in refs:
        start.wait()
        for _ in range(RETRIES):
            try:
                [outcome] = trigger.handle(ref)
                results.put((index, ref.key, outcome.status, outcome.job_id, outcome.idempotency_key))
                break
            except Exception as exc:  # noqa: BLE001 - transient: retried
                results.put((index, ref.key, "retry", None, type(exc).__name__))
                time.sleep(0.3)


def test_members_racing_in_separate_lambdas_make_one_job_per_set(moto_server, slurm_target, tmp_path: Path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "pairs.yaml").write_text(textwrap.dedent(PIPELINE.replace("WORKDIR", slurm_target.workdir)))
    settings = Settings(
        cluster_name="sets-race",
        slurm_url=slurm_target.url,
        slurm_user=slurm_target.user,
        api_version=slurm_target.version,
        slurm_scheme="http",
        token=slurm_target.token(),
        pipelines_path=str(folder),
        read_timeout=10,
    )
    ddb = boto3.client("dynamodb")
    idempotency.create_table(ddb, settings.idempotency_table)
    setstore.create_table(ddb, settings.sets_table)
    run = uuid.uuid4().hex[:8]
    samples = [f"reads/{run}-{i}" for i in range(SETS)]
    version = {(s, r): uuid.uuid4().hex for s in samples for r in ("R1", "R2")}

    def mate(sample: str, read: str) -> ObjectRef:
        return ObjectRef("bkt", f"{sample}_{read}_001.fastq.gz", size=1, etag="e", version_id=version[sample, read])

    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(LAMBDAS), ctx.Queue()
    # Lambda i delivers R1 (even i) or R2 (odd i) of every set: each set's two mates
    # land twice, at the same moment.
    workers = [
        ctx.Process(target=_lambda, args=(settings, [mate(s, ("R1", "R2")[i % 2]) for s in samples], start, results, i))
        for i in range(LAMBDAS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
        assert w.exitcode == 0
    rows = []
    while not results.empty():
        rows.append(results.get())
    client = build_trigger(settings, dynamodb_client=ddb, events_client=boto3.client("events")).client
    for sample in samples:
        got = [r for r in rows if r[1].startswith(sample + "_")]
        final = [r for r in got if r[2] != "retry"]
        assert len(final) == LAMBDAS, got
        submitted = [r for r in final if r[2] in ("submitted", "adopted")]
        assert len(submitted) == 1, got
        set_id = submitted[0][4]
        jobs = client.find_jobs_by_comment(set_id)  # counted in Slurm
        assert [j.job_id for j in jobs] == [submitted[0][3]], (sample, jobs, got)
        assert {r[2] for r in final} <= {"submitted", "adopted", "collected", "duplicate"}, got
    print(json.dumps({"deliveries": len(rows), "retries": sum(r[2] == "retry" for r in rows)}))
