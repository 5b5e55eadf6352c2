"""The head node kit in its test mode, on this machine (for tests and benches).

``KitUnderTest`` runs ``headnode/slurm-trigger-headnode`` with ``--root`` (every file
under a directory of its own, slurm.conf never touched, slurmctld never restarted) and
``--no-systemd`` (slurmrestd, nginx and the pusher as plain processes), against the HOST
cluster's slurmctld and a moto server (SSM, Secrets Manager, EventBridge, SQS). The
kit's slurmrestd is a second one, on its own unix socket, as its own user; the shared
one on 127.0.0.1:6820 is left alone. Users get an ``sttest-`` prefix.

``run_hook`` runs the installed hook exactly as slurmctld would: as SlurmUser, with an
environment of only the variables slurmctld sets (no PATH), for the real job it names.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import boto3

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "headnode" / "slurm-trigger-headnode"
REGION = "us-east-1"
SLURM_USER = "slurm"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class KitUnderTest:
    endpoint: str  # the moto server
    cluster: str = "hn-test"
    service_user: str = "sttest-svc"
    service_uid: int = 2951
    rest_user: str = "sttest-rest"
    push_user: str = "sttest-push"
    dns: str = "st-headnode.test"
    ip: str = "127.0.0.1"
    token_interval: int = 1200
    token_lifespan: int = 2400
    port: int = field(default_factory=free_port)
    bus: str = field(default_factory=lambda: f"st-bus-{uuid.uuid4().hex[:8]}")
    # under /var/tmp: SlurmUser and the kit's users must be able to traverse it
    root: Path = field(default_factory=lambda: Path(f"/var/tmp/st-headnode-{uuid.uuid4().hex[:8]}"))
    queue: str = ""  # SQS queue behind a rule for every event of the bus (prepare_bus)
    # --hook-dir: where scripts/local-slurm's wrapper (the host's PrologSlurmctld and
    # JobCompLoc) finds the hooks slurmctld runs; empty: slurmctld never calls this kit
    hook_dir: str = ""

    @property
    def parameter(self) -> str:
        return f"/slurm-trigger/{self.cluster}/ca.pem"

    @property
    def secret(self) -> str:
        return f"slurm_token_{self.cluster}"

    @property
    def url(self) -> str:
        return f"https://{self.ip}:{self.port}"

    @property
    def tls(self) -> Path:
        return self.root / "etc/slurm-trigger/tls"

    @property
    def spool(self) -> Path:
        return self.root / "var/spool/slurm-trigger/events"

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def env(self) -> dict[str, str]:
        return {**os.environ, **FAKE_AWS}

    def args(self) -> list[str]:
        return [
            "--root", str(self.root), "--no-systemd", "--aws-endpoint", self.endpoint,
            "--cluster-name", self.cluster, "--region", REGION,
            "--service-user", self.service_user, "--service-uid", str(self.service_uid),
            "--rest-user", self.rest_user, "--push-user", self.push_user,
            "--port", str(self.port), "--listen", "127.0.0.1", "--ip", self.ip, "--dns", self.dns,
            "--event-bus", self.bus,
            "--token-interval", str(self.token_interval), "--token-lifespan", str(self.token_lifespan),
            *(["--hook-dir", self.hook_dir] if self.hook_dir else []),
        ]

    def run(self, command: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(KIT), command, *(self.args() if command == "install" else ["--root", str(self.root)]), *extra]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"{command} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def install(self) -> int:
        """Runs the kit; returns how many changes it reported."""
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        done = self.run("install")
        return int(re.search(r"^(\d+) changes$", done.stdout, re.M).group(1))

    def prepare_bus(self) -> str:
        """The bus and a rule sending its every event to an SQS queue; returns the queue URL."""
        events, sqs = self.client("events"), self.client("sqs")
        events.create_event_bus(Name=self.bus)
        queue = sqs.create_queue(QueueName=f"{self.bus}-q")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="all", EventBusName=self.bus, EventPattern=json.dumps({"source": ["slurm-trigger"]}))
        events.put_targets(Rule="all", EventBusName=self.bus, Targets=[{"Id": "q", "Arn": arn}])
        self.queue = queue
        return queue

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    def published_pem(self) -> str:
        return self.client("ssm").get_parameter(Name=self.parameter)["Parameter"]["Value"]

    def token(self) -> str:
        return json.loads(self.client("secretsmanager").get_secret_value(SecretId=self.secret)["SecretString"])["token"]

    def nginx_reload(self) -> None:
        subprocess.run(["nginx", "-c", str(self.root / "etc/slurm-trigger/nginx.conf"), "-s", "reload"], check=True)
        time.sleep(0.5)  # the old worker finishes, the new one serves

    def uninstall(self) -> None:
        self.run("uninstall", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ the hook
    def hook_env(self, job_id: int, context: str) -> dict[str, str]:
        """What slurmctld puts in the environment of PrologSlurmctld (``prolog``) or of
        the jobcomp/script program (``jobcomp``) for this job."""
        info = scontrol_job(job_id)
        if context == "prolog":
            return {
                "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": str(job_id),
                "SLURM_JOB_COMMENT": info.get("Comment", ""), "SLURM_JOB_NAME": info.get("JobName", ""),
                "SLURM_JOB_USER": info["UserId"].split("(")[0], "SLURM_JOB_PARTITION": info.get("Partition", ""),
                "SLURM_JOB_START_TIME": str(epoch(info.get("StartTime")) or int(time.time())),
                "SLURM_CLUSTER_NAME": "local", "SLURM_JOB_UID": info["UserId"].split("(")[1].rstrip(")"),
            }
        return {
            "JOBID": str(job_id), "JOBSTATE": info["JobState"], "SUBMIT": str(epoch(info.get("SubmitTime"))),
            "START": str(epoch(info.get("StartTime")) or 0), "END": str(epoch(info.get("EndTime")) or int(time.time())),
            "JOBNAME": info.get("JobName", ""), "PARTITION": info.get("Partition", ""),
            "USERNAME": info["UserId"].split("(")[0], "UID": info["UserId"].split("(")[1].rstrip(")"),
        }

    def run_hook(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """The hook as slurmctld runs it: SlurmUser, only slurmctld's variables."""
        hook = self.root / "opt/slurm-trigger/bin/slurm-trigger-hook"
        argv = ["setpriv", f"--reuid={SLURM_USER}", f"--regid={SLURM_USER}", "--init-groups",
                "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()], str(hook)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")


