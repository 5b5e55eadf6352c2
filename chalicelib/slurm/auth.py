"""Where the JWT comes from: a static value, or Secrets Manager with a cache.

The token is held in ``Token``, whose repr/str are redacted, so it cannot leak into
a log line, a traceback or an event by accident; only ``headers()`` reveals it, and
only to the HTTP layer. ParallelCluster rotates the secret every 20 minutes, so a
cached token can go stale: the client calls ``refresh()`` once on an auth failure.
"""
from __future__ import annotations

import json
from typing import Any, Protocol

REDACTED = "***"


class Token:
    """A JWT that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value.strip()

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Token({REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class TokenProvider(Protocol):
    """What the client needs: a token (maybe cached), a user, and a forced refetch."""

    def token(self) -> Token: ...

    def user(self) -> str | None: ...

    def refresh(self) -> Token: ...


class StaticToken:
    """A token given directly (CLI ``--token``, ``SLURM_TOKEN``); refresh cannot help."""

    def __init__(self, value: str, user: str | None = None) -> None:
        self._token = Token(value)
        self._user = user

    def token(self) -> Token:
        return self._token

    def user(self) -> str | None:
        return self._user

    def refresh(self) -> Token:
        return self._token

    def __repr__(self) -> str:
        return f"StaticToken({REDACTED}, user={self._user!r})"


class SecretsManagerToken:
    """The token in a Secrets Manager secret, cached ``max_age`` seconds.

    The secret string is the raw JWT (as the ParallelCluster blog's rotation Lambda
    writes it) or JSON ``{"token": ..., "user": ...}``.
    """

    def __init__(self, secrets_client: Any, secret_id: str, max_age: int = 300) -> None:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        self._provider = SecretsProvider(boto3_client=secrets_client)
        self.secret_id = secret_id
        self.max_age = max_age
        self._user: str | None = None

    def token(self) -> Token:
        return self._fetch(force=False)

    def refresh(self) -> Token:
        return self._fetch(force=True)

    def user(self) -> str | None:
        if self._user is None:
            self._fetch(force=False)
        return self._user

    def _fetch(self, *, force: bool) -> Token:
        from aws_lambda_powertools.utilities.parameters import GetParameterError

        from chalicelib.slurm.errors import SlurmAuthError

        try:
            value = self._provider.get(self.secret_id, max_age=self.max_age, force_fetch=force)
        except GetParameterError as exc:
            raise SlurmAuthError(
                f"cannot read the Slurm token from secret {self.secret_id!r}: {exc}"
            ) from None
        token, self._user = parse_secret(value if isinstance(value, str) else "")
        if not token:
            raise SlurmAuthError(f"secret {self.secret_id!r} holds no token")
        return token

    def __repr__(self) -> str:
        return f"SecretsManagerToken(secret_id={self.secret_id!r}, max_age={self.max_age})"


def parse_secret(value: str) -> tuple[Token, str | None]:
    """A raw JWT, or JSON with ``token`` (and optionally ``user``)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            user = data.get("user") or data.get("username")
            return Token(str(data.get("token") or "")), str(user) if user else None
    return Token(text), None
