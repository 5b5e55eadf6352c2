"""Pushed state changes for real: the HOST cluster's slurmctld calls the head node kit's hook.

``scripts/local-slurm`` makes every local cluster's ``PrologSlurmctld`` and ``JobCompLoc``
(``jobcomp/script``) a wrapper that runs the hooks linked in
``/etc/slurm/slurm-trigger-hook.d`` and exits 0 at once when there are none. The kit
(test mode, see headnode_kit.py) links its hook there with ``--hook-dir``. Then a job
of the kit's service user, submitted through the kit's TLS endpoint, makes slurmctld
itself run the hook when the job starts and when it ends; the kit's pusher puts the
entries on a moto EventBridge bus, read back through a rule with an SQS target, beside
the tracker polling the same job. Without the link nothing is spooled and jobs run as
before. Jobs are scoped by their id; other tests' kits may be linked at the same time.
"""
from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from slurm_trigger import provenance
from slurm_trigger.jobevents import POLLED, PUSHED, event_id
from slurm_trigger.jobstore import create_table as create_jobs_table
from slurm_trigger.provenance import Source
from slurm_trigger.settings import Settings
from slurm_trigger.slurm.client import build_client
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.tracker import build_tracker
from headnode_kit import KitUnderTest, installed_kit, receive_all, scontrol_job  # sibling helper module

pytestmark = pytest.mark.real_slurm
WRAPPER = "/etc/slurm/slurm-trigger-hook"
HOOK_DIR = Path(f"{WRAPPER}.d")
WORKDIR = "/tmp/slurm-trigger-jobs"


