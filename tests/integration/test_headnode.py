"""The head node kit (headnode/), for real on this machine.

The kit runs in its test mode (``--root``, ``--no-systemd``: see headnode_kit.py) against
the HOST cluster's slurmctld (Slurm 22.05): its own slurmrestd on a unix socket as its
own user, its own nginx serving TLS on a loopback port, a moto server for SSM, Secrets
Manager, EventBridge and SQS. The shared slurmctld and slurmrestd are never touched.
Jobs are counted in Slurm, by a comment unique to the run.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import urllib3

from slurm_trigger.idempotency import create_table
from slurm_trigger.jobevents import event_id
from slurm_trigger.jobstore import create_table as create_jobs_table
from slurm_trigger.settings import Settings
from slurm_trigger.slurm.client import build_client
from slurm_trigger.slurm.errors import SlurmAuthError, SlurmError, SlurmTLSError
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.tracker import build_tracker
from slurm_trigger.trigger import build_trigger
from headnode_kit import KitUnderTest, installed_kit, receive_all, scontrol_job  # sibling helper module

pytestmark = pytest.mark.real_slurm
WORKDIR = "/tmp/slurm-trigger-jobs"
PIPELINE = f"""
name: hn
match: {{prefix: "hn/"}}
job:
  script: "#!/bin/bash\\ntrue\\n"
  partition: debug
  working_directory: {WORKDIR}
  standard_output: /dev/null
  environment: {{PATH: /usr/bin:/bin}}
  time_limit: 1
"""


@pytest.fixture(scope="module")
def kit(slurm_clusters: dict[str, Any]) -> Iterator[KitUnderTest]:
    if "host" not in slurm_clusters:
        pytest.fail("the host cluster (Slurm 22.05) is needed")
    with installed_kit() as kit:
        yield kit


def settings(kit: KitUnderTest, **extra: Any) -> Settings:
    base: dict[str, Any] = dict(
        cluster_name=kit.cluster, slurm_url=kit.url, slurm_user=kit.service_user,
        ca_parameter=kit.parameter, token_secret=kit.secret, token_cache_seconds=5, read_timeout=10,
    )
    return Settings(**{**base, **extra})


def client_for(kit: KitUnderTest, **extra: Any) -> Any:
    return build_client(settings(kit, **extra), secrets_client=kit.client("secretsmanager"), ssm_client=kit.client("ssm"))


def tracker_for(kit: KitUnderTest, table: str) -> Any:
    return build_tracker(settings(kit, jobs_table=table, event_bus=kit.bus), dynamodb_client=kit.client("dynamodb"),
                         events_client=kit.client("events"), secrets_client=kit.client("secretsmanager"),
                         ssm_client=kit.client("ssm"))


def submission(tag: str, script: str = "#!/bin/bash\ntrue\n", comment: str | None = None) -> JobSubmission:
    return JobSubmission(script=script, environment={"PATH": "/usr/bin:/bin"}, name=f"hn-{tag}", partition="debug",
                         working_directory=WORKDIR, standard_output="/dev/null", time_limit=1, comment=comment or tag)


class Handshakes:
    """Counts TLS connections opened by urllib3 (a retry storm shows as many)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = urllib3.connection.HTTPSConnection.connect

        def connect(conn: Any) -> None:
            self.count += 1
            original(conn)

        monkeypatch.setattr(urllib3.connection.HTTPSConnection, "connect", connect)


