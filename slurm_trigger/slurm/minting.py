"""Tokens minted here: short-lived HS256 JWTs signed with the cluster's own key.

AWS PCS has no ``scontrol token``: callers sign their own JWT with the key PCS keeps
in Secrets Manager. On ParallelCluster the same works with a copy of
``jwt_hs256.key`` (StateSaveLocation) in a secret, which replaces the rotated root
token with a token for one dedicated user that this process renews itself. slurmrestd
accepts any HS256 JWT signed with the raw bytes of that key that has ``exp`` and
``sun`` (or ``username``); PCS also wants ``uid``, ``gid`` and an ``id`` object
(``name``, ``gecos``, ``dir``, ``shell``, ``gids``). ``iat`` is sent as well; Slurm
does not check it (the claim sets tried on 26.05 are in docs/design.md).

The key lives in ``SigningKey``, whose repr is redacted and which never writes
anything; ``MintedToken`` mints on first use and again shortly before expiry, and
``refresh()`` (after an auth failure) reads the key again, in case it was replaced.

Signing is PyJWT's (``jwt.encode``): a well-kept library, 34 KB, pure Python; without
``cryptography`` (as in Lambda) importing it costs 1.03x ``import boto3, requests``
(+6 ms, +0.3 MiB), which a Lambda cold start pays anyway (``bench/bench_import.py``);
a token takes about 30 µs to sign.
"""
from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from slurm_trigger.slurm.auth import REDACTED, Token
from slurm_trigger.slurm.errors import SlurmAuthError

MIN_KEY_BYTES = 32  # Slurm's guide makes the key with `dd bs=32 count=1`; RFC 7518 3.2
DEFAULT_LIFETIME = 900
RENEW_BEFORE = 60  # seconds before exp: more than one read timeout plus its retries
KEY_ENCODINGS = ("base64", "raw")


class SigningKey:
    """The HS256 key's bytes, loaded by ``load(force)`` and never shown.

    Build one with ``from_bytes``, ``from_file`` or ``from_secret``.
    """

    __slots__ = ("_load", "_bytes", "source")

    def __init__(self, load: Callable[[bool], bytes], source: str) -> None:
        self._load = load
        self._bytes: bytes | None = None
        self.source = source  # where it comes from, for messages: never the key

    def reveal(self, *, force: bool = False) -> bytes:
        """The key (loaded on first use; ``force`` loads it again)."""
        if self._bytes is None or force:
            key = self._load(force)
            if len(key) < MIN_KEY_BYTES:
                raise SlurmAuthError(
                    f"the JWT signing key in {self.source} is {len(key)} bytes, fewer than "
                    f"{MIN_KEY_BYTES}: is it the cluster's jwt_hs256.key, with the right encoding "
                    "(SLURM_JWT_KEY_ENCODING)?"
                )
            self._bytes = key
        return self._bytes

    def __repr__(self) -> str:
        return f"SigningKey({REDACTED}, source={self.source!r})"

    __str__ = __repr__

    @classmethod
    def from_bytes(cls, key: bytes, source: str = "a key given directly") -> "SigningKey":
        return cls(lambda _force: key, source)

    @classmethod
    def from_file(cls, path: str | Path) -> "SigningKey":
        """The raw key file, e.g. a copy of StateSaveLocation/jwt_hs256.key."""
        source = f"file {str(path)!r}"

        def load(_force: bool) -> bytes:
            failure = None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                failure = f"cannot read the JWT signing key from {source}: {exc.strerror}"
            raise SlurmAuthError(failure)

        return cls(load, source)

    @classmethod
    def from_secret(
        cls,
        secrets_client: Any,
        secret_id: str,
        *,
        version_id: str | None = None,
        encoding: str = "base64",
        max_age: int = 300,
    ) -> "SigningKey":
        """A Secrets Manager secret: ``SecretBinary`` holds the raw key; a
        ``SecretString`` holds it base64-encoded (``encoding="base64"``, as
        ``base64 -w0 jwt_hs256.key`` writes it) or as the text itself (``"raw"``)."""
        if encoding not in KEY_ENCODINGS:
            raise ValueError(f"JWT key encoding {encoding!r}: use one of {', '.join(KEY_ENCODINGS)}")
        from aws_lambda_powertools.utilities.parameters import GetParameterError, SecretsProvider

        provider = SecretsProvider(boto3_client=secrets_client)
        options = {"VersionId": version_id} if version_id else {}
        source = f"secret {secret_id!r}" + (f" (version {version_id})" if version_id else "")

        def load(force: bool) -> bytes:
            failure = None
            try:
                value = provider.get(secret_id, max_age=max_age, force_fetch=force, **options)
            except GetParameterError as exc:
                failure = f"cannot read the JWT signing key from {source}: {exc}"
            if failure:  # raised outside the except: nothing of the call chained to it
                raise SlurmAuthError(failure)
            if isinstance(value, bytes):
                return value
            return decode_key(str(value), encoding, source)

        return cls(load, source)


