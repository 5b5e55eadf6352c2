"""Self-minted HS256 tokens against the real local slurmrestd, every served version:
signed with the raw bytes of the cluster's own jwt_hs256.key, sent as
X-SLURM-USER-TOKEN (+ user name) and as ``Authorization: Bearer`` (no user name)
where the server reads it (24.11 and later; 22.05 answers 401). Jobs are counted in
Slurm by their unique comment, and their output read back."""
from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_client_real import submission, wait_final

from slurm_trigger_cli import main
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import SlurmClient, build_client
from slurm_trigger.slurm.errors import SlurmAuthError
from slurm_trigger.slurm.minting import MintedToken, SigningKey
from slurm_trigger.slurm.transport import build_session

pytestmark = pytest.mark.real_slurm
WAIT_SECONDS = 120


def reads_bearer(target: Any) -> bool:
    """slurmrestd 22.05 (v0.0.38) knows only the X-SLURM-* headers."""
    return target.version != "v0.0.38"


def settings(target: Any, **kw: Any) -> Settings:
    base = dict(slurm_url=target.url, slurm_user=target.user, api_version=target.version, retries=1,
                jwt_key_file=str(target.jwt_key_path()))
    base.update(kw)
    return Settings(**base)


def run_one_job(target: Any, client: SlurmClient) -> None:
    """One job through ``client``: exactly one in Slurm, run as the token's user."""
    tag = f"mint-{uuid.uuid4().hex[:10]}"
    result = client.submit(submission(target, tag, 'echo "minted $(id -un) $CLIENT_TEST"'))
    done = wait_final(client, result.job_id)
    assert (done.state, done.exit_code, done.user) == ("COMPLETED", 0, target.user)
    assert [j.job_id for j in client.find_jobs_by_comment(f"client-test {tag}")] == [result.job_id]
    out = target.host_path(f"{target.workdir}/client-{tag}-{result.job_id}.out")
    deadline = time.monotonic() + WAIT_SECONDS
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.read_text().strip() == f"minted {target.user} {tag}"


@pytest.mark.parametrize("header", ["x-slurm", "bearer"])
def test_minted_token_submits_a_job(slurm_target: Any, header: str) -> None:
    client = build_client(settings(slurm_target, auth_header=header))
    assert isinstance(client._auth, MintedToken)
    if header == "bearer" and not reads_bearer(slurm_target):
        with pytest.raises(SlurmAuthError) as exc:
            client.ping()
        assert exc.value.status == 401
        return
    assert client.ping()["pings"]
    run_one_job(slurm_target, client)


def test_key_from_secrets_manager(slurm_target: Any, aws: Any) -> None:
    """The Lambda shape: the key base64-encoded in a secret, read through moto."""
    import boto3

    sm = boto3.client("secretsmanager")
    sm.create_secret(Name="slurm_jwt_key_test",
                     SecretString=base64.b64encode(slurm_target.jwt_key_path().read_bytes()).decode())
    client = build_client(settings(slurm_target, jwt_key_file=None, jwt_key_secret="slurm_jwt_key_test"),
                          secrets_client=sm)
    assert client.list_jobs().changed
    run_one_job(slurm_target, client)


def test_wrong_key_is_refused(slurm_target: Any) -> None:
    provider = MintedToken(SigningKey.from_bytes(secrets.token_bytes(32)), slurm_target.user)
    client = SlurmClient(slurm_target.url, provider, user=slurm_target.user, api_version=slurm_target.version,
                         session=build_session(Settings(retries=0)))
    with pytest.raises(SlurmAuthError) as exc:
        client.list_jobs()
    assert provider.token().reveal() not in str(exc.value) + json.dumps(exc.value.to_dict())


def test_an_expired_token_is_minted_again(slurm_target: Any) -> None:
    """The first token is minted on a clock 20 minutes slow (expired on arrival): the
    server refuses it, the client calls refresh(), which mints a good one, and the call
    is repeated once."""
    clocks = iter([time.time() - 1200])
    provider = MintedToken(SigningKey.from_file(slurm_target.jwt_key_path()), slurm_target.user,
                           lifetime=600, clock=lambda: next(clocks, time.time()))
    client = SlurmClient(slurm_target.url, provider, user=slurm_target.user, api_version=slurm_target.version,
                         session=build_session(Settings(retries=0)))
    stale = provider.token()
    assert client.list_jobs().changed
    assert provider.token() != stale


def test_cli_mints_from_a_key_file(slurm_target: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_TOKEN", raising=False)
    key = slurm_target.jwt_key_path()
    common = ["--url", slurm_target.url, "--jwt-key-file", str(key), "-u", slurm_target.user,
              "--api-version", slurm_target.version]
    if reads_bearer(slurm_target):
        common += ["--auth-header", "bearer"]
    assert main(["ping", *common]) == 0
    pinged = capsys.readouterr()
    assert json.loads(pinged.out)["pings"]
    tag = uuid.uuid4().hex[:10]
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"name": f"mint-cli-{tag}", "script": "#!/bin/bash\ntrue\n",
                                "environment": {"PATH": "/usr/bin:/bin"}, "working_directory": slurm_target.workdir,
                                "comment": f"mint-cli {tag}", "time_limit": 2}))
    assert main(["submit-job", "-j", str(spec), *common]) == 0
    out, err = capsys.readouterr()
    job_id = json.loads(out)["job_id"]
    client = build_client(settings(slurm_target))
    assert [j.job_id for j in client.find_jobs_by_comment(f"mint-cli {tag}")] == [job_id]
    raw = key.read_bytes()
    for text in (pinged.out, pinged.err, out, err):
        assert base64.b64encode(raw).decode() not in text and raw.hex() not in text
