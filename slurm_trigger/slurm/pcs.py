"""An AWS PCS cluster, as slurm-trigger needs it, from PCS's ``GetCluster``.

PCS runs slurmctld and slurmrestd itself: there is no head node to find and no
``scontrol token``. ``GetCluster`` names everything a caller needs: the ``SLURMRESTD``
endpoint (a private IP and port, plain HTTP inside the VPC), the Secrets Manager
secret and version of the cluster's JWT signing key
(``slurmConfiguration.jwtAuth.jwtKey``), and whether slurmdbd runs
(``slurmConfiguration.accounting.mode``). The answer is cached per process, like the
head node's address: a Lambda container asks PCS once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slurm_trigger.slurm.errors import SlurmError, SlurmUnavailableError

_CACHE: dict[str, "PcsCluster"] = {}
SERVING = ("ACTIVE", "UPDATING")  # slurmrestd answers; CREATING, SUSPENDED, ... do not


@dataclass(frozen=True)
class PcsCluster:
    """What ``GetCluster`` says about one PCS cluster."""

    id: str
    name: str
    arn: str
    status: str
    slurm_version: str  # scheduler.version, e.g. "25.05"
    rest_url: str  # http://<private ip>:<port> of the SLURMRESTD endpoint
    jwt_key_secret: str  # the signing key's secret ARN
    jwt_key_version: str | None
    accounting: bool  # slurmdbd runs (accounting mode STANDARD)


def describe(pcs_client: Any, identifier: str, *, use_public_ip: bool = False) -> PcsCluster:
    """The cluster named ``identifier`` (its id or its name), cached per process."""
    key = f"{identifier}|{use_public_ip}"
    if key not in _CACHE:
        _CACHE[key] = _describe(pcs_client, identifier, use_public_ip)
    return _CACHE[key]


def _describe(pcs_client: Any, identifier: str, use_public_ip: bool) -> PcsCluster:
    from botocore.exceptions import ClientError

    failure = None
    try:
        cluster = pcs_client.get_cluster(clusterIdentifier=identifier)["cluster"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        failure = f"PCS GetCluster for {identifier!r} failed: {code}: {exc.response.get('Error', {}).get('Message', '')}"
    if failure:  # raised outside the except: nothing of the call chained to it
        raise SlurmUnavailableError(failure + " (is the id or name right, the region, and pcs:GetCluster allowed?)")
    name = cluster.get("name") or identifier
    status = cluster.get("status", "")
    if status not in SERVING:
        errors = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in cluster.get("errorInfo") or ())
        raise SlurmUnavailableError(
            f"PCS cluster {name!r} is {status}, not ACTIVE" + (f" ({errors})" if errors else "")
        )
    slurm = cluster.get("slurmConfiguration") or {}
    endpoint = next((e for e in cluster.get("endpoints") or () if e.get("type") == "SLURMRESTD"), None)
    if endpoint is None or (slurm.get("slurmRest") or {}).get("mode") == "NONE":
        raise SlurmError(
            f"PCS cluster {name!r} has no Slurm REST API endpoint: enable it "
            "(slurmConfiguration.slurmRest.mode STANDARD; Slurm 25.05 or later)"
        )
    jwt_key = ((slurm.get("jwtAuth") or {}).get("jwtKey")) or {}
    if not jwt_key.get("secretArn"):
        raise SlurmError(f"PCS cluster {name!r} names no JWT key (slurmConfiguration.jwtAuth.jwtKey)")
    address = endpoint.get("publicIpAddress") if use_public_ip else endpoint.get("privateIpAddress")
    if not address:
        kind = "public" if use_public_ip else "private"
        raise SlurmError(f"PCS cluster {name!r}'s SLURMRESTD endpoint has no {kind} IP address")
    return PcsCluster(
        id=cluster.get("id") or identifier,
        name=name,
        arn=cluster.get("arn") or "",
        status=status,
        slurm_version=(cluster.get("scheduler") or {}).get("version") or "",
        rest_url=f"http://{address}:{endpoint.get('port') or 6820}",
        jwt_key_secret=jwt_key["secretArn"],
        jwt_key_version=jwt_key.get("secretVersion") or None,
        accounting=(slurm.get("accounting") or {}).get("mode") == "STANDARD",
    )


def clear_cache() -> None:
    """Forget described clusters (tests; or after the cluster was replaced)."""
    _CACHE.clear()
