"""A Slurm REST (slurmrestd) client for every version AWS ParallelCluster ships."""
from chalicelib.slurm.client import SlurmClient, build_client

__all__ = ["SlurmClient", "build_client"]