def self_signed(days: tuple[int, int] = (-1, 30), ip: str = "127.0.0.1") -> tuple[str, str]:
    """A certificate (PEM) and key (PEM) valid from ``days[0]`` to ``days[1]`` days from now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0] - 1))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


# ----------------------------------------------------------------------------- TLS
def test_client_trusts_the_kit_through_the_pem_published_in_ssm(kit: KitUnderTest) -> None:
    pem = kit.published_pem()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert (kit.tls / "cert.pem").read_text() in pem  # what nginx serves is what SSM holds
    client = client_for(kit)
    assert client.ping()["pings"]
    tag = f"hn-tls-{uuid.uuid4().hex[:8]}"
    job = client.submit(submission(tag))
    assert [j.job_id for j in client.find_jobs_by_comment(tag)] == [job.job_id]
    assert scontrol_job(job.job_id)["UserId"].startswith(f"{kit.service_user}(")


def test_the_certificate_names_the_private_ip_and_dns_name(kit: KitUnderTest) -> None:
    san = subprocess.run(["openssl", "x509", "-in", str(kit.tls / "cert.pem"), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    assert f"IP Address:{kit.ip}" in san and f"DNS:{kit.dns}" in san
    assert oct((kit.tls / "key.pem").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("case", ["another certificate", "wrong hostname"])
def test_tls_failures_are_clear_and_not_retried(kit: KitUnderTest, case: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "another certificate":
        other = tmp_path / "other.pem"
        other.write_text(self_signed()[0])
        client, expected = client_for(kit, ca_parameter=None, ca_bundle=str(other)), "self-signed certificate"
    else:  # the right certificate, reached by a name it does not carry
        client = client_for(kit, slurm_url=f"https://localhost:{kit.port}")
        expected = "Hostname mismatch"
    handshakes = Handshakes(monkeypatch)
    with pytest.raises(SlurmTLSError, match=f"TLS verification of the head node failed.*{expected}") as exc:
        client.ping()
    assert exc.value.transient and not exc.value.maybe_submitted
    # retries=3 with backoff used to make this 4 handshakes and ~3 s; the published PEM
    # is read once more (unchanged), so no second handshake either
    assert handshakes.count == 1
    with pytest.raises(SlurmTLSError):  # a submit fails the same way, and says nothing was sent
        client.submit(submission("never"))


def test_expired_certificate_fails_then_renew_publishes_before_serving(kit: KitUnderTest,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """nginx made to serve an expired certificate (trusted, published): a clear error
    at the first handshake. ``renew-cert`` then publishes a new one before nginx
    serves it, and a warm client that trusts the old PEM follows on its own."""
    cert, key = self_signed(days=(-30, -1))
    saved = {n: (kit.tls / n).read_bytes() for n in ("cert.pem", "key.pem")}
    (kit.tls / "cert.pem").write_text(cert)
    (kit.tls / "key.pem").write_text(key)
    kit.client("ssm").put_parameter(Name=kit.parameter, Value=cert, Type="String", Overwrite=True)
    kit.nginx_reload()
    try:
        warm = client_for(kit)  # reads the (expired) PEM now, like a container warm before the renewal
        handshakes = Handshakes(monkeypatch)
        with pytest.raises(SlurmTLSError, match="certificate has expired"):
            warm.ping()
        assert handshakes.count == 1
        renewed = kit.run("renew-cert")
        assert "changed: certificate published" in renewed.stderr
        assert renewed.stderr.index("certificate published") < renewed.stderr.index("changed: certificate for")
        assert (kit.tls / "cert.pem").read_text() in kit.published_pem()
        assert warm.ping()["pings"]  # verify failed -> PEM read again -> trusted, one retry
        assert kit.run("renew-cert").stdout.strip() == "0 changes"
    finally:
        if (kit.tls / "cert.pem").read_text() == cert:  # renew failed: put the kit's own back
            for n, data in saved.items():
                (kit.tls / n).write_bytes(data)
            kit.nginx_reload()


def test_forced_renewal_publishes_new_and_old_then_serves_new(kit: KitUnderTest) -> None:
    """A rotation while the old certificate is still good: the parameter holds both
    (so a client that read it in between trusts whichever nginx serves), then nginx
    serves the new one; a client warm since before follows by reading it again."""
    before = (kit.tls / "cert.pem").read_text()
    warm = client_for(kit)
    assert warm.ping()["pings"]
    kit.run("renew-cert", "--force")
    after = (kit.tls / "cert.pem").read_text()
    assert after != before
    published = kit.published_pem()
    assert after in published and before in published and published.index(after) < published.index(before)
    assert client_for(kit).ping()["pings"]
    assert warm.ping()["pings"]


# ----------------------------------------------------------------------------- identity
def test_service_user_cannot_act_as_root(kit: KitUnderTest) -> None:
    client = client_for(kit)
    headers = {"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": kit.token(), "Content-Type": "application/json"}
    body = client.submit_body(submission("as-root"))
    ca = kit.tls / "cert.pem"
    # its token with another user's name: refused (22.05 answers 500)
    resp = requests.post(f"{kit.url}/slurm/{client.version}/job/submit", json=body, headers=headers, verify=str(ca), timeout=10)
    assert resp.status_code >= 400
    tag = f"hn-root-{uuid.uuid4().hex[:8]}"
    root_job = int(subprocess.run(["sbatch", "--parsable", "-J", tag, "-o", "/dev/null", "--wrap", "sleep 30"],
                                  capture_output=True, text=True, check=True, cwd=WORKDIR).stdout.split(";")[0])
    try:
        with pytest.raises(SlurmError):
            client.cancel_job(root_job)  # someone else's job
        assert scontrol_job(root_job)["JobState"] in ("PENDING", "RUNNING")
    finally:
        subprocess.run(["scancel", str(root_job)], check=False)
    # and what it submits runs as itself, never as root
    mine = client.submit(submission(f"hn-mine-{uuid.uuid4().hex[:8]}"))
    assert scontrol_job(mine.job_id)["UserId"].split("(")[0] == kit.service_user


# ----------------------------------------------------------------------------- rotation
def test_burst_through_the_trigger_keeps_going_across_token_rotations(kit: KitUnderTest, tmp_path: Path) -> None:
    """Tokens of 15 s, rotated every 10 s (lifespan = 1.5 x interval), while 30 objects
    go through the trigger over ~20 s: every object becomes one job, the token the
    burst started with has expired by the end, and nothing failed."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "hn.yaml").write_text(PIPELINE)
    table = f"hn-idem-{uuid.uuid4().hex[:6]}"
    create_table(kit.client("dynamodb"), table)
    rotate = ("rotate-token", "--token-interval", "10", "--token-lifespan", "15")
    kit.run(*rotate)
    first = kit.token()
    s = settings(kit, pipelines_path=str(tmp_path / "pipelines"), idempotency_table=table, event_bus=kit.bus)
    trigger = build_trigger(s, dynamodb_client=kit.client("dynamodb"), events_client=kit.client("events"),
                            secrets_client=kit.client("secretsmanager"), ssm_client=kit.client("ssm"))
    run = uuid.uuid4().hex[:10]
    outcomes, rotations, began = [], 1, time.monotonic()
    for i in range(30):
        if time.monotonic() - began >= 10 * rotations:
            kit.run(*rotate)  # what slurm-trigger-token.timer does every interval
            rotations += 1
        outcomes += trigger.handle_event(notification(f"hn/{run}/obj-{i}.txt"))
        time.sleep(max(0.0, began + (i + 1) * 0.7 - time.monotonic()))
    assert rotations >= 2
    assert [o.status for o in outcomes] == ["submitted"] * 30, [o.to_dict() for o in outcomes if o.status != "submitted"]
    assert len({j.job_id for j in trigger.client.find_jobs_by_comment(run)}) == 30  # counted in Slurm
    stale = client_for(kit, token=first)
    with pytest.raises(SlurmAuthError):
        stale.list_jobs()  # the first token did expire during the burst


