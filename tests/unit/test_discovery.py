"""Head node discovery from ParallelCluster's EC2 tags (moto)."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from slurm_trigger.slurm import discovery
from slurm_trigger.slurm.errors import SlurmUnavailableError


@pytest.fixture
def ec2(aws: Any) -> Iterator[Any]:
    import boto3

    discovery.clear_cache()
    yield boto3.client("ec2")
    discovery.clear_cache()


def launch(ec2: Any, cluster: str, node_type: str) -> dict[str, Any]:
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "parallelcluster:cluster-name", "Value": cluster},
            {"Key": "parallelcluster:node-type", "Value": node_type}]
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                             TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]


def describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def test_finds_the_running_head_node_of_the_cluster(ec2: Any) -> None:
    launch(ec2, "demo", "Compute")
    launch(ec2, "other", "HeadNode")
    head = describe(ec2, launch(ec2, "demo", "HeadNode")["InstanceId"])
    assert discovery.head_node_ip(ec2, "demo") == head["PrivateIpAddress"]
    assert discovery.head_node_url(ec2, "demo", port=8082) == f"https://{head['PrivateIpAddress']}:8082"
    assert discovery.head_node_url(ec2, "demo", scheme="http") == f"http://{head['PrivateIpAddress']}"


def test_public_ip_on_request(ec2: Any) -> None:
    head = describe(ec2, launch(ec2, "demo", "HeadNode")["InstanceId"])
    assert discovery.head_node_ip(ec2, "demo", use_public_ip=True) == head["PublicIpAddress"]


def test_cached_per_process(ec2: Any) -> None:
    head = launch(ec2, "demo", "HeadNode")
    first = discovery.head_node_ip(ec2, "demo")
    ec2.terminate_instances(InstanceIds=[head["InstanceId"]])
    assert discovery.head_node_ip(ec2, "demo") == first
    discovery.clear_cache()
    with pytest.raises(SlurmUnavailableError):
        discovery.head_node_ip(ec2, "demo")


def test_stopped_head_node_is_not_found(ec2: Any) -> None:
    head = launch(ec2, "demo", "HeadNode")
    ec2.stop_instances(InstanceIds=[head["InstanceId"]])
    with pytest.raises(SlurmUnavailableError, match="no running head node .* 'demo'") as exc:
        discovery.head_node_ip(ec2, "demo")
    assert "SLURM_URL" in str(exc.value)
