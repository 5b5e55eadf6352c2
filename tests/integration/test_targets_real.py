"""Two real clusters from one deployment: the host's 22.05 as the default target
(minted tokens, X-SLURM headers) and the 24.11 chroot as a SLURM_TARGETS entry (minted
tokens, Bearer). ``slurm-trigger versions`` shows both; the scheduled ``poll_jobs``
polls each under its own lease and cursor, and each job's events carry its target's
cluster name."""
from __future__ import annotations

import importlib.util
import json
import time
import uuid
from typing import Any

import boto3
import pytest
from conftest import REPO, SlurmTarget, not_available, read_clusters
from event_queue import events_to_queue
from test_tracker_real import OnlyTheseJobs

from slurm_trigger import provenance
from slurm_trigger_cli import main
from slurm_trigger.jobstore import DynamoDBJobStore, create_table
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from slurm_trigger.slurm.models import JobSubmission

pytestmark = pytest.mark.real_slurm
WAIT_SECONDS = 180


class LambdaContext:
    def get_remaining_time_in_millis(self) -> int:
        return 110_000


def target(name: str) -> SlurmTarget:
    c = {c["name"]: c for c in read_clusters()}.get(name)
    if c is None:
        not_available(f"cluster {name} is not running")
    return SlurmTarget(name=name, url=c["url"], version=c["versions"][-1], user=c["user"],
                       cluster=c.get("cluster", name), root=c.get("root") or "/")