def notification(key: str) -> dict[str, Any]:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-01T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "bkt", "arn": "arn:aws:s3:::bkt"},
               "object": {"key": key, "size": 3, "eTag": "e1", "versionId": uuid.uuid4().hex, "sequencer": "00A1"}},
    }]}


# ----------------------------------------------------------------------------- push
def test_hook_pushes_the_same_event_ids_as_the_tracker(kit: KitUnderTest, tmp_path: Path) -> None:
    """A real job of the service user; the hook run as slurmctld runs it (SlurmUser, its
    variables) at the start and at the end; the tracker polls beside it. Both give each
    change the same eventId; the pushed ones reach the bus (rule -> SQS) first."""
    from slurm_trigger import provenance
    from slurm_trigger.provenance import Source

    table = f"hn-jobs-{uuid.uuid4().hex[:6]}"
    create_jobs_table(kit.client("dynamodb"), table)
    tracker = tracker_for(kit, table)
    client = tracker.client
    run = uuid.uuid4().hex[:10]
    src = Source(bucket="bkt", key=f"hn/{run}/hook.txt", pipeline="hn", version_id="v1")
    receive_all(kit.sqs, kit.queue)
    job = client.submit(submission(run, script="#!/bin/bash\nsleep 3\nexit 3\n", comment=provenance.encode(src)))
    while scontrol_job(job.job_id)["JobState"] == "PENDING":
        time.sleep(0.02)
    assert kit.run_hook(kit.hook_env(job.job_id, "prolog")).returncode == 0
    tracker.poll(sweep=True)  # sees it RUNNING
    while scontrol_job(job.job_id)["JobState"] not in ("FAILED", "COMPLETED"):
        time.sleep(0.05)
    assert kit.run_hook(kit.hook_env(job.job_id, "jobcomp")).returncode == 0
    tracker.poll(sweep=True)
    events = [e for e in receive_all(kit.sqs, kit.queue, wait=10)
              if e["detail"]["jobId"] == job.job_id]
    ids: dict[str, set[str]] = {}
    for e in events:
        ids.setdefault(e["detail"]["state"], set()).add(e["detail"]["eventId"])
    assert set(ids) == {"RUNNING", "FAILED"}
    assert all(len(v) == 1 for v in ids.values()), ids  # one id per change, whoever published it
    assert len(events) == 4  # two pushed + two polled
    submitted_at = events[0]["detail"]["submittedAt"]
    assert ids["FAILED"] == {event_id(kit.cluster, job.job_id, "FAILED", submitted_at)}
    final = [e["detail"] for e in events if e["detail"]["state"] == "FAILED"]
    assert all(d["exitCode"] == 3 and d["source"]["key"] == src.key for d in final)
    assert all(e["resources"] == [f"slurm:{kit.cluster}:job/{job.job_id}", src.object_arn] for e in events)
    pushed = [e["detail"] for e in events if e["detail"]["previousState"] in ("PENDING", "RUNNING")
              and (e["detail"]["state"], e["detail"]["previousState"]) in {("RUNNING", "PENDING"), ("FAILED", "RUNNING")}]
    assert len(pushed) >= 2  # the hook says where the job came from; a poll may not know