def host_config() -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    pairs = (line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(scope="module")
def kit(slurm_clusters: dict[str, Any]) -> Iterator[KitUnderTest]:
    if "host" not in slurm_clusters:
        pytest.fail("the host cluster (Slurm 22.05) is needed")
    conf = host_config()
    if (conf.get("PrologSlurmctld"), conf.get("JobCompType"), conf.get("JobCompLoc")) != (
            WRAPPER, "jobcomp/script", WRAPPER) or not HOOK_DIR.is_dir():
        pytest.fail(f"the host's slurmctld does not run {WRAPPER} (run scripts/local-slurm start host): "
                    f"PrologSlurmctld={conf.get('PrologSlurmctld')} JobCompType={conf.get('JobCompType')}")
    # users of their own: test_headnode's kit may be installed (and uninstalled) meanwhile
    with installed_kit(cluster=f"hn-push-{uuid.uuid4().hex[:6]}", service_user="sttest-psvc", service_uid=2953,
                       rest_user="sttest-prest", push_user="sttest-ppush") as kit:
        yield kit


def client_for(kit: KitUnderTest) -> Any:
    s = Settings(cluster_name=kit.cluster, slurm_url=kit.url, slurm_user=kit.service_user, ca_parameter=kit.parameter,
                 token_secret=kit.secret, token_cache_seconds=60, read_timeout=30)
    return build_client(s, secrets_client=kit.client("secretsmanager"), ssm_client=kit.client("ssm"))


def submit(client: Any, run: str, script: str) -> tuple[int, Source]:
    """A job as the trigger makes it: its comment carries the object it came from."""
    src = Source(bucket="bkt", key=f"hn/{run}/push.txt", pipeline="hn", version_id="v1")
    job = client.submit(JobSubmission(
        script=script, environment={"PATH": "/usr/bin:/bin"}, name=f"hn-push-{run}", partition="debug",
        working_directory=WORKDIR, standard_output="/dev/null", time_limit=1, comment=provenance.encode(src)))
    return job.job_id, src


def wait_final(job_id: int, limit: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + limit
    while True:
        info = scontrol_job(job_id)
        if info["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


def spooled(kit: KitUnderTest) -> list[str]:
    return sorted(p.name for p in kit.spool.iterdir()) if kit.spool.exists() else []


def test_without_the_hook_linked_nothing_is_spooled_and_jobs_run_normally(kit: KitUnderTest) -> None:
    assert not (HOOK_DIR / kit.root.name).exists()
    run = uuid.uuid4().hex[:10]
    receive_all(kit.sqs, kit.queue)
    job_id, _ = submit(client_for(kit), run, "#!/bin/bash\nexit 0\n")
    info = wait_final(job_id)
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "0", "0:0")  # not held, not requeued
    time.sleep(2)  # what the pusher would have put by now (it sends within 0.1 s)
    assert spooled(kit) == []
    assert [e for e in receive_all(kit.sqs, kit.queue, wait=1) if e["detail"]["jobId"] == job_id] == []


def test_slurmctld_pushes_each_change_with_the_trackers_event_id(kit: KitUnderTest) -> None:
    """PrologSlurmctld pushes PENDING -> RUNNING, jobcomp/script the end (FAILED, exit 3);
    the tracker polling beside gives the changes it sees the same eventIds; a consumer
    dropping repeats by eventId sees each change once."""
    kit.hook_dir = str(HOOK_DIR)
    assert kit.install() > 0  # the link (and the pusher restarted with its settings)
    assert (HOOK_DIR / kit.root.name).resolve() == kit.root / "opt/slurm-trigger/bin/slurm-trigger-hook"
    assert kit.install() == 0
    table = f"hn-push-jobs-{uuid.uuid4().hex[:6]}"
    create_jobs_table(kit.client("dynamodb"), table)
    s = Settings(cluster_name=kit.cluster, slurm_url=kit.url, slurm_user=kit.service_user,
                 ca_parameter=kit.parameter, token_secret=kit.secret, token_cache_seconds=60, jobs_table=table,
                 event_bus=kit.bus, read_timeout=30)
    tracker = build_tracker(s, dynamodb_client=kit.client("dynamodb"), events_client=kit.client("events"),
                            secrets_client=kit.client("secretsmanager"), ssm_client=kit.client("ssm"))
    client = tracker.client
    receive_all(kit.sqs, kit.queue)
    run = uuid.uuid4().hex[:10]
    job_id, src = submit(client, run, "#!/bin/bash\nsleep 3\nexit 3\n")
    events: list[dict[str, Any]] = []

    def mine() -> list[dict[str, Any]]:
        events.extend(e for e in receive_all(kit.sqs, kit.queue) if e["detail"]["jobId"] == job_id)
        return events

    deadline = time.monotonic() + 60
    while not any(e["detail"]["state"] == "RUNNING" and e["detail"]["publishedBy"] == PUSHED for e in mine()):
        assert time.monotonic() < deadline, events
        time.sleep(0.1)
    tracker.poll(sweep=True)  # sees it RUNNING (or already ended)
    info = wait_final(job_id)
    assert (info["JobState"], info["Restarts"]) == ("FAILED", "0")
    while not any(e["detail"]["state"] == "FAILED" and e["detail"]["publishedBy"] == PUSHED for e in mine()):
        assert time.monotonic() < deadline + 60, events
        time.sleep(0.1)
    tracker.poll(sweep=True)
    time.sleep(1)
    mine()
    pushed = [e["detail"] for e in events if e["detail"]["publishedBy"] == PUSHED]
    polled = [e["detail"] for e in events if e["detail"]["publishedBy"] == POLLED]
    assert [(d["previousState"], d["state"]) for d in pushed] == [("PENDING", "RUNNING"), ("RUNNING", "FAILED")]
    submitted_at = pushed[0]["submittedAt"]
    for d in pushed:
        assert d["eventId"] == event_id(kit.cluster, job_id, d["state"], submitted_at)
        assert d["source"]["key"] == src.key and d["user"] == kit.service_user
    assert pushed[1]["exitCode"] == 3 and pushed[1]["endedAt"]
    assert "FAILED" in {d["state"] for d in polled}  # the poll reconciles the end too
    ids: dict[str, set[str]] = {}
    for d in pushed + polled:
        ids.setdefault(d["state"], set()).add(d["eventId"])
    assert all(len(v) == 1 for v in ids.values()), ids  # one id per change, whichever path published it
    assert all(e["resources"] == [f"slurm:{kit.cluster}:job/{job_id}", src.object_arn] for e in events)
    assert spooled(kit) == []  # the pusher took everything


def test_uninstall_unlinks_the_hook(kit: KitUnderTest) -> None:
    link = HOOK_DIR / kit.root.name
    assert link.is_symlink()
    kit.run("uninstall")
    assert not link.exists() and not link.is_symlink()
    cmd = "sbatch --parsable -o /dev/null --wrap true"
    job_id = int(subprocess.run(cmd.split(), capture_output=True, text=True, check=True, cwd=WORKDIR).stdout.split(";")[0])
    assert wait_final(job_id)["JobState"] == "COMPLETED"
