"""Where a job came from, written into its Slurm comment and read back by the tracker.

The trigger stamps every job it submits with its source object; the tracker finds
"our" jobs and links their state changes back to the object from the comment alone,
so the two share no table and a job stays traceable from ``squeue`` too.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, fields
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
    # A pipeline with ``retry`` (slurm_trigger/retry.py): which attempt this job is, of how
    # many, and the first attempt's idempotency key (from the second attempt on)
    attempt: int | None = None
    max_attempts: int | None = None
    original_key: str | None = None

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
        if self.attempt is not None:
            detail["attempt"] = self.attempt
            detail["maxAttempts"] = self.max_attempts
            detail["originalKey"] = self.original_key or self.idempotency_key
        return detail


def encode(source: Source, comment: str | None = None) -> str:
    """A Slurm comment: the template's own comment (if any), then the marker and JSON.

    Inside the JSON the marker's colon is written ``\\u003a``, so the real marker is
    always the last one in the comment, whatever the key or the template's comment
    (which may carry the key through ``${basename}``) hold."""
    payload = json.dumps(
        {k: v for k, v in asdict(source).items() if v is not None},
        separators=(",", ":"),
        ensure_ascii=True,
    ).replace(MARKER, _ESCAPED_MARKER)
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


def restamp(stamped: str | None, source: Source) -> str:
    """A comment ``comment`` made, stamped with ``source`` instead: the template's own
    comment before the marker is kept."""
    at = (stamped or "").rfind(MARKER)
    return comment(source, stamped[:at] if stamped and at >= 0 else stamped)


def decode(comment: str | None) -> Source | None:
    """The source stamped by ``encode``, or None for jobs slurm-trigger did not submit.

    The payload always ends the comment, so the answer is the last marker whose rest
    is exactly one JSON object of a ``Source``. Looking further back only matters for
    comments written before the marker was escaped in the JSON (jobs in flight during
    an upgrade): a marker inside a key there is followed by the rest of a JSON string
    and ``","pipeline":...``, which never parses; the real marker before it does."""
    end = len(comment or "")
    while comment and (at := comment.rfind(MARKER, 0, end)) >= 0:
        source = _source(comment[at + len(MARKER) :])
        if source is not None:
            return source
        end = at  # the marker cannot overlap itself: the previous one ends before it
    return None


_ESCAPED_MARKER = MARKER[:-1] + "\\u003a"
_ORDER = tuple(f.name for f in fields(Source))
_FIELDS = frozenset(_ORDER)
_NUMBERS = frozenset({"attempt", "max_attempts"})
_REQUIRED = frozenset(f.name for f in fields(Source) if f.default is dataclasses.MISSING)


def _source(payload: str) -> Source | None:
    """A ``Source`` from exactly one JSON object of string fields (the attempt's
    numbers are integers; no lone surrogate, which no event could carry), else None.

    The standard library's ``json``, not msgspec: the head node's hook runs this module
    on the system python3 (headnode/lib/slurm_trigger_provenance.py links it)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if type(data) is not dict or not _FIELDS.issuperset(data) or not _REQUIRED.issubset(data):
        return None
    for name, value in data.items():  # a loop, not all() over a generator: half the time
        if name in _NUMBERS:
            if type(value) is not int:
                return None
        elif type(value) is not str or not (value.isascii() or _utf8(value)):
            return None
    # What the frozen dataclass's __init__ makes (it sets each field through
    # object.__setattr__), in half its time: a first poll decodes 100,000 of these. In
    # field order, as __init__ does, so the instances keep sharing their dict's keys.
    source = object.__new__(Source)
    attrs = source.__dict__
    for name in _ORDER:
        attrs[name] = data.get(name)  # every optional field defaults to None
    return source


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
