"""The HTTP session every Slurm call goes through.

Retries live here, not in the client: urllib3 ``Retry`` repeats GET and DELETE on
connection errors and on 429/502/503/504 (honouring ``Retry-After``). POST is never
repeated once its body may have reached slurmrestd: a second submit can make a
second job (see ``SlurmClient`` for what happens instead). Every request gets the
configured timeouts from the adapter, so no call site can forget them.

A certificate that fails verification (another certificate, an expired one, a name
that does not match) fails the same way every time, so it is not retried (urllib3
would back off ~3 s for nothing). Instead, when the trusted PEM comes from SSM or
Secrets Manager, it is read once more: the head node publishes a new certificate
before it serves it, so a warm container catches up with a rotation on its own.
The pool holds at most ``max_connections`` connections to the head node (blocking
beyond), the client half of the head node kit's cap on slurmrestd.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
import tempfile
from typing import Any, Callable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry

from slurm_trigger.observability import logger
from slurm_trigger.settings import Settings

RETRY_STATUS = (429, 502, 503, 504)
RETRY_METHODS = frozenset({"GET", "DELETE"})
_PEM_FILES: dict[str, str] = {}


class TimeoutAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that applies ``(connect, read)`` timeouts to every request,
    and the configured TLS verification: ``requests`` lets ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE`` override ``Session.verify``, which would silently drop a
    ``ca_bundle`` or ``insecure`` choice."""

    def __init__(
        self,
        timeout: tuple[float, float],
        verify: bool | str = True,
        reload_verify: Callable[[], bool | str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.timeout = timeout
        self.verify = verify
        self.reload_verify = reload_verify
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        kwargs["verify"] = self.verify
        try:
            return super().send(request, **kwargs)
        except requests.exceptions.SSLError as exc:
            # Nothing was sent (the handshake failed), so even a POST may go again.
            if self.reload_verify is None or not verify_failed(exc):
                raise
            fresh = self.reload_verify()
            if fresh == self.verify:
                raise
            logger.info("the head node's certificate changed; trusting the newly published one",
                        extra={"url": request.url})
            self.verify = kwargs["verify"] = fresh
            return super().send(request, **kwargs)


def verify_failed(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a certificate verification failure:
    untrusted, expired, or issued for another name."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, (ssl.SSLCertVerificationError, ssl.CertificateError)):
            return True
        if isinstance(err, BaseException):
            todo.extend([err.__cause__, err.__context__, getattr(err, "reason", None), *err.args])
    return False


class VerifyAwareRetry(Retry):
    """urllib3's ``Retry``, except that a certificate verification failure ends the
    call at once: retrying cannot make the same certificate pass."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if isinstance(error, Urllib3SSLError) and verify_failed(error):
            raise MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def retry_policy(retries: int) -> Retry:
    """Idempotent calls only; the last answer is returned, not raised, so the client
    can map it to a typed error."""
    return VerifyAwareRetry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=RETRY_STATUS,
        allowed_methods=RETRY_METHODS,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def build_session(
    settings: Settings,
    *,
    secrets_client: Callable[[], Any] | None = None,
    ssm_client: Callable[[], Any] | None = None,
) -> requests.Session:
    """A keep-alive session with retries, timeouts and the TLS choice of ``settings``.

    ``secrets_client``/``ssm_client`` are factories, called only when the head
    node's certificate lives in Secrets Manager (``ca_secret``) or SSM (``ca_parameter``).
    """
    session = requests.Session()
    session.verify = tls_verify(settings, secrets_client=secrets_client, ssm_client=ssm_client)
    reload = None
    if session.verify not in (True, False) and (settings.ca_parameter or settings.ca_secret):

        def reload() -> bool | str:
            return tls_verify(settings, secrets_client=secrets_client, ssm_client=ssm_client, force=True)

    adapter = TimeoutAdapter(
        (settings.connect_timeout, settings.read_timeout),
        verify=session.verify,
        reload_verify=reload,
        max_retries=retry_policy(settings.retries),
        pool_maxsize=settings.max_connections,
        pool_block=True,
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def tls_verify(
    settings: Settings,
    *,
    secrets_client: Callable[[], Any] | None = None,
    ssm_client: Callable[[], Any] | None = None,
    force: bool = False,
) -> bool | str:
    """``requests``' ``verify=``: True, a PEM path, or False when ``insecure``;
    ``force`` reads the published PEM again instead of Powertools' cached copy."""
    if settings.insecure:
        import urllib3

        logger.warning(
            "TLS verification is OFF for the Slurm REST API (insecure=True); "
            "anyone on the path can read the token. Use ca_bundle/ca_secret/ca_parameter.",
            extra={"cluster": settings.cluster_name},
        )
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return False
    if settings.ca_bundle:
        return settings.ca_bundle
    if settings.ca_secret:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        client = secrets_client() if secrets_client else None
        pem = SecretsProvider(boto3_client=client).get(settings.ca_secret, force_fetch=force)
        return pem_file(str(pem))
    if settings.ca_parameter:
        from aws_lambda_powertools.utilities.parameters import SSMProvider

        client = ssm_client() if ssm_client else None
        pem = SSMProvider(boto3_client=client).get(settings.ca_parameter, decrypt=True, force_fetch=force)
        return pem_file(str(pem))
    return True


def check_plain_http(url: str, *, allowed: bool, why: str = "SLURM_ALLOW_HTTP=true", cluster: str | None = None) -> None:
    """The URL is http(s)://host. Plain HTTP carries the token in the clear. Loopback (a local cluster, an SSH
    tunnel) is fine; any other address needs an explicit ``allowed`` (``why`` says
    which setting gave it) and gets a warning (once per client built: per cold start)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # else requests' "No connection adapters", reported as a head node to retry
        raise ValueError(f"slurmrestd URL {url!r} is not http(s)://host:port (SLURM_URL, --url), "
                         "e.g. https://10.0.0.5:8082")
    if parts.scheme != "http" or _loopback(parts.hostname):
        return
    if not allowed:
        raise ValueError(
            f"{url} is plain HTTP to another host: the token would cross the network in the clear. "
            "Use https (nginx in front of slurmrestd, docs/deploy.md step 4), or allow it "
            "explicitly with SLURM_ALLOW_HTTP=true"
        )
    logger.warning(
        "plain HTTP to slurmrestd: tokens cross the VPC unencrypted; keep them short-lived and "
        "the security group tight",
        extra={"cluster": cluster, "url": url, "allowed_by": why},
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def pem_file(pem: str) -> str:
    """Write a PEM once per process to a file only this user can read; return its path."""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("the configured CA secret/parameter does not hold a PEM certificate")
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    path = _PEM_FILES.get(digest)
    if path and os.path.exists(path):
        return path
    fd, path = tempfile.mkstemp(prefix=f"slurm-ca-{digest}-", suffix=".pem")
    with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
        f.write(pem if pem.endswith("\n") else pem + "\n")
    _PEM_FILES[digest] = path
    return path