def decode_key(text: str, encoding: str, source: str) -> bytes:
    """A key held as text: base64 (standard or URL-safe, padding optional) or raw."""
    if encoding == "raw":
        return text.encode()
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")  # URL-safe too
    failure = None
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        failure = (f"the JWT signing key in {source} is not base64; store it with "
                   "`base64 -w0 jwt_hs256.key`, or set SLURM_JWT_KEY_ENCODING=raw")
    raise SlurmAuthError(failure)


@dataclass(frozen=True)
class Identity:
    """The POSIX identity PCS reads from a token (``uid``, ``gid``, ``id``): PCS's
    slurmctld has no user database of its own. Optional on ParallelCluster, where the
    head node knows its users."""

    uid: int
    gid: int
    gids: tuple[int, ...] = ()  # more groups; the primary gid is always included
    home: str | None = None  # default /home/<user>
    shell: str = "/bin/bash"

    def claims(self, user: str) -> dict[str, Any]:
        gids = [self.gid] + [g for g in self.gids if g != self.gid]
        return {
            "uid": self.uid,
            "gid": self.gid,
            "id": {"name": user, "gecos": user, "dir": self.home or f"/home/{user}",
                   "shell": self.shell, "gids": gids},
        }


@dataclass
class MintedToken:
    """A ``TokenProvider`` that signs its own tokens for ``user``.

    ``token()`` returns the cached token until ``renew_before`` seconds before it
    expires, then mints the next; ``refresh()`` reads the key again and mints.
    """

    key: SigningKey
    user_name: str
    lifetime: int = DEFAULT_LIFETIME
    identity: Identity | None = None
    renew_before: int = RENEW_BEFORE
    clock: Callable[[], float] = field(default=time.time, repr=False)
    _token: Token | None = field(default=None, init=False, repr=False)
    _expires: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lifetime <= self.renew_before:
            raise ValueError(f"a minted token must live longer than {self.renew_before} s (lifetime {self.lifetime})")

    def token(self) -> Token:
        if self._token is None or self.clock() >= self._expires - self.renew_before:
            self._mint(force=False)
        assert self._token is not None
        return self._token

    def refresh(self) -> Token:
        return self._mint(force=True)

    def user(self) -> str | None:
        return self.user_name

    def claims(self, now: int) -> dict[str, Any]:
        """What the next token says (without the signature): for tests and docs."""
        claims: dict[str, Any] = {"sun": self.user_name, "iat": now, "exp": now + self.lifetime}
        if self.identity is not None:
            claims.update(self.identity.claims(self.user_name))
        return claims

    def _mint(self, *, force: bool) -> Token:
        import jwt

        now = int(self.clock())
        claims = self.claims(now)
        self._token = Token(jwt.encode(claims, self.key.reveal(force=force), algorithm="HS256"),
                            f"the token minted for {self.user_name!r}")
        self._expires = claims["exp"]
        return self._token

    def __repr__(self) -> str:
        return (f"MintedToken(user={self.user_name!r}, lifetime={self.lifetime}, "
                f"identity={self.identity!r}, key={self.key!r})")
