"""All configuration, read once from environment variables.

Chalice sets them per stage from ``.chalice/config.json``; the CLI and the local
loop set them from flags or the shell. Names and defaults are documented in the
README's configuration reference; this module is the only place that reads them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping



def default_pipelines_path() -> str:
    """Where pipelines are when PIPELINES_PATH is unset: beside the function's code in
    Lambda (vendor/pipelines is packaged there), else ./pipelines of the working
    directory, never a folder inside an installed package (site-packages holds none)."""
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    return str(Path(task_root) / "pipelines") if task_root else "pipelines"
SITE_PREFIX = "SITE_"  # SITE_PARTITION=compute is @{partition} in pipeline files


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(value: str | None, default: int) -> int:
    return int(value) if value not in (None, "") else default


# What a target (SLURM_TARGETS) may set: the variables of "the cluster and its Slurm
# REST API", and the Settings fields they fill (tests/unit/test_targets.py keeps the
# two in step with from_env).
CLUSTER_VARIABLES = {
    "SLURM_CLUSTER_NAME": "cluster_name", "SLURM_URL": "slurm_url", "SLURM_USER": "slurm_user",
    "SLURM_API_VERSION": "api_version", "SLURM_TOKEN": "token", "SLURM_TOKEN_SECRET": "token_secret",
    "SLURM_TOKEN_CACHE_SECONDS": "token_cache_seconds", "SLURM_AUTH_HEADER": "auth_header",
    "SLURM_JWT_KEY_SECRET": "jwt_key_secret", "SLURM_JWT_KEY_FILE": "jwt_key_file",
    "SLURM_JWT_KEY_ENCODING": "jwt_key_encoding", "SLURM_JWT_LIFETIME": "jwt_lifetime",
    "SLURM_UID": "slurm_uid", "SLURM_GID": "slurm_gid", "SLURM_PCS_CLUSTER": "pcs_cluster",
    "SLURM_USE_PUBLIC_IP": "use_public_ip", "SLURM_PORT": "slurm_port", "SLURM_SCHEME": "slurm_scheme",
    "SLURM_CA_BUNDLE": "ca_bundle", "SLURM_CA_SECRET": "ca_secret", "SLURM_CA_PARAMETER": "ca_parameter",
    "SLURM_INSECURE": "insecure", "SLURM_ALLOW_HTTP": "allow_http", "SLURM_CONNECT_TIMEOUT": "connect_timeout",
    "SLURM_READ_TIMEOUT": "read_timeout", "SLURM_RETRIES": "retries", "SLURM_MAX_CONNECTIONS": "max_connections",
    "SLURM_SUBMIT_SETTLE_SECONDS": "submit_settle_seconds",
}
CLUSTER_FIELDS = tuple(CLUSTER_VARIABLES.values())
TARGET_INHERITS = {"connect_timeout": "SLURM_CONNECT_TIMEOUT", "read_timeout": "SLURM_READ_TIMEOUT",
                   "retries": "SLURM_RETRIES", "token_cache_seconds": "SLURM_TOKEN_CACHE_SECONDS",
                   "max_connections": "SLURM_MAX_CONNECTIONS", "submit_settle_seconds": "SLURM_SUBMIT_SETTLE_SECONDS"}


def _parse_targets(text: str | None) -> dict[str, dict[str, str]]:
    """``SLURM_TARGETS``: a JSON object of target name -> its cluster variables."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"SLURM_TARGETS is not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError('SLURM_TARGETS must be a JSON object: {"<name>": {"SLURM_URL": "...", ...}, ...}')
    out = {}
    for name, variables in data.items():
        unknown = sorted(set(variables) - set(CLUSTER_VARIABLES))
        if unknown or not name:
            raise ValueError(
                f"SLURM_TARGETS target {name!r}: {', '.join(unknown) or 'an empty name'} "
                f"cannot be set per target (these can: {', '.join(sorted(CLUSTER_VARIABLES))})"
            )
        if "SLURM_CLUSTER_NAME" in variables:
            raise ValueError(f"SLURM_TARGETS target {name!r}: its name is its cluster name; drop SLURM_CLUSTER_NAME")
        out[str(name)] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in variables.items()}
    return out