@pytest.fixture
def two(aws: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, SlurmTarget]:
    host, chroot = target("host"), target("chroot")
    env = {
        "SLURM_CLUSTER_NAME": "lab-old", "SLURM_URL": host.url, "SLURM_USER": host.user,
        "SLURM_JWT_KEY_FILE": str(host.jwt_key_path()),
        "SLURM_TARGETS": json.dumps({"lab-new": {
            "SLURM_URL": chroot.url, "SLURM_USER": chroot.user, "SLURM_JWT_KEY_FILE": str(chroot.jwt_key_path()),
            "SLURM_AUTH_HEADER": "bearer"}}),
        "JOBS_TABLE": "targets-jobs", "SUBSCRIPTIONS": "", "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for var in ("SLURM_TOKEN", "SLURM_API_VERSION", "SLURM_TOKEN_SECRET", "SLURM_PCS_CLUSTER"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {"lab-old": host, "lab-new": chroot}


def test_versions_for_each_target(two: dict[str, SlurmTarget], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["versions"]) == 0
    shown = {t["target"]: t for t in json.loads(capsys.readouterr().out)}
    assert set(shown) == {"lab-old", "lab-new"}
    assert shown["lab-old"]["served"][-1] == shown["lab-old"]["negotiated"] == "v0.0.38"
    assert shown["lab-new"]["negotiated"] == "v0.0.42" and "v0.0.40" in shown["lab-new"]["served"]
    assert all("v0.0.43" in t["known"] for t in shown.values())
    assert main(["versions", "--target", "lab-new", "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "lab-old" not in table and table.splitlines()[0].split()[:5] == ["TARGET", "VERSION", "SERVED", "KNOWN", "USED"]


def test_the_tracker_polls_each_target(two: dict[str, SlurmTarget], monkeypatch: pytest.MonkeyPatch) -> None:
    create_table(boto3.client("dynamodb"), "targets-jobs")
    published = events_to_queue("targets-events")
    jobs = {}
    for name, settings in Settings.from_env().targets().items():
        client = build_client(settings)
        src = provenance.Source(bucket="lab", key=f"targets/{name}-{uuid.uuid4().hex[:8]}", pipeline="targets")
        sub = JobSubmission(script="#!/bin/bash\ntrue\n", name=f"targets-{name}", partition="debug",
                            working_directory=two[name].workdir, standard_output="/dev/null",
                            environment={"PATH": "/usr/bin:/bin"}, time_limit=1, comment=provenance.encode(src))
        jobs[name] = client.submit(sub).job_id
    spec = importlib.util.spec_from_file_location("app_targets", REPO / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    def scoped_client(settings: Settings, **clients: Any) -> OnlyTheseJobs:
        """The real client of each target, its listings narrowed to this test's jobs
        (the clusters are shared: an unscoped first poll diffs thousands)."""
        scoped = OnlyTheseJobs(build_client(settings, **clients))
        scoped.ids = set(jobs.values())
        return scoped

    monkeypatch.setattr("slurm_trigger.tracker.build_client", scoped_client)  # build_tracker builds each target's
    finals: dict[str, dict[str, Any]] = {}
    mine: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_SECONDS
    scheduled = {"version": "0", "id": "e", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": "2026-12-01T10:00:00Z", "region": "us-east-1",
                 "resources": [], "detail": {}}
    while len(finals) < 2:
        answer = app.poll_jobs(scheduled, LambdaContext())  # the handler as Lambda calls it
        assert set(answer) == {"lab-old", "lab-new"}, answer  # one result per target
        for e in (e for batch in iter(published, []) for e in batch):
            if e["detail"].get("jobId") in jobs.values():
                mine.append(e)
            for name, job_id in jobs.items():
                if e["detail"].get("jobId") == job_id and e["detail"].get("cluster") == name \
                        and e["detail"].get("state") == "COMPLETED":
                    finals[name] = e
        seen_ids = [(e["detail"].get("cluster"), e["detail"].get("jobId"), e["detail"].get("state")) for e in mine]
        assert time.monotonic() < deadline, (jobs, answer, seen_ids)
        time.sleep(2)
    store = DynamoDBJobStore(boto3.client("dynamodb"), "targets-jobs")
    for name, job_id in jobs.items():
        assert store.get_jobs(name, [job_id])[job_id].final  # each under its own cluster's keys
        assert store.load_cursor(name).update_time
    assert {e["detail"]["cluster"] for e in finals.values()} == {"lab-old", "lab-new"}


def test_each_pipeline_submits_to_its_target(two: dict[str, SlurmTarget], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One object, two pipelines: one without ``target`` (the default cluster), one with
    ``target: lab-new``. Each job is in its own cluster, counted there, and its
    Submitted event names that cluster."""
    from slurm_trigger.idempotency import create_table as create_idempotency_table
    from slurm_trigger.s3events import ObjectRef
    from slurm_trigger.trigger import build_trigger

    job = {"script": "#!/bin/bash\ntrue\n", "partition": "debug", "working_directory": "/tmp",
           "standard_output": "/dev/null", "time_limit": 1}
    (tmp_path / "old.yaml").write_text(json.dumps({"name": "to-old", "match": {"prefix": "targets/"}, "job": job}))
    (tmp_path / "new.yaml").write_text(json.dumps({"name": "to-new", "target": "lab-new", "match": {"prefix": "targets/"}, "job": job}))
    monkeypatch.setenv("PIPELINES_PATH", str(tmp_path))
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "targets-idem")
    ddb = boto3.client("dynamodb")
    create_idempotency_table(ddb, "targets-idem")
    published = events_to_queue("targets-submitted")
    trigger = build_trigger(Settings.from_env(), dynamodb_client=ddb, events_client=boto3.client("events"))
    ref = ObjectRef("lab", f"targets/{uuid.uuid4().hex}.dat", version_id="v1")
    outcomes = {o.pipeline: o for o in trigger.handle(ref)}
    assert {p: o.status for p, o in outcomes.items()} == {"to-old": "submitted", "to-new": "submitted"}
    for pipeline, cluster in (("to-old", "lab-old"), ("to-new", "lab-new")):
        client = build_client(Settings.from_env().target(cluster))
        found = client.find_jobs_by_comment(outcomes[pipeline].idempotency_key)
        assert [j.job_id for j in found] == [outcomes[pipeline].job_id]  # in its own cluster, once
    events = {e["detail"]["source"]["pipeline"]: e["detail"] for batch in iter(published, []) for e in batch}
    assert events["to-old"]["cluster"] == "lab-old" and events["to-new"]["cluster"] == "lab-new"
    assert events["to-new"]["apiVersion"] == "v0.0.42" and events["to-old"]["apiVersion"] == "v0.0.38"
    # a pipeline naming a cluster nobody configured is refused when the trigger is built
    (tmp_path / "bad.yaml").write_text(json.dumps({"name": "to-nowhere", "target": "lab-gone", "match": {"prefix": "x/"}, "job": job}))
    with pytest.raises(ValueError, match="lab-gone"):
        build_trigger(Settings.from_env(), dynamodb_client=ddb, events_client=boto3.client("events"))
