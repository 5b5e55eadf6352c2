"""Template variables of an S3 object and rendering them into a ``JobSubmission``.

Object keys are untrusted: anyone who may write to the bucket chooses them. So every
value is checked for control characters, and how it is inserted depends on where it
lands: shell-quoted in the script, reduced to safe characters in the job name and in
paths (no ``/``, no leading ``.``, no Slurm ``%`` patterns), verbatim only in the
environment and the comment, which no shell parses.

Syntax: ``${name}`` with a lower-case name. Anything else (``$HOME``, ``${PATH}``,
``$1``, ``$$``) passes through untouched so scripts keep their shell variables; write
``$${name}`` for a literal ``${name}`` in lower case.
"""
from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
import string
from typing import Callable, Collection, Mapping

from chalicelib.s3events import ObjectRef
from chalicelib.slurm.models import JobSubmission

# Every variable a template may use; metadata_<name> only when the pipeline opts in.
VARIABLES = (
    "bucket",
    "key",
    "dirname",
    "basename",
    "stem",
    "extension",
    "size",
    "etag",
    "version_id",
    "sequencer",
    "event_time",
    "s3_uri",
    "region",
    "pipeline",
    "idempotency_key",
)
METADATA_PREFIX = "metadata_"

# What every job gets in its environment, whatever its template says.
ENVIRONMENT = {
    "SLURM_TRIGGER_S3_URI": "s3_uri",
    "SLURM_TRIGGER_BUCKET": "bucket",
    "SLURM_TRIGGER_KEY": "key",
    "SLURM_TRIGGER_VERSION_ID": "version_id",
    "SLURM_TRIGGER_ETAG": "etag",
    "SLURM_TRIGGER_SIZE": "size",
    "SLURM_TRIGGER_SEQUENCER": "sequencer",
    "SLURM_TRIGGER_EVENT_TIME": "event_time",
    "SLURM_TRIGGER_REGION": "region",
    "SLURM_TRIGGER_PIPELINE": "pipeline",
    "SLURM_TRIGGER_IDEMPOTENCY_KEY": "idempotency_key",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_JOB_NAME = 128


class TemplateError(ValueError):
    """A template or a value cannot make a job; retrying never helps."""


class UnsafeValueError(TemplateError):
    """A value (usually the object key) holds control characters."""


class _Template(string.Template):
    delimiter = "$"
    flags = 0  # the default ignores case, and ${PATH} must stay the shell's
    pattern = r"""
    \$(?:
      (?P<escaped>\$(?=\{[a-z][a-z0-9_]*\}))  |  # $${name} -> ${name}
      \{(?P<braced>[a-z][a-z0-9_]*)\}         |  # ${name}
      (?P<named>(?!x)x)                       |  # never: $name stays shell
      (?P<invalid>(?!x)x)
    )
    """


def identifiers(text: str) -> list[str]:
    """The template variables ``text`` uses."""
    return _Template(text).get_identifiers()


def check_value(name: str, value: str) -> None:
    """Refuse control characters (newline, CR, NUL, DEL...): they end shell lines,
    forge log lines and have no business in a file name."""
    match = _CONTROL.search(value)
    if match:
        raise UnsafeValueError(
            f"{name} contains control character {match.group()!r} at position {match.start()}: refused"
        )


def _split_basename(basename: str) -> tuple[str, str]:
    """``stem`` is the basename up to its first dot (not counting a leading one),
    ``extension`` the rest: ``a_R1.fastq.gz`` → ``a_R1``, ``.fastq.gz``."""
    dot = basename.find(".", 1)
    return (basename, "") if dot < 0 else (basename[:dot], basename[dot:])


def object_variables(
    ref: ObjectRef,
    pipeline: str,
    idempotency_key: str,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every variable for one object and pipeline, all strings ("" when unknown)."""
    dirname, basename = posixpath.split(ref.key)
    stem, extension = _split_basename(basename)
    values = {
        "bucket": ref.bucket,
        "key": ref.key,
        "dirname": dirname,
        "basename": basename,
        "stem": stem,
        "extension": extension,
        "size": "" if ref.size is None else str(ref.size),
        "etag": ref.etag or "",
        "version_id": ref.version_id or "",
        "sequencer": ref.sequencer or "",
        "event_time": ref.event_time or "",
        "s3_uri": ref.s3_uri,
        "region": ref.region or "",
        "pipeline": pipeline,
        "idempotency_key": idempotency_key,
    }
    for name, value in (metadata or {}).items():
        values[metadata_variable(name)] = value
    for name, value in values.items():
        check_value(name, value)
    return values


def metadata_variable(name: str) -> str:
    """S3 user metadata ``x-amz-meta-run-id`` (``run-id``) is ``${metadata_run_id}``."""
    return METADATA_PREFIX + re.sub(r"[^a-z0-9_]", "_", name.lower())


def _name_safe(value: str) -> str:
    return _UNSAFE_NAME.sub("_", value)


def _path_safe(value: str) -> str:
    # One path component at most: no separators, no "..", no hidden names, no % patterns.
    safe = _UNSAFE_NAME.sub("_", value)
    return "_" + safe[1:] if safe.startswith(".") else safe


# Template fields and how a value is inserted into each.
_FIELDS: dict[str, Callable[[str], str]] = {
    "script": shlex.quote,
    "name": _name_safe,
    "comment": str,
    "working_directory": _path_safe,
    "standard_output": _path_safe,
    "standard_error": _path_safe,
}
_VERBATIM_FIELDS = ("partition", "array", "dependency")


def check_template(sub: JobSubmission, *, metadata: bool, variables: Collection[str] = VARIABLES) -> None:
    """Every variable used is known (``variables``: an object's, or a set's), and
    variables appear only where they are quoted or sanitized. Run when pipelines
    load, so errors surface before any object."""
    texts: list[tuple[str, str]] = [(f, getattr(sub, f)) for f in _FIELDS if getattr(sub, f)]
    texts += [(f"environment.{k}", v) for k, v in sub.environment.items()]
    for name in sub.environment:
        if not _ENV_NAME.match(name):
            raise TemplateError(f"environment variable name {name!r} is not a valid shell name")
    for field in _VERBATIM_FIELDS:
        value = getattr(sub, field)
        if value and identifiers(value):
            raise TemplateError(f"template variables are not allowed in {field!r}")
    for field, text in texts:
        for var in identifiers(text):
            if var in variables or (metadata and var.startswith(METADATA_PREFIX)):
                continue
            hint = " (set 'metadata: true' to use object metadata)" if var.startswith(METADATA_PREFIX) else ""
            raise TemplateError(f"unknown template variable ${{{var}}} in {field!r}{hint}")


def _substitute(text: str, values: Mapping[str, str], quote: Callable[[str], str]) -> str:
    used = identifiers(text)
    if not used:
        return text
    missing = [v for v in used if v not in values]
    if missing:
        raise TemplateError(f"no value for template variable ${{{missing[0]}}} (object metadata missing?)")
    return _Template(text).substitute({k: quote(values[k]) for k in used})


def render(template: JobSubmission, values: Mapping[str, str]) -> JobSubmission:
    """The job for one object: fields substituted, ``SLURM_TRIGGER_*`` added."""
    changes = {
        field: _substitute(getattr(template, field), values, quote)
        for field, quote in _FIELDS.items()
        if getattr(template, field)
    }
    if "name" in changes:
        changes["name"] = changes["name"][:MAX_JOB_NAME]
    environment = {k: _substitute(v, values, str) for k, v in template.environment.items()}
    environment.update({env: values[var] for env, var in ENVIRONMENT.items() if values.get(var)})
    return dataclasses.replace(template, environment=environment, **changes)

