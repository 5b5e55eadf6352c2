"""Find the head node of a ParallelCluster cluster from its EC2 tags.

ParallelCluster tags its instances ``parallelcluster:cluster-name`` and
``parallelcluster:node-type``; the head node is the running ``HeadNode``. The answer
is cached per process (a Lambda container asks EC2 once, not on every event).
"""
from __future__ import annotations

from typing import Any

from slurm_trigger.slurm.errors import SlurmUnavailableError

_CACHE: dict[tuple[str, bool], str] = {}


def head_node_ip(ec2_client: Any, cluster_name: str, *, use_public_ip: bool = False) -> str:
    """The head node's private (default) or public IP address."""
    key = (cluster_name, use_public_ip)
    if key in _CACHE:
        return _CACHE[key]
    paginator = ec2_client.get_paginator("describe_instances")
    pages = paginator.paginate(
        Filters=[
            {"Name": "tag:parallelcluster:cluster-name", "Values": [cluster_name]},
            {"Name": "tag:parallelcluster:node-type", "Values": ["HeadNode"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    field = "PublicIpAddress" if use_public_ip else "PrivateIpAddress"
    for page in pages:
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                if instance.get(field):
                    _CACHE[key] = instance[field]
                    return instance[field]
    kind = "public" if use_public_ip else "private"
    raise SlurmUnavailableError(
        f"no running head node with a {kind} IP for cluster {cluster_name!r} "
        "(EC2 tags parallelcluster:cluster-name / parallelcluster:node-type=HeadNode); "
        "is the cluster up and the name right? Or set SLURM_URL."
    )


def head_node_url(
    ec2_client: Any,
    cluster_name: str,
    *,
    use_public_ip: bool = False,
    scheme: str = "https",
    port: int | None = None,
) -> str:
    """``{scheme}://{ip}[:{port}]`` of the head node's slurmrestd."""
    ip = head_node_ip(ec2_client, cluster_name, use_public_ip=use_public_ip)
    return f"{scheme}://{ip}" + (f":{port}" if port else "")


def clear_cache() -> None:
    """Forget discovered addresses (tests; or after a head node replacement)."""
    _CACHE.clear()
