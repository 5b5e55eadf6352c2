"""Token providers: a JWT never shows in a repr, a str, or an error."""
from __future__ import annotations

import json
from typing import Any

import pytest

from slurm_trigger.slurm.auth import SecretsManagerToken, StaticToken, Token, parse_secret
from slurm_trigger.slurm.errors import SlurmAuthError

# JWT-shaped (header.payload.signature), assembled so no committed file holds one.
JWT = ".".join(["eyJ" + "hbGciOiJIUzI1NiJ9", "eyJ" + "zdWIiOiJyb290In0", "c2lnbmF0dXJlLW5vdC1yZWFs"])


def test_token_is_redacted() -> None:
    token = Token(JWT)
    for text in (repr(token), str(token), f"{token}", repr([token]), repr({"t": token})):
        assert JWT not in text and "***" in text
    assert token.reveal() == JWT
    assert Token(JWT) == token and Token("other") != token


def test_static_token() -> None:
    provider = StaticToken(JWT, user="root")
    assert provider.token().reveal() == JWT and provider.refresh() == provider.token()
    assert provider.user() == "root"
    assert JWT not in repr(provider)


@pytest.mark.parametrize(
    "value,user",
    [(JWT, None), (f"  {JWT}\n", None), (json.dumps({"token": JWT}), None),
     (json.dumps({"token": JWT, "user": "ec2-user"}), "ec2-user")],
)
def test_parse_secret(value: str, user: str | None) -> None:
    token, found = parse_secret(value)
    assert token.reveal() == JWT and found == user


@pytest.fixture
def sm(aws: Any) -> Any:
    import boto3

    client = boto3.client("secretsmanager")
    client.create_secret(Name="slurm_token_c", SecretString=JWT)
    return client


def test_secrets_manager_caches_until_refresh(sm: Any) -> None:
    provider = SecretsManagerToken(sm, "slurm_token_c", max_age=300)
    assert provider.token().reveal() == JWT
    sm.put_secret_value(SecretId="slurm_token_c", SecretString=json.dumps({"token": "new", "user": "u2"}))
    assert provider.token().reveal() == JWT  # cached
    assert provider.refresh().reveal() == "new"  # forced refetch
    assert provider.user() == "u2"
    assert JWT not in repr(provider) and "new" not in repr(provider)


def test_empty_secret_is_auth_error(sm: Any) -> None:
    sm.put_secret_value(SecretId="slurm_token_c", SecretString=json.dumps({"user": "x"}))
    with pytest.raises(SlurmAuthError, match="holds no token"):
        SecretsManagerToken(sm, "slurm_token_c").token()
