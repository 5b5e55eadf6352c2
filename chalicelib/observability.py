"""One Logger, Metrics and Tracer for the whole app (Powertools).

Handlers in ``app.py`` wrap themselves with these; library modules only log and
add metrics. The logger never sees a token: nothing in slurm-trigger passes one to it.
"""
from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "slurm-trigger")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "SlurmTrigger"), service=SERVICE)
tracer = Tracer(service=SERVICE)
