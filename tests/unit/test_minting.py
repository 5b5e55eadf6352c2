"""Minted tokens: the claims slurmrestd and PCS read, the cache until shortly before
expiry, the key's sources and encodings, and a key that never shows."""
from __future__ import annotations

import base64
import json
import logging
import secrets
import traceback
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import Logged

from slurm_trigger.settings import Settings
from slurm_trigger.slurm.client import build_client, token_provider
from slurm_trigger.slurm.errors import SlurmAuthError
from slurm_trigger.slurm.minting import Identity, MintedToken, SigningKey, decode_key


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def decoded(token: str, key: bytes, now: float) -> dict[str, Any]:
    return jwt.decode(token, key, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})


def test_claims_slurm_reads(key: bytes) -> None:
    clock = Clock()
    provider = MintedToken(SigningKey.from_bytes(key), "slurm-trigger", lifetime=900, clock=clock)
    token = provider.token().reveal()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert decoded(token, key, clock.now) == {"sun": "slurm-trigger", "iat": 1_800_000_000, "exp": 1_800_000_900}
    assert provider.user() == "slurm-trigger"


def test_pcs_identity_claims(key: bytes) -> None:
    provider = MintedToken(SigningKey.from_bytes(key), "alice", identity=Identity(1001, 1001, gids=(1001, 20)),
                           clock=Clock())
    claims = decoded(provider.token().reveal(), key, 0)
    assert (claims["uid"], claims["gid"]) == (1001, 1001)
    assert claims["id"] == {"name": "alice", "gecos": "alice", "dir": "/home/alice", "shell": "/bin/bash",
                            "gids": [1001, 20]}


def test_cached_until_shortly_before_expiry(key: bytes) -> None:
    clock = Clock()
    provider = MintedToken(SigningKey.from_bytes(key), "u", lifetime=600, renew_before=60, clock=clock)
    first = provider.token()
    clock.now += 539
    assert provider.token() is first
    clock.now += 1  # 60 s left: the next call mints
    second = provider.token()
    assert second != first and decoded(second.reveal(), key, 0)["exp"] == int(clock.now) + 600


def test_refresh_reads_the_key_again(key: bytes) -> None:
    keys = [key, secrets.token_bytes(32)]
    loads: list[bool] = []

    def load(force: bool) -> bytes:
        loads.append(force)
        return keys[len(loads) - 1]

    clock = Clock()
    provider = MintedToken(SigningKey(load, "test"), "u", clock=clock)
    provider.token()
    clock.now += 1
    fresh = provider.refresh()
    assert loads == [False, True]
    assert decoded(fresh.reveal(), keys[1], 0)["sun"] == "u"


def test_lifetime_must_exceed_the_renewal_margin(key: bytes) -> None:
    with pytest.raises(ValueError, match="longer than 60"):
        MintedToken(SigningKey.from_bytes(key), "u", lifetime=60)


def test_short_key_refused(key: bytes) -> None:
    provider = MintedToken(SigningKey.from_bytes(key[:16]), "u")
    with pytest.raises(SlurmAuthError, match="16 bytes, fewer than 32") as exc:
        provider.token()
    assert key[:16].hex() not in str(exc.value)


@pytest.mark.parametrize("encode", [
    lambda k: base64.b64encode(k).decode(),
    lambda k: base64.urlsafe_b64encode(k).decode().rstrip("="),
    lambda k: base64.encodebytes(k).decode(),  # with line breaks
], ids=["standard", "url-safe unpadded", "wrapped"])
def test_base64_forms(key: bytes, encode: Any) -> None:
    assert decode_key(encode(key), "base64", "s") == key


def test_not_base64_says_what_to_do() -> None:
    with pytest.raises(SlurmAuthError, match="SLURM_JWT_KEY_ENCODING=raw") as exc:
        decode_key("not*base64!", "base64", "secret 'k'")
    assert exc.value.__context__ is None and "not*base64!" not in str(exc.value)


@pytest.fixture
def sm(aws: Any) -> Any:
    import boto3

    return boto3.client("secretsmanager")


