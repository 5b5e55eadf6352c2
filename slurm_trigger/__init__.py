"""slurm-trigger: S3 objects in, Slurm jobs out, job state changes to EventBridge."""
