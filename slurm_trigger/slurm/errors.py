"""Typed Slurm REST errors.

Callers decide retry or report from the type alone: ``transient`` errors are worth
another try later (Lambda/SQS retry), the others are permanent and must be reported.
No error ever carries the JWT: messages are built from Slurm's answer only.
"""
from __future__ import annotations

from typing import Any, Sequence


class SlurmError(Exception):
    """A call to slurmrestd did not succeed."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: Sequence[dict[str, Any]] = (),
        warnings: Sequence[Any] = (),
        url: str | None = None,
        job_id: int | None = None,
        maybe_submitted: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = list(errors)
        self.warnings = list(warnings)
        self.url = url
        # A job Slurm created although it reported errors (22.05: 200 + job_id + errors).
        self.job_id = job_id
        # A failed submit after which the job may exist anyway (its answer was lost, or
        # it cannot rule one out: see SlurmClient). Never resubmit: once slurmctld can
        # no longer be acting on it, ask find_jobs_by_comment().
        self.maybe_submitted = maybe_submitted

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        details = "; ".join(_describe(e) for e in self.errors)
        if details and details not in self.message:
            parts.append(f"Slurm says: {details}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary for events and CLI output."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "status": self.status,
            "errors": self.errors,
            "transient": self.transient,
            "job_id": self.job_id,
            "maybe_submitted": self.maybe_submitted,
        }


def _describe(error: dict[str, Any]) -> str:
    """Slurm's ``description`` is often generic ("Batch job submission failed") and
    its ``error`` the reason: show both."""
    texts = [str(t) for t in (error.get("description"), error.get("error")) if t]
    if len(texts) == 2 and texts[1] not in texts[0]:
        return f"{texts[0]}: {texts[1]}"
    return texts[0] if texts else str(error)


class SlurmAuthError(SlurmError):
    """The token was refused (500 on 22.05, 511 on 24.11, 401 without headers,
    or ``pinged: DOWN``), even after fetching a fresh one. Transient: the token
    rotation may simply be late."""

    transient = True


class SlurmUnavailableError(SlurmError):
    """The head node could not be reached or answered 5xx/429: try again later."""

    transient = True


class SlurmBusyError(SlurmUnavailableError):
    """slurmctld refused the job for now and made nothing: EAGAIN "Resource temporarily
    unavailable", 2007 the job queue is full (MaxJobCount), 2016 job creation
    disabled; or a proxy's 429. sbatch sleeps and sends the same job again on these,
    and so may the caller, after slowing down (``slurm_trigger.pacing``)."""


class SlurmTLSError(SlurmUnavailableError):
    """The head node's certificate failed verification (not the published one,
    expired, or issued for another name). Not retried on the spot: the same
    certificate fails the same way. Still transient for the caller, since the head
    node may be rotating its certificate."""


class SlurmRejectedError(SlurmError):
    """Slurm refused the request itself (bad body, bad partition, bad parameter).
    Sending it again gives the same answer."""


class SlurmNotFoundError(SlurmError):
    """Slurm does not know the job (it may have left /jobs after MinJobAge)."""


class SlurmVersionError(SlurmError):
    """No Slurm REST version is served by the head node and known to this client."""


class SlurmNotServedError(SlurmVersionError, SlurmNotFoundError):
    """slurmrestd has no such URL ("Unable to find requested URL"): this REST version
    (a pin the cluster does not serve) or this endpoint is not served. Still a
    ``SlurmNotFoundError`` for the callers that probe versions with it."""
