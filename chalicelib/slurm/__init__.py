"""A Slurm REST (slurmrestd) client for every version AWS ParallelCluster ships."""
