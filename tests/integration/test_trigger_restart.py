"""slurmrestd goes away in the middle of a run and comes back: every object still ends
with exactly one job. One cluster only (the host's 22.05, v0.0.38) to keep it short;
slurmrestd is down for a few seconds, so other runs against that cluster may notice."""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path


from slurm_trigger.idempotency import idempotency_key
from slurm_trigger.trigger import build_trigger
from test_trigger import TRUE_PIPELINE, _clients, make_world, notification, obj  # noqa: I001 - same folder

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("SLURM_TRIGGER_STATE") or "/var/tmp/slurm-trigger")
PIDFILE = STATE / "host" / "slurmrestd.pid"


@dataclass
class HostTarget:
    """The host cluster as ``make_world`` needs it (see conftest.SlurmTarget)."""

    url: str
    user: str
    version: str = "v0.0.38"
    workdir: str = "/tmp/slurm-trigger-jobs"

    def token(self) -> str:
        return subprocess.run([str(REPO / "scripts" / "local-slurm"), "token", "host", "14400"],
                              check=True, capture_output=True, text=True).stdout.strip()

    def host_path(self, path: str) -> Path:
        return Path(path)


def listening(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def stop_slurmrestd() -> None:
    pid = int(PIDFILE.read_text().strip())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "slurmrestd"
    os.kill(pid, signal.SIGTERM)


def start_slurmrestd() -> None:
    subprocess.run([str(REPO / "scripts" / "local-slurm"), "start", "host"], check=True, capture_output=True, timeout=300)


def wait_for(predicate, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)


def test_slurmrestd_restart_mid_run(aws, slurm_clusters, tmp_path):
    host = slurm_clusters.get("host")
    assert host and "v0.0.38" in host["versions"], "the host cluster (v0.0.38) is needed"
    world = make_world(HostTarget(host["url"], host["user"]), tmp_path, TRUE_PIPELINE)
    # A submit that dies on a connection the old slurmrestd closed may have made its job:
    # its claim is held read timeout + settle (here 5 s), then the retry asks Slurm.
    world.trigger = build_trigger(replace(world.settings, read_timeout=3, submit_settle_seconds=2), **_clients())
    run = uuid.uuid4().hex[:8]
    refs = [obj(f"many/restart-{run}-{i}") for i in range(15)]
    retry: list = []  # what SQS would deliver again

    def deliver(ref) -> None:
        nonlocal retry
        try:
            world.trigger.handle_event(notification(ref))
        except Exception as exc:  # noqa: BLE001
            assert getattr(exc, "transient", False), exc
            retry.append(ref)

    for ref in refs[:5]:
        deliver(ref)
    assert retry == []
    try:
        # hold scripts/local-slurm's own lock while slurmrestd is down, so a concurrent
        # `local-slurm start` (another test run) waits instead of reviving it early
        with open(STATE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stop_slurmrestd()
            wait_for(lambda: not listening(host["url"]))
            for ref in refs[5:10]:
                deliver(ref)
        assert retry == refs[5:10]  # all transient, none lost, none reported as failed
    finally:
        start_slurmrestd()
    # the rest, the retries, then everything once more; what fails again (a pooled
    # connection that died with the old slurmrestd) is delivered again, as SQS would
    pending = refs[10:] + retry + refs
    limit = time.monotonic() + 60
    while pending and time.monotonic() < limit:
        retry = []
        for ref in pending:
            deliver(ref)
        pending = retry
        time.sleep(1)
    assert retry == []
    counts = [len(world.jobs_with(idempotency_key("trivial", r))) for r in refs]
    assert counts == [1] * len(refs)
    assert not any(e["detail-type"] == "Slurm Job Submission Failed" for e in world.events())
