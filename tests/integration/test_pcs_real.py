"""The AWS PCS target against a real slurmrestd configured the way PCS is used: plain
HTTP, ``Authorization: Bearer`` only (no user-name header), tokens minted here from
the cluster's signing key, which sits base64-encoded in a Secrets Manager secret
(moto) that PCS's GetCluster names (botocore's Stubber: moto 5.2.5 has no PCS).
The cluster is the local 26.05 one when it runs (the nearest to PCS's 25.05/25.11),
else 24.11: both read Bearer tokens; 22.05 does not. The client, the CLI and the
trigger each make a job; jobs are counted in Slurm by their comment."""
from __future__ import annotations

import base64
import json
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
import requests
from conftest import SlurmTarget, in_ci, not_available, read_clusters
from event_queue import events_to_queue
from pcs_stub import cluster_answer, stubbed_pcs
from test_client_real import submission, wait_final

from slurm_trigger_cli import main
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client, client as client_module, pcs
from slurm_trigger.slurm.minting import MintedToken

pytestmark = pytest.mark.real_slurm
PCS_ID = "pcs_4ahbm6fbzy"
PREFERRED = ("forky", "chroot")  # 26.05, then 24.11


@dataclass
class PcsWorld:
    target: SlurmTarget
    env: dict[str, str]  # the stage/CLI variables of a PCS target
    settings: Settings


def posix_ids(target: SlurmTarget) -> tuple[int, int]:
    """The job user's uid and gid on the cluster (what PCS wants in the token)."""
    for line in target.host_path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == target.user:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"{target.user} not in the cluster's /etc/passwd")


@pytest.fixture
def world(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[PcsWorld]:
    clusters = {c["name"]: c for c in read_clusters()}
    # CI runs every local cluster: there, the 26.05 one must be it.
    name = "forky" if in_ci() else next((n for n in PREFERRED if n in clusters), None)
    if name not in clusters:
        not_available(f"no local cluster that reads Authorization: Bearer ({name or '24.11 or 26.05'})")
    c = clusters[name]
    versions = c.get("versions") or []
    target = SlurmTarget(name=name, url=c["url"].rstrip("/"), version=versions[-1] if versions else "",
                         user=c["user"], cluster=c.get("cluster", name), root=c.get("root") or "/",
                         workdir=c.get("workdir") or "/tmp/slurm-trigger-jobs")
    try:
        requests.get(f"{target.url}/openapi/v3", timeout=5)
    except requests.RequestException as exc:
        not_available(f"slurmrestd of cluster {name} does not answer: {exc}")
    sm = boto3.client("secretsmanager")
    made = sm.create_secret(Name="pcs!slurm-jwt-key-lab-pcs",
                            SecretString=base64.b64encode(target.jwt_key_path().read_bytes()).decode())
    host, port = target.url.removeprefix("http://").split(":")
    answer = cluster_answer(cluster_id=PCS_ID, ip=host, port=int(port), secret_arn=made["ARN"],
                            secret_version=made["VersionId"], slurm_version=c.get("slurm", "")[:5] or "25.05")
    pcs_client, _ = stubbed_pcs(*[answer] * 5, identifier=PCS_ID)
    real_boto = client_module._boto
    monkeypatch.setattr(client_module, "_boto", lambda service: pcs_client if service == "pcs" else real_boto(service))
    pcs.clear_cache()
    uid, gid = posix_ids(target)
    env = {"SLURM_PCS_CLUSTER": PCS_ID, "SLURM_CLUSTER_NAME": "lab-pcs", "SLURM_USER": target.user,
           "SLURM_UID": str(uid), "SLURM_GID": str(gid), "SLURM_JWT_KEY_SECRET": made["ARN"]}
    for var in ("SLURM_URL", "SLURM_TOKEN", "SLURM_API_VERSION", "SLURM_AUTH_HEADER"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield PcsWorld(target, env, Settings.from_env())
    pcs.clear_cache()


def record_headers(client: Any) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    client._session.hooks["response"].append(lambda r, *a, **k: seen.append(dict(r.request.headers)))
    return seen


def assert_bearer_only(seen: list[dict[str, str]]) -> None:
    assert seen
    for headers in seen:
        assert headers["Authorization"].startswith("Bearer ey")
        assert not any(k.lower().startswith("x-slurm") for k in headers), headers


def test_client_submits_through_the_pcs_path(world: PcsWorld) -> None:
    client = build_client(world.settings)
    seen = record_headers(client)
    assert client.base_url == world.target.url and client.auth_header == "bearer"
    assert isinstance(client._auth, MintedToken) and client._auth.identity is not None
    assert client.ping()["pings"]
    tag = f"pcs-{uuid.uuid4().hex[:10]}"
    result = client.submit(submission(world.target, tag, 'echo "pcs $(id -un) $CLIENT_TEST"'))
    done = wait_final(client, result.job_id)
    assert (done.state, done.exit_code, done.user) == ("COMPLETED", 0, world.target.user)
    assert [j.job_id for j in client.find_jobs_by_comment(f"client-test {tag}")] == [result.job_id]
    out = world.target.host_path(f"{world.target.workdir}/client-{tag}-{result.job_id}.out")
    assert out.read_text().strip() == f"pcs {world.target.user} {tag}"
    assert_bearer_only(seen)


def test_cli_through_the_pcs_path(world: PcsWorld, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["ping"]) == 0
    assert json.loads(capsys.readouterr().out)["pings"]
    assert main(["versions"]) == 0
    [versions] = json.loads(capsys.readouterr().out)
    assert versions["target"] == "lab-pcs" and versions["negotiated"] in versions["served"]
    tag = uuid.uuid4().hex[:10]
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"name": f"pcs-cli-{tag}", "script": "#!/bin/bash\ntrue\n",
                                "environment": {"PATH": "/usr/bin:/bin"},
                                "working_directory": world.target.workdir, "comment": f"pcs-cli {tag}",
                                "time_limit": 2}))
    assert main(["submit-job", "-j", str(spec)]) == 0
    out = capsys.readouterr()
    job_id = json.loads(out.out)["job_id"]
    client = build_client(world.settings)
    assert [j.job_id for j in client.find_jobs_by_comment(f"pcs-cli {tag}")] == [job_id]
    assert wait_final(client, job_id).state == "COMPLETED"
    assert "eyJ" not in out.out + out.err  # no token in what the CLI printed (every JWT starts with eyJ)