def test_hook_and_tracker_agree_on_each_task_of_an_array(kit: KitUnderTest) -> None:
    """A real two-task array of a step: for each task the hook's detail (jobcomp, as
    slurmctld runs it) is the tracker's, array, task and step included; the last task
    has the array's id, for which scontrol prints every task."""
    from slurm_trigger import provenance
    from slurm_trigger.provenance import Source

    table = f"hn-jobs-{uuid.uuid4().hex[:6]}"
    create_jobs_table(kit.client("dynamodb"), table)
    tracker = tracker_for(kit, table)
    client = tracker.client
    receive_all(kit.sqs, kit.queue)
    run = uuid.uuid4().hex[:10]
    src = Source(bucket="bkt", key=f"hn/{run}/array", pipeline="hn", version_id="v1", step="align")
    sub = submission(run, script="#!/bin/bash\nexit 0\n", comment=provenance.encode(src))
    sub.array = "0-1"
    array_id = client.submit(sub).job_id
    deadline = time.monotonic() + 60
    while True:
        tracker.poll(sweep=True)
        tasks = [j for j in tracker.store.list_jobs(kit.cluster) if j.array_job_id == array_id]
        if len(tasks) == 2 and all(j.final for j in tasks):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.5)
    assert sorted(j.array_task_id for j in tasks) == [0, 1] and array_id in {j.job_id for j in tasks}
    for job in tasks:
        assert kit.run_hook(kit.hook_env(job.job_id, "jobcomp")).returncode == 0
    ids = {j.job_id for j in tasks}
    copies: dict[str, list[dict[str, Any]]] = {}
    wait_until = time.monotonic() + 30
    while sum(len(v) for v in copies.values()) < 4 and time.monotonic() < wait_until:  # 2 pushed + 2 polled
        for e in receive_all(kit.sqs, kit.queue, wait=2):
            if e["detail"]["jobId"] in ids and e["detail"]["state"] == "COMPLETED":
                copies.setdefault(e["detail"]["eventId"], []).append(e["detail"])
    assert len(copies) == 2 and all(len(v) == 2 for v in copies.values()), copies  # one id per task, from both
    same = ("jobId", "arrayJobId", "arrayTaskId", "source", "exitCode", "jobName", "submittedAt", "endedAt")
    for pushed, polled in copies.values():
        assert {k: pushed[k] for k in same} == {k: polled[k] for k in same}
        task = next(j for j in tasks if j.job_id == pushed["jobId"])
        assert (pushed["arrayJobId"], pushed["arrayTaskId"], pushed["source"]["step"]) == (array_id, task.array_task_id, "align")


