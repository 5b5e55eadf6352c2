"""A Slurm REST (slurmrestd) client for every version AWS ParallelCluster ships."""
from slurm_trigger.slurm.client import SlurmClient, build_client

__all__ = ["SlurmClient", "build_client"]