def _optional_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


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
    auth_header: str = "x-slurm"  # "x-slurm": X-SLURM-USER-NAME/-TOKEN; "bearer": Authorization
    jwt_key_secret: str | None = None  # mint tokens from this signing key (Secrets Manager)
    jwt_key_file: str | None = None  # ... or from this key file (CLI, head node)
    jwt_key_encoding: str = "base64"  # how a SecretString holds the key: base64 | raw
    jwt_lifetime: int = 900  # seconds a minted token lives
    slurm_uid: int | None = None  # uid/gid/id claims of minted tokens (PCS needs them)
    slurm_gid: int | None = None
    pcs_cluster: str | None = None  # an AWS PCS cluster (id or name): endpoint and key from GetCluster
    use_public_ip: bool = False
    slurm_port: int | None = None  # port on the discovered head node
    slurm_scheme: str = "https"
    ca_bundle: str | None = None  # path to a PEM bundle
    ca_secret: str | None = None  # Secrets Manager id holding the head node's PEM
    ca_parameter: str | None = None  # SSM parameter holding the head node's PEM
    insecure: bool = False  # turn TLS verification off (logs a warning)
    allow_http: bool = False  # plain HTTP to a non-loopback address (logs a warning); PCS implies it
    connect_timeout: float = 3.05
    read_timeout: float = 30.0
    # slurmctld's slowest answer: a submit's job may still appear this long after the
    # read timeout, so an unknown outcome keeps its claim read_timeout + this long
    submit_settle_seconds: float = 60.0
    retries: int = 3
    max_connections: int = 4  # per container; the head node kit caps slurmrestd's side
    # More clusters, by name: JSON {"<name>": {"SLURM_...": "...", ...}} (see targets())
    targets_json: str | None = None

    # --- the trigger
    pipelines_path: str = field(default_factory=default_pipelines_path)
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

    @property
    def mints_tokens(self) -> bool:
        """Tokens are signed here (from a key) instead of read ready-made."""
        return not self.token and bool(self.jwt_key_secret or self.jwt_key_file)

    def targets(self) -> dict[str, "Settings"]:
        """Every cluster this deployment talks to, by name: first the default one (the
        plain ``SLURM_*`` variables, named ``cluster_name``), then each of
        ``SLURM_TARGETS``. An extra target starts from the defaults, not from the default
        target's variables (a URL or secret inherited by mistake would send jobs to the
        wrong cluster); only TARGET_INHERITS (timeouts, retries, connections, cache age) carry over."""
        out = {self.cluster_name: self}
        for name, overrides in _parse_targets(self.targets_json).items():
            if name in out:
                raise ValueError(f"SLURM_TARGETS: target {name!r} is already the default target's name")
            parsed = Settings.from_env({"SLURM_CLUSTER_NAME": name, **overrides})
            fields = {f: getattr(parsed, f) for f in CLUSTER_FIELDS}
            for f, var in TARGET_INHERITS.items():
                if var not in overrides:
                    fields[f] = getattr(self, f)
            out[name] = replace(self, **fields)
        return out

    def target(self, name: str | None) -> "Settings":
        """One of ``targets()``; None is the default target."""
        if name is None:
            return self
        found = self.targets()
        if name not in found:
            raise ValueError(f"no target {name!r}: the targets are {', '.join(found)}")
        return found[name]

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
            auth_header=(g("SLURM_AUTH_HEADER") or "x-slurm").strip().lower(),
            jwt_key_secret=g("SLURM_JWT_KEY_SECRET") or None,
            jwt_key_file=g("SLURM_JWT_KEY_FILE") or None,
            jwt_key_encoding=(g("SLURM_JWT_KEY_ENCODING") or "base64").strip().lower(),
            jwt_lifetime=_int(g("SLURM_JWT_LIFETIME"), 900),
            slurm_uid=_optional_int(g("SLURM_UID")),
            slurm_gid=_optional_int(g("SLURM_GID")),
            pcs_cluster=g("SLURM_PCS_CLUSTER") or None,
            use_public_ip=_bool(g("SLURM_USE_PUBLIC_IP")),
            slurm_port=_int(g("SLURM_PORT"), 0) or None,
            slurm_scheme=g("SLURM_SCHEME", "https"),
            ca_bundle=g("SLURM_CA_BUNDLE") or None,
            ca_secret=g("SLURM_CA_SECRET") or None,
            ca_parameter=g("SLURM_CA_PARAMETER") or None,
            insecure=_bool(g("SLURM_INSECURE")),
            allow_http=_bool(g("SLURM_ALLOW_HTTP")),
            connect_timeout=float(g("SLURM_CONNECT_TIMEOUT") or 3.05),
            read_timeout=float(g("SLURM_READ_TIMEOUT") or 30.0),
            submit_settle_seconds=float(g("SLURM_SUBMIT_SETTLE_SECONDS") or 60.0),
            retries=_int(g("SLURM_RETRIES"), 3),
            max_connections=_int(g("SLURM_MAX_CONNECTIONS"), 4),
            targets_json=g("SLURM_TARGETS") or None,
            pipelines_path=g("PIPELINES_PATH") or default_pipelines_path(),
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