def test_hook_ignores_other_jobs_and_never_fails(kit: KitUnderTest) -> None:
    tag = f"hn-foreign-{uuid.uuid4().hex[:8]}"
    foreign = int(subprocess.run(["sbatch", "--parsable", "-J", tag, "-o", "/dev/null", "--wrap", "true"],
                                 capture_output=True, text=True, check=True, cwd=WORKDIR).stdout.split(";")[0])
    before = set(os.listdir(kit.spool))
    assert kit.run_hook(kit.hook_env(foreign, "prolog")).returncode == 0
    assert set(os.listdir(kit.spool)) == before  # not slurm-trigger's: nothing spooled
    broken = kit.run_hook({"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": "999999999",
                           "SLURM_JOB_COMMENT": "slurm-trigger:{}"})
    assert broken.returncode == 0 and "not pushed" in broken.stderr  # scontrol failed: reported, exit 0


# ----------------------------------------------------------------------------- the kit itself
def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith(("var/lib/slurm-trigger/", "run/", "opt/slurm-trigger/venv", "var/spool")) or path.is_socket():
            continue
        st = path.lstat()
        data = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[rel] = f"{oct(st.st_mode)} {st.st_uid}:{st.st_gid} {st.st_mtime_ns} {data}"
    return out


def secret_version_ids(kit: KitUnderTest) -> list[str]:
    return [v["VersionId"] for v in kit.client("secretsmanager").list_secret_version_ids(SecretId=kit.secret)["Versions"]]


def test_running_the_kit_twice_changes_nothing(kit: KitUnderTest) -> None:
    before = tree_digest(kit.root)
    ssm_version = kit.client("ssm").get_parameter(Name=kit.parameter)["Parameter"]["Version"]
    secret_versions = secret_version_ids(kit)
    pids = {n: (kit.root / f"run/slurm-trigger/{n}.pid").read_text() for n in ("slurmrestd", "nginx", "push")}
    assert kit.install() == 0
    assert tree_digest(kit.root) == before
    assert kit.client("ssm").get_parameter(Name=kit.parameter)["Parameter"]["Version"] == ssm_version
    assert secret_version_ids(kit) == secret_versions
    assert {n: (kit.root / f"run/slurm-trigger/{n}.pid").read_text() for n in pids} == pids  # nothing restarted


def test_files_modes_and_owners(kit: KitUnderTest) -> None:
    sock_dir = kit.root / "run/slurm-trigger-rest"
    sock = sock_dir / "slurmrestd.socket"
    assert oct(sock_dir.stat().st_mode & 0o777) == "0o750" and oct(sock.stat().st_mode & 0o777) == "0o660"
    assert sock.owner() == kit.rest_user
    rest_pid = (kit.root / "run/slurm-trigger/slurmrestd.pid").read_text().strip()
    assert Path(f"/proc/{rest_pid}/status").read_text().count(f"Uid:\t{_uid(kit.rest_user)}") == 1
    spool = kit.spool.stat()
    assert oct(spool.st_mode & 0o7777) == "0o2770" and kit.spool.owner() == "slurm"
    conf = (kit.root / "etc/slurm/slurm_trigger.conf").read_text()
    assert f"PrologSlurmctld={kit.root}/opt/slurm-trigger/bin/slurm-trigger-hook" in conf
    assert "JobCompType=jobcomp/script" in conf
    assert "AuthAltTypes" not in conf  # the host has JWT already: its key is reused, not replaced


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_systemd_units_verify(kit: KitUnderTest, tmp_path: Path) -> None:
    units = sorted((kit.root / "etc/systemd/system").glob("slurm-trigger-*"))
    assert {u.name for u in units} >= {"slurm-trigger-slurmrestd.service", "slurm-trigger-token.service",
                                       "slurm-trigger-token.timer", "slurm-trigger-cert.service",
                                       "slurm-trigger-cert.timer", "slurm-trigger-push.service"}
    done = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    broken = tmp_path / "broken.service"  # the check does catch a bad unit
    broken.write_text("[Service]\nExecStart=/nonexistent/bin/x\nUser=\n")
    assert subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True).returncode != 0


def test_zz_uninstall_removes_the_secret_and_the_parameter(kit: KitUnderTest) -> None:
    kit.run("uninstall")
    ssm, sm = kit.client("ssm"), kit.client("secretsmanager")
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=kit.parameter)
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.describe_secret(SecretId=kit.secret)
    assert not (kit.root / "etc/systemd/system/slurm-trigger-slurmrestd.service").exists()
    assert not (kit.root / "etc/slurm/slurm_trigger.conf").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(kit.url, verify=False, timeout=3)
