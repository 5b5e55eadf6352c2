"""Development-only code: the local loop (``python -m slurm_trigger_dev.localrun``).

Neither installed by ``pip install .`` nor packaged into the Lambda zip: it drives
``scripts/``, moto and the local clusters of this repository.
"""
