"""Template variables of an S3 object and rendering them into a ``JobSubmission``.

Object keys are untrusted: anyone who may write to the bucket chooses them. So every
value is checked for control characters, and how it is inserted depends on where it
lands. In the script a value is never pasted: ``${key}`` becomes a reference to the
job's own environment variable, ``"${SLURM_TRIGGER_KEY}"`` (a parameter expansion is
never read again as code), and where even that is unsafe or would not expand (single
quotes, ``eval``, ``bash -c``, arithmetic...; see ``shellscan``) the pipeline is refused
when it loads. In the job name and in paths a value is reduced to safe characters (no
``/``, no leading ``.``, no Slurm ``%`` patterns); it is verbatim only in the
environment and the comment, which no shell parses.

Syntax: ``${name}`` with a lower-case name. Anything else (``$HOME``, ``${PATH}``,
``$1``, ``$$``) passes through untouched so scripts keep their shell variables; write
``$${name}`` for a literal ``${name}`` in lower case.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import posixpath
import re
import string
from typing import Callable, Collection, Mapping

from slurm_trigger import shellscan
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.slurm.models import JobSubmission

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
ENV_PREFIX = "SLURM_TRIGGER_"
# Values that are only ever digits (or empty): safe even where text is read as code,
# so ``$(( ${size} / 1024 ))`` is allowed.
NUMERIC = frozenset({"size"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]*")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# $NAME or ${...} (not a template variable, not the $${name} escape): shell syntax, in a field no shell reads
_SHELL_REFERENCE = re.compile(r"(?<!\$)\$(?:\{(?![a-z][a-z0-9_]*\})[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")
MAX_JOB_NAME = 128
MAX_PATH_VALUE = 100  # characters of one value in a path, room left in its file name for the template's own


class TemplateError(ValueError):
    """A template or a value cannot make a job; retrying never helps."""


class UnsafeValueError(TemplateError):
    """A value (usually the object key) holds control characters."""


class _Template(string.Template):
    delimiter = "$"
    flags = re.VERBOSE  # the default also ignores case, and ${PATH} must stay the shell's
    pattern = shellscan.PATTERN


def env_name(var: str) -> str:
    """The job's environment variable for a template variable: ``key`` is
    ``SLURM_TRIGGER_KEY``, ``metadata_run_id`` is ``SLURM_TRIGGER_METADATA_RUN_ID``."""
    return ENV_PREFIX + var.upper()


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
    for name in NUMERIC:  # the promise that lets them stand in arithmetic
        if not _DIGITS.fullmatch(values[name]):
            raise UnsafeValueError(f"{name} must be digits, not {values[name]!r}")
    return values


def metadata_variable(name: str) -> str:
    """S3 user metadata ``x-amz-meta-run-id`` (``run-id``) is ``${metadata_run_id}``."""
    return METADATA_PREFIX + re.sub(r"[^a-z0-9_]", "_", name.lower())


def _name_safe(value: str) -> str:
    return _UNSAFE_NAME.sub("_", value)


def _path_safe(value: str) -> str:
    # One path component at most: no separators, no "..", no hidden names, no % patterns.
    safe = _UNSAFE_NAME.sub("_", value)
    safe = "_" + safe[1:] if safe.startswith(".") else safe
    if len(safe) > MAX_PATH_VALUE:  # a file name is 255 bytes at most, a key up to 1,024: Slurm fails the job
        safe = safe[: MAX_PATH_VALUE - 9] + "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
    return safe


@dataclasses.dataclass(frozen=True)
class Script:
    """A script template made safe: its text with each ``${var}`` turned into a
    reference to the job's environment variable, and the variables it references."""

    text: str
    variables: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()  # (variable, program): a value "-..." there is an option


def _check_options(script: Script, values: Mapping[str, str]) -> None:
    """A value that starts with "-" where a program that can run a command reads its
    options (``sed 's/a/b/' ${basename}`` with the basename ``-e1e cmd``) would be that
    program's option, not its operand: the object is refused, never run."""
    for var, program in script.options:
        value = values.get(var, "")
        if value.startswith("-"):
            raise UnsafeValueError(
                f"{var} starts with '-' ({value[:40]!r}) and stands at the start of an argument of {program}, which "
                f"would read it as an option (an option of {program} can run a command): refused; write -- before "
                f"it, or ./${{{var}}} for a file, in the script")


_HINT = (
    "a value cannot stand there safely; read the job's environment variable {env} in that place instead "
    '("${env}" in a shell, ENVIRON["{env}"] in awk, os.environ["{env}"] in Python)'
)


