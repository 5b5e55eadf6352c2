"""A PCS target: GetCluster (Stubber, botocore's PCS model) -> endpoint, key secret,
accounting; build_client's PCS path against a local stand-in slurmrestd (Bearer only,
a token minted from the key in moto's Secrets Manager); plain HTTP only where allowed."""
from __future__ import annotations

import base64
import secrets
from typing import Any, Iterator

import jwt
import pytest
from conftest import Logged
from fakeslurm import FakeSlurm, Reply
from pcs_stub import cluster_answer, stubbed_pcs, stubbed_pcs_error

from slurm_trigger.settings import Settings
from slurm_trigger.slurm import pcs
from slurm_trigger.slurm.client import build_client, same_secret
from slurm_trigger.slurm.errors import SlurmError, SlurmUnavailableError
from slurm_trigger.slurm.minting import MintedToken
from slurm_trigger.slurm.transport import check_plain_http


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    pcs.clear_cache()
    yield
    pcs.clear_cache()


def test_describe_reads_what_the_target_needs() -> None:
    client, stub = stubbed_pcs(cluster_answer(ip="10.3.149.220", port=6820))
    found = pcs.describe(client, "pcs_4ahbm6fbzy")
    assert found.rest_url == "http://10.3.149.220:6820"
    assert found.jwt_key_secret.endswith(":secret:pcs!slurm-jwt-key-lab-pcs-AbCdEf")
    assert found.jwt_key_version == "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
    assert (found.name, found.id, found.slurm_version, found.accounting) == ("lab-pcs", "pcs_4ahbm6fbzy", "25.05", True)
    assert pcs.describe(client, "pcs_4ahbm6fbzy") is found  # cached: one GetCluster per process
    stub.assert_no_pending_responses()


def test_by_name_and_without_accounting() -> None:
    client, _ = stubbed_pcs(cluster_answer(accounting=False), identifier="lab-pcs")
    assert pcs.describe(client, "lab-pcs").accounting is False


@pytest.mark.parametrize("answer,error,match", [
    (cluster_answer(status="CREATING"), SlurmUnavailableError, "is CREATING, not ACTIVE"),
    (cluster_answer(rest=False), SlurmError, "no Slurm REST API endpoint"),
])
def test_a_cluster_that_cannot_serve(answer: dict[str, Any], error: type, match: str) -> None:
    client, _ = stubbed_pcs(answer)
    with pytest.raises(error, match=match):
        pcs.describe(client, "pcs_4ahbm6fbzy")


def test_unknown_cluster() -> None:
    client, _ = stubbed_pcs_error("ResourceNotFoundException", "Cluster not found", "nope")
    with pytest.raises(SlurmUnavailableError, match="ResourceNotFoundException") as exc:
        pcs.describe(client, "nope")
    assert exc.value.__context__ is None


@pytest.mark.parametrize("setting,ok", [
    ("pcs!slurm-jwt-key-lab-pcs", True),
    ("arn:aws:secretsmanager:us-east-1:123456789012:secret:pcs!slurm-jwt-key-lab-pcs-AbCdEf", True),
    ("other", False),
])
def test_same_secret(setting: str, ok: bool) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pcs!slurm-jwt-key-lab-pcs-AbCdEf"
    assert same_secret(setting, arn) is ok


@pytest.fixture
def key_secret(aws: Any) -> tuple[Any, bytes, str, str]:
    import boto3

    sm = boto3.client("secretsmanager")
    key = secrets.token_bytes(32)
    made = sm.create_secret(Name="pcs!slurm-jwt-key-lab-pcs", SecretString=base64.b64encode(key).decode())
    return sm, key, made["ARN"], made["VersionId"]


