"""All configuration, read once from environment variables.

Chalice sets them per stage from ``.chalice/config.json``; the CLI and the local
loop set them from flags or the shell. Names and defaults are documented in the
README's configuration reference; this module is the only place that reads them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SITE_PREFIX = "SITE_"  # SITE_PARTITION=compute is @{partition} in pipeline files


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(value: str | None, default: int) -> int:
    return int(value) if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Every knob of slurm-trigger. ``from_env`` is the one constructor used in code."""

    # --- the cluster and its Slurm REST API
    cluster_name: str = "local"
    slurm_url: str | None = None  # explicit URL; else discovered via EC2 tags
    slurm_user: str = "ec2-user"  # X-SLURM-USER-NAME
    api_version: str | None = None  # pin, e.g. "v0.0.40"; default: negotiate
    token: str | None = field(default=None, repr=False)  # direct token (CLI, local)
    token_secret: str | None = None  # default slurm_token_<cluster>
    token_cache_seconds: int = 300  # < the 20-minute rotation of the seed
    use_public_ip: bool = False
    slurm_port: int | None = None  # port on the discovered head node
    slurm_scheme: str = "https"
    ca_bundle: str | None = None  # path to a PEM bundle
    ca_secret: str | None = None  # Secrets Manager id holding the head node's PEM
    ca_parameter: str | None = None  # SSM parameter holding the head node's PEM
    insecure: bool = False  # turn TLS verification off (logs a warning)
    connect_timeout: float = 3.05
    read_timeout: float = 30.0
    # slurmctld's slowest answer: a submit's job may still appear this long after the
    # read timeout, so an unknown outcome keeps its claim read_timeout + this long
    submit_settle_seconds: float = 60.0
    retries: int = 3
    max_connections: int = 4  # per container; the head node kit caps slurmrestd's side

    # --- the trigger
    pipelines_path: str = str(PROJECT_ROOT / "pipelines")
    idempotency_table: str = "slurm-trigger-idempotency"
    idempotency_ttl_days: int = 30
    idempotency_in_progress_seconds: int = 60  # an attempt's deadline where none is known (not Lambda)
    include_object_metadata: bool = False
    sets_table: str = "slurm-trigger-sets"  # membership of sets (pipelines with `collect`)
    site: Mapping[str, str] = field(default_factory=dict)  # SITE_<NAME>: @{name} in pipeline files
    # True only where the SQS event source mapping has ReportBatchItemFailures (the
    # `chalice package` route sets both); elsewhere a partial batch must fail whole.
    sqs_report_batch_item_failures: bool = False

    # --- the tracker
    jobs_table: str = "slurm-trigger-jobs"
    track_all_jobs: bool = False
    tracker_max_lookups: int = 200  # vanished jobs looked up per poll at most

    # --- events and metrics
    event_bus: str = "default"
    event_source: str = "slurm-trigger"
    metrics_namespace: str = "SlurmTrigger"

    @property
    def secret_id(self) -> str:
        return self.token_secret or f"slurm_token_{self.cluster_name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        e = os.environ if env is None else env
        g = e.get
        return cls(
            cluster_name=g("SLURM_CLUSTER_NAME", "local"),
            slurm_url=g("SLURM_URL") or None,
            slurm_user=g("SLURM_USER", "ec2-user"),
            api_version=g("SLURM_API_VERSION") or None,
            token=g("SLURM_TOKEN") or None,
            token_secret=g("SLURM_TOKEN_SECRET") or None,
            token_cache_seconds=_int(g("SLURM_TOKEN_CACHE_SECONDS"), 300),
            use_public_ip=_bool(g("SLURM_USE_PUBLIC_IP")),
            slurm_port=_int(g("SLURM_PORT"), 0) or None,
            slurm_scheme=g("SLURM_SCHEME", "https"),
            ca_bundle=g("SLURM_CA_BUNDLE") or None,
            ca_secret=g("SLURM_CA_SECRET") or None,
            ca_parameter=g("SLURM_CA_PARAMETER") or None,
            insecure=_bool(g("SLURM_INSECURE")),
            connect_timeout=float(g("SLURM_CONNECT_TIMEOUT") or 3.05),
            read_timeout=float(g("SLURM_READ_TIMEOUT") or 30.0),
            submit_settle_seconds=float(g("SLURM_SUBMIT_SETTLE_SECONDS") or 60.0),
            retries=_int(g("SLURM_RETRIES"), 3),
            max_connections=_int(g("SLURM_MAX_CONNECTIONS"), 4),
            pipelines_path=g("PIPELINES_PATH") or str(PROJECT_ROOT / "pipelines"),
            idempotency_table=g("IDEMPOTENCY_TABLE", "slurm-trigger-idempotency"),
            idempotency_ttl_days=_int(g("IDEMPOTENCY_TTL_DAYS"), 30),
            idempotency_in_progress_seconds=_int(g("IDEMPOTENCY_IN_PROGRESS_SECONDS"), 60),
            include_object_metadata=_bool(g("INCLUDE_OBJECT_METADATA")),
            sets_table=g("SETS_TABLE", "slurm-trigger-sets"),
            site={k[len(SITE_PREFIX):].lower(): v for k, v in e.items() if k.startswith(SITE_PREFIX) and len(k) > len(SITE_PREFIX)},
            sqs_report_batch_item_failures=_bool(g("SQS_REPORT_BATCH_ITEM_FAILURES")),
            jobs_table=g("JOBS_TABLE", "slurm-trigger-jobs"),
            track_all_jobs=_bool(g("TRACK_ALL_JOBS")),
            tracker_max_lookups=_int(g("TRACKER_MAX_LOOKUPS"), 200),
            event_bus=g("EVENT_BUS_NAME", "default"),
            event_source=g("EVENT_SOURCE", "slurm-trigger"),
            metrics_namespace=g("POWERTOOLS_METRICS_NAMESPACE", "SlurmTrigger"),
        )
