"""Where the JWT comes from: a static value, or Secrets Manager with a cache.

The token is held in ``Token``, whose repr/str are redacted, so it cannot leak into
a log line, a traceback or an event by accident; only ``reveal()`` shows it, and
only to the HTTP layer. A value with any character outside the JWT alphabet
(base64url and ``.``) is refused when it is loaded: a CR/LF in a header value would
make requests raise ``InvalidHeader`` with the value in its message, and a header
carrying a line break could smuggle a second header. ParallelCluster rotates the
secret every 20 minutes, so a cached token can go stale: the client calls
``refresh()`` once on an auth failure.
"""
from __future__ import annotations

import json
import re
from typing import Any, Protocol

from slurm_trigger.slurm.errors import SlurmAuthError

REDACTED = "***"
# A JWS in compact form: base64url segments joined by dots (RFC 7515 section 7.1).
_NOT_JWT = re.compile(r"[^A-Za-z0-9_.\-]")


def refuse_bad_characters(value: str, source: str) -> None:
    """``SlurmAuthError`` when ``value`` holds a character no JWT has. The message
    says what kind of character and where, never the value itself."""
    bad = _NOT_JWT.search(value)
    if bad is None:
        return
    char = bad.group()
    if char in "\r\n":
        kind = "a line break (CR/LF)"
    elif char.isspace():
        kind = "whitespace"
    elif not char.isprintable():
        kind = "a control character"
    elif not char.isascii():
        kind = "a non-ASCII character"
    else:
        kind = "punctuation"
    raise SlurmAuthError(
        f"{source} is not a JWT: it has {kind} at character {bad.start() + 1} of "
        f"{len(value)} (a JWT has only A-Z a-z 0-9 - _ and dots); refused, not sent"
    )


class Token:
    """A JWT that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str, source: str = "the Slurm token") -> None:
        value = value.strip()  # a trailing newline from `scontrol token` or echo is common
        refuse_bad_characters(value, source)
        self._value = value

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
        self._token = Token(value, "the token given directly (--token / SLURM_TOKEN)")
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

        failure = None
        try:
            value = self._provider.get(self.secret_id, max_age=self.max_age, force_fetch=force)
        except GetParameterError as exc:
            failure = f"cannot read the Slurm token from secret {self.secret_id!r}: {exc}"
        if failure:  # raised outside the except: no __context__ chained to it
            raise SlurmAuthError(failure)
        token, self._user = parse_secret(
            value if isinstance(value, str) else "", f"the token in secret {self.secret_id!r}"
        )
        if not token:
            raise SlurmAuthError(f"secret {self.secret_id!r} holds no token")
        return token

    def __repr__(self) -> str:
        return f"SecretsManagerToken(secret_id={self.secret_id!r}, max_age={self.max_age})"


def parse_secret(value: str, source: str = "the secret") -> tuple[Token, str | None]:
    """A raw JWT, or JSON with ``token`` (and optionally ``user``)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            user = data.get("user") or data.get("username")
            return Token(str(data.get("token") or ""), source), str(user) if user else None
        raise SlurmAuthError(f"{source} starts with '{{' but is not a JSON object; refused")
    return Token(text, source), None