def scontrol_job(job_id: int) -> dict[str, str]:
    lines = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                           check=True, env={**os.environ, "TZ": "UTC"}).stdout.strip().splitlines()
    out = next((line for line in lines if line.startswith(f"JobId={job_id} ")), lines[0])  # an array's id: a line per task
    fields: dict[str, str] = {}
    for part in re.split(r" (?=[A-Za-z][A-Za-z0-9_:/]*=)", out):
        key, _, value = part.partition("=")
        fields.setdefault(key, value)
    return fields


def epoch(value: str | None) -> int | None:
    if not value or value in ("Unknown", "None"):
        return None
    return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def receive_all(sqs: Any, queue: str, wait: float = 0.0) -> list[dict[str, Any]]:
    """Every message the queue holds now (waiting up to ``wait`` s for the first)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        out += [json.loads(m["Body"]) for m in got]
        for m in got:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        if not got and (out or time.monotonic() >= deadline):
            return out
        if not got:
            time.sleep(0.02)


def moto_server() -> tuple[Any, str]:
    """moto in server mode on a free loopback port: the kit's processes reach it by HTTP."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


@contextmanager
def installed_kit(**fields: Any) -> Iterator[KitUnderTest]:
    """A kit installed against its own moto server and bus (rule -> SQS); uninstalled after."""
    server, endpoint = moto_server()
    kit = KitUnderTest(endpoint, **fields)
    kit.prepare_bus()
    try:
        kit.install()
        yield kit
    finally:
        kit.uninstall()
        server.stop()
