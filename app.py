"""slurm-trigger's Chalice app: only wiring. Every handler calls into chalicelib."""
import os
from functools import lru_cache

import boto3
from chalice import Chalice, Rate

from chalicelib.observability import metrics
from chalicelib.settings import Settings
from chalicelib.slurm import build_client
from chalicelib.tracker import Tracker, build_tracker, record_metrics

app = Chalice(app_name="slurm-trigger")

# --- tracker (docs/tracker.md) -------------------------------------------------------------

# Minutes between polls; read at import because `chalice deploy` bakes it into the rule.
POLL_RATE_MINUTES = int(os.environ.get("POLL_RATE_MINUTES") or 1)


@lru_cache(maxsize=1)
def _tracker() -> Tracker:
    """One per container: the token cache and the HTTP connections survive warm starts."""
    settings = Settings.from_env()
    return build_tracker(settings, build_client(settings), boto3.client("dynamodb"), boto3.client("events"))


@app.schedule(Rate(POLL_RATE_MINUTES, unit=Rate.MINUTES))
def poll_jobs(event):
    """Publish every state change of the tracked jobs. The lease lasts as long as this
    invocation may, so a poll that dies frees the cluster for the next one."""
    context = getattr(event, "context", None)
    lease = context.get_remaining_time_in_millis() / 1000 + 5 if context else None
    try:
        result = _tracker().poll(lease_seconds=lease)
        record_metrics(result, metrics)
    finally:
        metrics.flush_metrics()
    return {"skipped": result.skipped, "transitions": result.transitions, "lost": result.lost}