@functools.lru_cache(maxsize=256)
def compile_script(text: str) -> Script:
    """Turn every ``${var}`` of a script into a reference, quoted as its context needs:
    ``"${SLURM_TRIGGER_KEY}"`` as a word of its own, ``${SLURM_TRIGGER_KEY}`` inside
    double quotes or an unquoted here-document. Raises ``TemplateError`` naming every
    variable that stands where the shell would not expand it or would read it as code.
    The result depends on the script alone, so it is computed once per script."""
    if not identifiers(text):  # nothing to place: the author's script, only $${name} escapes undone
        return Script(_Template(text).substitute({}), ())
    try:
        found = shellscan.scan(text)
    except RecursionError:
        raise TemplateError("nested too deeply to check where its template variables land") from None
    errors = [
        f"${{{p.name}}} on line {p.line} of the script is in {p.context}, {p.refused}: "
        + _HINT.format(env=env_name(p.name))
        for p in found.placements
        if p.refused and not (p.numeric_ok and p.name in NUMERIC)
    ]
    if found.problems:
        errors.append(f"the script cannot be read as shell ({'; '.join(found.problems)}), "
                      "so its template variables cannot be placed safely")
    if errors:
        raise TemplateError("\n  ".join(errors))
    edits = sorted([(p.start, p.end, f'"${{{env_name(p.name)}}}"' if p.quote else f"${{{env_name(p.name)}}}")
                    for p in found.placements] + [(e, e + 1, "") for e in found.escapes])
    out, last = [], 0
    for start, end, new in edits:
        out += [text[last:start], new]
        last = end
    out.append(text[last:])
    options = tuple(dict.fromkeys((p.name, p.option) for p in found.placements if p.option and p.name not in NUMERIC))
    return Script("".join(out), tuple(dict.fromkeys(p.name for p in found.placements)), options)


# Template fields other than the script and how a value is inserted into each.
_FIELDS: dict[str, Callable[[str], str]] = {
    "name": _name_safe,
    "comment": str,
    "working_directory": _path_safe,
    "standard_output": _path_safe,
    "standard_error": _path_safe,
}
_VERBATIM_FIELDS = ("partition", "array", "dependency")


def check_template(
    sub: JobSubmission, *, metadata: bool, script_name: str = "'script'", variables: Collection[str] = VARIABLES
) -> None:
    """Every variable used is known (``variables``: an object's, or a set's), and
    variables appear only where they are referenced safely or sanitized. Run when
    pipelines load, so errors surface before any object. ``script_name`` names the
    script in errors (its ``script_file``)."""
    texts: list[tuple[str, str]] = [(f, getattr(sub, f)) for f in ("script", *_FIELDS) if getattr(sub, f)]
    texts += [(f"environment.{k}", v) for k, v in sub.environment.items()]
    for name in sub.environment:
        if not _ENV_NAME.match(name):
            raise TemplateError(f"environment variable name {name!r} is not a valid shell name")
        if name.startswith(ENV_PREFIX):
            raise TemplateError(f"environment variable name {name!r} is reserved: the trigger sets {ENV_PREFIX}*")
        if name in shellscan.CODE_VARIABLES and identifiers(sub.environment[name]):
            raise TemplateError(f"template variables are not allowed in 'environment.{name}': its value is code "
                                "or says where code is found")
    for field in _VERBATIM_FIELDS:
        value = getattr(sub, field)
        if value and identifiers(value):
            raise TemplateError(f"template variables are not allowed in {field!r}")
    for field, text in texts:
        for var in identifiers(text):
            if var in variables or (metadata and var.startswith(METADATA_PREFIX)):
                continue
            hint = " (set 'metadata: true' to use object metadata)" if var.startswith(METADATA_PREFIX) else ""
            if var in VARIABLES and var not in variables:
                hint = (" (a set has no single object: each member's key is in the job's environment, "
                        "SLURM_TRIGGER_MEMBERS, SLURM_TRIGGER_MEMBER_<i>)")
            raise TemplateError(f"unknown template variable ${{{var}}} in {field!r}{hint}")
        shell = _SHELL_REFERENCE.search(text) if field != "script" else None
        if shell:
            raise TemplateError(
                f"{shell.group()} in {field!r} stays as text: no shell reads this field, so the job would get these "
                "characters (template variables are lower case, ${key}; in paths Slurm expands %j, %u, %x...)")
    if sub.script:
        try:
            compile_script(sub.script)
        except TemplateError as exc:
            raise TemplateError(f"in {script_name}: {exc}") from None


def _require(used: tuple[str, ...] | list[str], values: Mapping[str, str]) -> None:
    missing = [v for v in used if v not in values]
    if missing:
        raise TemplateError(f"no value for template variable ${{{missing[0]}}} (object metadata missing?)")


def _substitute(text: str, values: Mapping[str, str], quote: Callable[[str], str]) -> str:
    used = identifiers(text)
    if not used:
        return text
    _require(used, values)
    return _Template(text).substitute({k: quote(values[k]) for k in used})


def render(template: JobSubmission, values: Mapping[str, str]) -> JobSubmission:
    """The job for one object: fields substituted, the script's variables made
    references, and ``SLURM_TRIGGER_*`` set for every known value and for every
    variable the script references (empty when unknown, so ``set -u`` holds)."""
    changes = {
        field: _substitute(getattr(template, field), values, quote)
        for field, quote in _FIELDS.items()
        if getattr(template, field)
    }
    if "name" in changes:
        changes["name"] = changes["name"][:MAX_JOB_NAME]
    environment = {k: _substitute(v, values, str) for k, v in template.environment.items()}
    environment.update({env_name(var): value for var, value in values.items() if value})
    if template.script:
        script = compile_script(template.script)
        _require(script.variables, values)
        _check_options(script, values)
        environment.update({env_name(var): values[var] for var in script.variables})
        changes["script"] = script.text
    return dataclasses.replace(template, environment=environment, **changes)