def test_build_client_for_a_pcs_cluster(key_secret: tuple[Any, bytes, str, str], logged: Logged) -> None:
    """Bearer only, no user name, a token minted from the key GetCluster names."""
    sm, key, arn, version = key_secret
    fake = FakeSlurm()
    try:
        port = int(fake.url.rsplit(":", 1)[1])
        fake.add("GET", "/slurm/v0.0.42/ping", Reply.json(200, {"pings": [{"hostname": "pcs", "pinged": "UP"}]}))
        pcs_client, _ = stubbed_pcs(cluster_answer(ip="127.0.0.1", port=port, secret_arn=arn, secret_version=version))
        settings = Settings(pcs_cluster="pcs_4ahbm6fbzy", slurm_user="alice", slurm_uid=1001, slurm_gid=1001,
                            api_version="v0.0.42", auth_header="x-slurm")
        client = build_client(settings, secrets_client=sm, pcs_client=pcs_client)
        assert client.base_url == f"http://127.0.0.1:{port}" and client.auth_header == "bearer"
        assert isinstance(client._auth, MintedToken)
        client.ping()
        [seen] = fake.seen
    finally:
        fake.close()
    assert not any(h.lower().startswith("x-slurm") for h in seen.headers)
    scheme, token = seen.headers["Authorization"].split(" ")
    claims = jwt.decode(token, key, algorithms=["HS256"])
    assert scheme == "Bearer" and claims["sun"] == "alice" and claims["uid"] == 1001 and claims["id"]["gids"] == [1001]
    assert token not in logged.text


def test_a_pcs_target_needs_the_users_identity(key_secret: tuple[Any, bytes, str, str]) -> None:
    sm, _, arn, version = key_secret
    pcs_client, _ = stubbed_pcs(cluster_answer(secret_arn=arn, secret_version=version))
    with pytest.raises(ValueError, match="SLURM_UID and SLURM_GID"):
        build_client(Settings(pcs_cluster="pcs_4ahbm6fbzy", slurm_user="alice"), secrets_client=sm,
                     pcs_client=pcs_client)


def test_a_key_secret_that_is_not_the_clusters(key_secret: tuple[Any, bytes, str, str]) -> None:
    sm, _, arn, version = key_secret
    pcs_client, _ = stubbed_pcs(cluster_answer(secret_arn=arn, secret_version=version))
    settings = Settings(pcs_cluster="pcs_4ahbm6fbzy", slurm_user="a", slurm_uid=1, slurm_gid=1,
                        jwt_key_secret="some-other-secret")
    with pytest.raises(ValueError, match="re-render the policies"):
        build_client(settings, secrets_client=sm, pcs_client=pcs_client)


def test_pcs_http_is_allowed_with_a_warning(key_secret: tuple[Any, bytes, str, str], logged: Logged) -> None:
    sm, _, arn, version = key_secret
    pcs_client, _ = stubbed_pcs(cluster_answer(ip="10.3.149.220", secret_arn=arn, secret_version=version))
    client = build_client(Settings(pcs_cluster="pcs_4ahbm6fbzy", slurm_user="a", slurm_uid=1, slurm_gid=1),
                          secrets_client=sm, pcs_client=pcs_client)
    assert client.base_url == "http://10.3.149.220:6820"
    [warning] = [line for line in logged.lines if line["level"] == "WARNING"]
    assert (warning["url"], warning["allowed_by"]) == ("http://10.3.149.220:6820", "PCS cluster lab-pcs")
    assert client.base_url.startswith("http://")


@pytest.mark.parametrize("url,allowed,refused", [
    ("http://127.0.0.1:6820", False, False),
    ("http://localhost:6820", False, False),
    ("http://[::1]:6820", False, False),
    ("https://10.0.0.5:8082", False, False),
    ("http://10.0.0.5:6820", False, True),
    ("http://head-node.internal:6820", False, True),
    ("http://10.0.0.5:6820", True, False),
])
def test_plain_http_only_to_loopback_unless_allowed(url: str, allowed: bool, refused: bool) -> None:
    if refused:
        with pytest.raises(ValueError, match="SLURM_ALLOW_HTTP=true"):
            check_plain_http(url, allowed=allowed)
    else:
        check_plain_http(url, allowed=allowed)


def test_tls_verification_stays_on_for_every_other_target() -> None:
    client = build_client(Settings(slurm_url="https://10.0.0.5:8082", token="a.b.c", allow_http=True))
    assert client._session.verify is True