def test_key_from_secret_string_binary_and_version(sm: Any, key: bytes) -> None:
    sm.create_secret(Name="k64", SecretString=base64.b64encode(key).decode())
    sm.create_secret(Name="kbin", SecretBinary=key)
    raw = secrets.token_urlsafe(40)
    sm.create_secret(Name="kraw", SecretString=raw)
    assert SigningKey.from_secret(sm, "k64").reveal() == key
    assert SigningKey.from_secret(sm, "kbin").reveal() == key
    assert SigningKey.from_secret(sm, "kraw", encoding="raw").reveal() == raw.encode()
    newer = secrets.token_bytes(32)
    old_version = sm.describe_secret(SecretId="kbin")["VersionIdsToStages"]
    [old_id] = list(old_version)
    sm.put_secret_value(SecretId="kbin", SecretBinary=newer)
    assert SigningKey.from_secret(sm, "kbin", version_id=old_id).reveal() == key  # pinned, as PCS names it
    assert SigningKey.from_secret(sm, "kbin").reveal() == newer


def test_unknown_encoding(sm: Any) -> None:
    with pytest.raises(ValueError, match="base64, raw"):
        SigningKey.from_secret(sm, "k", encoding="hex")


def test_missing_secret_and_file(sm: Any, tmp_path: Path) -> None:
    with pytest.raises(SlurmAuthError, match="cannot read the JWT signing key from secret 'nope'") as exc:
        SigningKey.from_secret(sm, "nope").reveal()
    assert exc.value.__context__ is None
    with pytest.raises(SlurmAuthError, match="cannot read the JWT signing key from file .*: No such file") as exc:
        SigningKey.from_file(tmp_path / "missing.key").reveal()
    assert exc.value.__context__ is None


def test_the_key_never_shows(sm: Any, key: bytes, tmp_path: Path, logged: Logged,
                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aws_lambda_powertools")
    text_key = base64.b64encode(key).decode()
    sm.create_secret(Name="k", SecretString=text_key)
    (tmp_path / "jwt_hs256.key").write_bytes(key)
    before = set(tmp_path.iterdir())
    providers = [MintedToken(SigningKey.from_secret(sm, "k"), "u"),
                 MintedToken(SigningKey.from_file(tmp_path / "jwt_hs256.key"), "u", identity=Identity(1, 1))]
    texts = []
    for provider in providers:
        token = provider.token()
        provider.refresh()
        texts += [repr(provider), str(provider), repr(provider.key), repr(token), json.dumps(provider.claims(0))]
    with pytest.raises(SlurmAuthError) as exc:
        MintedToken(SigningKey.from_bytes(key[:8]), "u").token()
    texts += ["".join(traceback.format_exception(exc.value)), logged.text, caplog.text]
    for text in texts:
        assert text_key not in text and key.hex() not in text and repr(key) not in text
    assert set(tmp_path.iterdir()) == before  # nothing written


def test_build_client_mints_from_the_key_secret(sm: Any, key: bytes) -> None:
    sm.create_secret(Name="slurm_jwt_key", SecretString=base64.b64encode(key).decode())
    settings = Settings(slurm_url="http://127.0.0.1:1", jwt_key_secret="slurm_jwt_key", slurm_user="svc",
                        slurm_uid=990, slurm_gid=990, jwt_lifetime=300, auth_header="bearer")
    client = build_client(settings, secrets_client=sm)
    provider = client._auth
    assert isinstance(provider, MintedToken) and client.auth_header == "bearer"
    claims = jwt.decode(provider.token().reveal(), key, algorithms=["HS256"])
    assert claims["sun"] == "svc" and claims["uid"] == 990 and claims["exp"] - claims["iat"] == 300


def test_a_token_given_directly_wins_over_minting(key: bytes) -> None:
    from slurm_trigger.slurm.auth import StaticToken

    settings = Settings(token="abc.def.ghi", jwt_key_file="/nonexistent")
    assert isinstance(token_provider(settings, lambda: None), StaticToken)


def test_uid_without_gid_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SLURM_GID"):
        token_provider(Settings(jwt_key_file=str(tmp_path / "k"), slurm_uid=5), lambda: None)
