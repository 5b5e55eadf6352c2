"""AWS PCS answered by botocore's Stubber (moto 5.2.5 has no PCS): a real boto3 PCS
client whose GetCluster answers are checked against botocore's own PCS model, shaped
like the PCS API reference's example (endpoints SLURMCTLD + SLURMRESTD, the JWT key's
secret and version, accounting)."""
from __future__ import annotations

import datetime
from typing import Any

import boto3
from botocore.stub import Stubber

REGION = "us-east-1"


def cluster_answer(
    *,
    cluster_id: str = "pcs_4ahbm6fbzy",
    name: str = "lab-pcs",
    ip: str = "10.3.149.220",
    port: int = 6820,
    secret_arn: str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pcs!slurm-jwt-key-lab-pcs-AbCdEf",
    secret_version: str = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
    status: str = "ACTIVE",
    slurm_version: str = "25.05",
    accounting: bool = True,
    rest: bool = True,
) -> dict[str, Any]:
    """A ``GetCluster`` response, every required member of the model present."""
    now = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)
    endpoints = [{"type": "SLURMCTLD", "privateIpAddress": ip, "port": "6817"}]
    if rest:
        endpoints.append({"type": "SLURMRESTD", "privateIpAddress": ip, "port": str(port)})
    if accounting:
        endpoints.append({"type": "SLURMDBD", "privateIpAddress": ip, "port": "6819"})
    return {"cluster": {
        "name": name,
        "id": cluster_id,
        "arn": f"arn:aws:pcs:{REGION}:123456789012:cluster/{cluster_id}",
        "status": status,
        "createdAt": now,
        "modifiedAt": now,
        "scheduler": {"type": "SLURM", "version": slurm_version},
        "size": "SMALL",
        "slurmConfiguration": {
            "scaleDownIdleTimeInSeconds": 600,
            "slurmCustomSettings": [],
            "authKey": {"secretArn": secret_arn.replace("jwt-key", "auth-key"), "secretVersion": secret_version},
            "jwtAuth": {"jwtKey": {"secretArn": secret_arn, "secretVersion": secret_version}},
            "accounting": {"mode": "STANDARD" if accounting else "NONE", "defaultPurgeTimeInDays": -1},
            "slurmRest": {"mode": "STANDARD" if rest else "NONE"},
        },
        "networking": {"subnetIds": ["subnet-0123456789abcdef0"], "securityGroupIds": ["sg-0123456789abcdef0"],
                       "networkType": "IPV4"},
        "endpoints": endpoints,
    }}


def stubbed_pcs(*answers: dict[str, Any], identifier: str = "pcs_4ahbm6fbzy") -> tuple[Any, Stubber]:
    """A PCS client that answers ``GetCluster(clusterIdentifier=identifier)`` with each of
    ``answers`` in turn (Stubber validates both the request and the answer)."""
    client = boto3.client("pcs", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(client)
    for answer in answers:
        stub.add_response("get_cluster", answer, {"clusterIdentifier": identifier})
    stub.activate()
    return client, stub


def stubbed_pcs_error(code: str, message: str, identifier: str) -> tuple[Any, Stubber]:
    client = boto3.client("pcs", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(client)
    stub.add_client_error("get_cluster", service_error_code=code, service_message=message, http_status_code=404,
                          expected_params={"clusterIdentifier": identifier})
    stub.activate()
    return client, stub
