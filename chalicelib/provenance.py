"""Where a job came from, written into its Slurm comment and read back by the tracker.

The trigger stamps every job it submits with its source object; the tracker finds
"our" jobs and links their state changes back to the object from the comment alone,
so the two share no table and a job stays traceable from ``squeue`` too.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any

MARKER = "slurm-trigger:"
MAX_COMMENT = 1024  # slurmctld refuses longer comments ("Pathname ... too long")


@dataclass(frozen=True)
class Source:
    """The S3 object (one version of it) and the pipeline that made a job."""

    bucket: str
    key: str
    pipeline: str
    version_id: str | None = None
    etag: str | None = None
    idempotency_key: str | None = None
    step: str | None = None  # the step of a pipeline with ``steps``

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def object_arn(self) -> str:
        """The object's ARN, for an event's ``resources``."""
        return f"arn:aws:s3:::{self.bucket}/{self.key}"

    def to_detail(self) -> dict[str, Any]:
        """The camelCase form used in EventBridge events."""
        detail = {
            "bucket": self.bucket,
            "key": self.key,
            "versionId": self.version_id,
            "s3Uri": self.s3_uri,
            "pipeline": self.pipeline,
        }
        if self.step is not None:
            detail["step"] = self.step
        return detail


def encode(source: Source, comment: str | None = None) -> str:
    """A Slurm comment: the template's own comment (if any), then the marker and JSON."""
    payload = json.dumps(
        {k: v for k, v in asdict(source).items() if v is not None},
        separators=(",", ":"),
        ensure_ascii=True,
    )
    prefix = f"{comment.strip()} " if comment and comment.strip() else ""
    return f"{prefix}{MARKER}{payload}"


def comment(source: Source, template_comment: str | None) -> str:
    """The provenance comment, within Slurm's limit. Long keys (up to 1,024 bytes, and
    JSON escapes non-ASCII six-fold) first lose the template's comment, then the
    key is shortened, ending in "...". The idempotency key always stays whole, and
    the job's environment and the trigger's event carry the full object key."""
    text = encode(source, template_comment)
    if len(text.encode()) <= MAX_COMMENT:
        return text
    key = source.key
    text = encode(source)
    while len(text.encode()) > MAX_COMMENT:
        key = key[: max(0, len(key) - (len(text.encode()) - MAX_COMMENT) - 3)]
        text = encode(dataclasses.replace(source, key=key + "..."))
    return text


def decode(comment: str | None) -> Source | None:
    """The source stamped by ``encode``, or None for jobs slurm-trigger did not submit."""
    if not comment or MARKER not in comment:
        return None
    # The first marker: the template's comment is trusted and comes first; the object
    # key (untrusted, may contain the marker) only ever appears inside the JSON.
    _, _, payload = comment.partition(MARKER)
    try:
        data = json.loads(payload)
        return Source(**data)
    except (ValueError, TypeError):
        return None
