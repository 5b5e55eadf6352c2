"""Pipeline files: which objects become which job.

A pipeline is one YAML file in the pipelines directory (``*.yaml``/``*.yml``, not
recursive, so scripts can sit beside them): a ``name``, a ``match`` on the object and a
``job`` template in the ``JobSubmission`` form, its script inline or in ``script_file``
next to the YAML. YAML because scripts are multi-line text and pipelines are written
by people; PyYAML is pinned in requirements.txt.

Everything is checked when the files load (once per Lambda container, and by
``slurm-trigger validate``): unknown fields, unknown template variables, template
variables where a script cannot use them safely, a missing script file, duplicate names. An object matching several pipelines gets one job per
pipeline; an object matching none is skipped by the trigger.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from chalicelib.s3events import ObjectRef
from chalicelib.slurm.models import JobSubmission
from chalicelib.templating import check_template

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_TOP_FIELDS = {"name", "description", "match", "metadata", "job"}
_MATCH_FIELDS = {"bucket", "prefix", "suffix", "glob", "exclude", "min_size"}


class PipelineError(ValueError):
    """A pipeline file that cannot be used; the message names the file and pipeline."""


@dataclass(frozen=True)
class Match:
    """All given conditions must hold. Globs use ``fnmatch`` on the whole key, so
    ``*`` also crosses ``/``."""

    buckets: tuple[str, ...] = ()
    prefix: str = ""
    suffix: str = ""
    glob: str | None = None
    exclude: tuple[str, ...] = ()
    min_size: int | None = None

    def __call__(self, ref: ObjectRef) -> bool:
        return (
            (not self.buckets or ref.bucket in self.buckets)
            and ref.key.startswith(self.prefix)
            and ref.key.endswith(self.suffix)
            and (self.glob is None or fnmatchcase(ref.key, self.glob))
            and not any(fnmatchcase(ref.key, g) for g in self.exclude)
            and (self.min_size is None or ref.size is None or ref.size >= self.min_size)
        )


@dataclass(frozen=True)
class Pipeline:
    name: str
    match: Match
    template: JobSubmission
    metadata: bool = False  # fetch the object's user metadata (one HeadObject per object)
    file: str = ""
    description: str = ""


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{what} must be a string or a list of strings")
    return tuple(items)


def _match(data: Any) -> Match:
    if not isinstance(data, Mapping) or not data:
        raise ValueError("'match' must be an object with at least one condition")
    unknown = sorted(set(data) - _MATCH_FIELDS)
    if unknown:
        raise ValueError(f"unknown match field(s) {', '.join(unknown)}")
    min_size = data.get("min_size")
    if min_size is not None and (not isinstance(min_size, int) or min_size < 0):
        raise ValueError("'match.min_size' must be a non-negative integer (bytes)")
    for text in ("prefix", "suffix", "glob"):
        if data.get(text) is not None and not isinstance(data[text], str):
            raise ValueError(f"'match.{text}' must be a string")
    return Match(
        buckets=_strings(data["bucket"], "'match.bucket'") if "bucket" in data else (),
        prefix=data.get("prefix") or "",
        suffix=data.get("suffix") or "",
        glob=data.get("glob"),
        exclude=_strings(data["exclude"], "'match.exclude'") if "exclude" in data else (),
        min_size=min_size,
    )


def _template(data: Any, folder: Path) -> tuple[JobSubmission, str]:
    """The job template, and how errors name its script."""
    if not isinstance(data, Mapping):
        raise ValueError("'job' must be an object in the JobSubmission form")
    job = dict(data)
    script_file = job.pop("script_file", None)
    if script_file is not None:
        if "script" in job:
            raise ValueError("give either 'script' or 'script_file', not both")
        job["script"] = (folder / script_file).read_text(encoding="utf-8")
    return JobSubmission.from_dict(job), "'script'" if script_file is None else f"script_file {script_file}"


def parse(data: Any, file: Path) -> Pipeline:
    """One pipeline from the parsed YAML of ``file`` (relative script files resolve
    against its folder)."""
    if not isinstance(data, Mapping):
        raise PipelineError(f"{file}: a pipeline file holds one YAML object")
    name = data.get("name")
    label = f"{file}: pipeline {name!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise PipelineError(f"{label}: 'name' must be 1-64 of A-Z a-z 0-9 _ . - (starting alphanumeric)")
    try:
        unknown = sorted(set(data) - _TOP_FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        metadata = data.get("metadata", False)
        if not isinstance(metadata, bool):
            raise ValueError("'metadata' must be true or false")
        template, script_name = _template(data.get("job"), file.parent)
        check_template(template, metadata=metadata, script_name=script_name)
        return Pipeline(
            name=name,
            match=_match(data.get("match")),
            template=template,
            metadata=metadata,
            file=str(file),
            description=str(data.get("description") or ""),
        )
    except (ValueError, OSError) as exc:  # TemplateError is a ValueError
        raise PipelineError(f"{label}: {exc}") from exc


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if path.is_file():
        return [path]
    raise PipelineError(f"{path}: no such pipeline file or directory")


def load_all(path: str | Path) -> tuple[list[Pipeline], list[PipelineError]]:
    """Every pipeline that loads, and an error for every one that does not."""
    pipelines: list[Pipeline] = []
    errors: list[PipelineError] = []
    seen: dict[str, str] = {}
    for file in _files(Path(path)):
        try:
            pipeline = parse(yaml.safe_load(file.read_text(encoding="utf-8")), file)
        except PipelineError as exc:
            errors.append(exc)
            continue
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            errors.append(PipelineError(f"{file}: {exc}"))
            continue
        if pipeline.name in seen:
            errors.append(PipelineError(f"{file}: pipeline {pipeline.name!r} is also defined in {seen[pipeline.name]}"))
            continue
        seen[pipeline.name] = str(file)
        pipelines.append(pipeline)
    return pipelines, errors


def load(path: str | Path) -> list[Pipeline]:
    """All pipelines, or a ``PipelineError`` listing every problem."""
    pipelines, errors = load_all(path)
    if errors:
        raise PipelineError("\n".join(map(str, errors)))
    return pipelines


def matching(pipelines: Iterable[Pipeline], ref: ObjectRef) -> list[Pipeline]:
    """Every pipeline whose match accepts ``ref``, in file order."""
    return [p for p in pipelines if p.match(ref)]