def test_trigger_through_the_pcs_path(world: PcsWorld, tmp_path: Path) -> None:
    from slurm_trigger.idempotency import create_table
    from slurm_trigger.s3events import ObjectRef
    from slurm_trigger.trigger import build_trigger

    outdir = f"{world.target.workdir}/pcs-{uuid.uuid4().hex[:10]}"
    world.target.host_path(outdir).mkdir(mode=0o777)
    world.target.host_path(outdir).chmod(0o777)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.yaml").write_text(textwrap.dedent(f"""
        name: pcs-echo
        match: {{prefix: "in/"}}
        job:
          script: |
            #!/bin/bash
            id -un > "$OUT_DIR/who-$SLURM_JOB_ID"
          working_directory: {world.target.workdir}
          standard_output: /dev/null
          environment: {{PATH: /usr/bin:/bin, OUT_DIR: {outdir}}}
          time_limit: 2
        """))
    ddb = boto3.client("dynamodb")
    create_table(ddb, "pcs-idem")
    published = events_to_queue("pcs-events")
    settings = Settings.from_env({**world.env, "PIPELINES_PATH": str(tmp_path / "pipelines"),
                                  "IDEMPOTENCY_TABLE": "pcs-idem"})
    trigger = build_trigger(settings, dynamodb_client=ddb, events_client=boto3.client("events"))
    ref = ObjectRef("lab-bucket", f"in/{uuid.uuid4().hex}.fastq", version_id="v1")
    [outcome] = trigger.handle(ref)
    assert outcome.status == "submitted" and outcome.job_id
    assert trigger.handle(ref)[0].status == "duplicate"
    client = trigger.client
    assert [j.job_id for j in client.find_jobs_by_comment(outcome.idempotency_key)] == [outcome.job_id]
    assert wait_final(client, outcome.job_id).state == "COMPLETED"
    assert world.target.host_path(f"{outdir}/who-{outcome.job_id}").read_text().strip() == world.target.user
    [event] = published()
    assert event["detail-type"] == "Slurm Job Submitted" and event["detail"]["cluster"] == "lab-pcs"
    assert event["detail"]["jobId"] == outcome.job_id
