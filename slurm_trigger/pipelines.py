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
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from slurm_trigger import collect, retry as retry_section, steps as step_section
from slurm_trigger.collect import Collect
from slurm_trigger.retry import RetryPolicy
from slurm_trigger.steps import Step
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.templating import check_template

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
# A site value: the deployment's own setting, e.g. its partition or shared filesystem.
_SITE = re.compile(r"@\{([a-z][a-z0-9_]*)(?::-([^}]*))?\}")
_TOP_FIELDS = {"name", "description", "match", "metadata", "job", "steps", "collect", "target", "retry"}
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

    def in_scope(self, ref: ObjectRef) -> bool:
        """Bucket and prefix: where a set's marker or manifest may land."""
        return (not self.buckets or ref.bucket in self.buckets) and ref.key.startswith(self.prefix)

    def __call__(self, ref: ObjectRef) -> bool:
        return (
            self.in_scope(ref)
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
    collect: Collect | None = None  # a set of objects makes one job (docs/trigger.md#sets)
    steps: tuple[Step, ...] = ()  # several jobs chained by dependencies, instead of ``template``
    target: str | None = None  # the cluster its jobs go to (a SLURM_TARGETS name); None: the default
    retry: RetryPolicy | None = None  # failed jobs submitted again (docs/trigger.md#retries)

    @property
    def jobs(self) -> tuple[Step, ...]:
        """What to submit, in order: the steps, or the one job."""
        return self.steps or (Step(None, self.template),)

    def accepts(self, ref: ObjectRef) -> bool:
        """A member (``match``), or the marker or manifest of a set."""
        if self.collect is not None and self.collect.is_control(ref):
            return self.match.in_scope(ref)
        return self.match(ref)


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


def _site(value: Any, site: Mapping[str, str]) -> Any:
    """``@{name}`` (or ``@{name:-default}``) in a job's fields → the deployment's
    ``SITE_<NAME>`` setting, so one pipeline file runs on every cluster: the partition,
    the shared filesystem. Trusted (the operator's), so allowed in every field; the
    script gets them through its ``environment``."""
    if isinstance(value, str):
        def one(m: re.Match[str]) -> str:
            if m.group(1) in site:
                return site[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            raise ValueError(f"@{{{m.group(1)}}} needs the setting SITE_{m.group(1).upper()}")

        return _SITE.sub(one, value)
    if isinstance(value, Mapping):
        return {k: v if k == "script" else _site(v, site) for k, v in value.items()}
    if isinstance(value, list):
        return [_site(v, site) for v in value]
    return value


def _template(data: Any, folder: Path, site: Mapping[str, str] | None = None) -> tuple[JobSubmission, str]:
    """The job template, and how errors name its script."""
    if not isinstance(data, Mapping):
        raise ValueError("'job' must be an object in the JobSubmission form")
    job = {k: v for k, v in _site(data, site or {}).items() if v != ""}  # "@{partition:-}": Slurm's default
    script_file = job.pop("script_file", None)
    if script_file is not None:
        if "script" in job:
            raise ValueError("give either 'script' or 'script_file', not both")
        try:
            job["script"] = (folder / script_file).read_text(encoding="utf-8")
        except OSError as exc:  # a ValueError, so a step's name is put before it
            raise ValueError(f"script_file {script_file}: {exc.strerror or exc} ({folder / script_file})") from None
    return JobSubmission.from_dict(job), "'script'" if script_file is None else f"script_file {script_file}"


def parse(data: Any, file: Path, site: Mapping[str, str] | None = None) -> Pipeline:
    """One pipeline from the parsed YAML of ``file`` (relative script files resolve
    against its folder; ``@{name}`` is the site value ``site[name]``)."""
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
        if "steps" in data and "job" in data:
            raise ValueError("give either 'job' or 'steps', not both")
        target = data.get("target")
        if target is not None and not (isinstance(target, str) and _NAME.match(target)):
            raise ValueError("'target' must be the name of a cluster (SLURM_CLUSTER_NAME or a SLURM_TARGETS name)")
        script_names: dict[int, str] = {}

        def template_of(job: Any) -> JobSubmission:
            template, script_name = _template(job, file.parent, site)
            if not template.name:
                # Named after the pipeline (as sbatch names a job after its script): a
                # takeover's accounting search filters by name, and squeue/sacct show it.
                template = replace(template, name=name)
            script_names[id(template)] = script_name
            return template

        steps: tuple[Step, ...] = ()
        if "steps" in data:
            steps = step_section.parse(data["steps"], template_of)
            template = steps[0].template
        else:
            template = template_of(data.get("job"))
        jobs = steps or (Step(None, template),)
        arrays = [j.template.array for j in jobs if j.template.array]
        spec = collect.parse(data["collect"], template_array=arrays[0] if arrays else None) if "collect" in data else None
        if spec is not None and metadata:
            raise ValueError("'metadata' is per object: a set pipeline cannot use it")
        if spec is None and any(j.array for j in jobs):
            raise ValueError("'as: array' makes one task per member of a set: it needs 'collect'")
        policy = retry_section.parse(data["retry"]) if "retry" in data else None
        if policy is not None and (steps or any(j.template.array for j in jobs) or (spec and spec.array)):
            raise ValueError("'retry' resubmits one job: it cannot be used with 'steps' or job arrays (yet)")
        for job in jobs:
            script_name = script_names.get(id(job.template), "'script'")
            if spec is None:
                check_template(job.template, metadata=metadata, script_name=script_name)
            else:
                check_template(job.template, metadata=False, script_name=script_name,
                               variables=collect.template_variables(spec))
        return Pipeline(
            name=name,
            match=_match(data.get("match")),
            template=template,
            metadata=metadata,
            file=str(file),
            description=str(data.get("description") or ""),
            collect=spec,
            steps=steps,
            target=target,
            retry=policy,
        )
    except (ValueError, OSError) as exc:  # TemplateError is a ValueError
        raise PipelineError(f"{label}: {exc}") from exc


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if path.is_file():
        return [path]
    raise PipelineError(f"{path}: no such pipeline file or directory")


def load_all(path: str | Path, site: Mapping[str, str] | None = None) -> tuple[list[Pipeline], list[PipelineError]]:
    """Every pipeline that loads, and an error for every one that does not."""
    pipelines: list[Pipeline] = []
    errors: list[PipelineError] = []
    seen: dict[str, str] = {}
    for file in _files(Path(path)):
        try:
            pipeline = parse(yaml.safe_load(file.read_text(encoding="utf-8")), file, site)
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


def load(path: str | Path, site: Mapping[str, str] | None = None) -> list[Pipeline]:
    """All pipelines, or a ``PipelineError`` listing every problem."""
    pipelines, errors = load_all(path, site)
    if errors:
        raise PipelineError("\n".join(map(str, errors)))
    return pipelines


def matching(pipelines: Iterable[Pipeline], ref: ObjectRef) -> list[Pipeline]:
    """Every pipeline that accepts ``ref``, in file order."""
    return [p for p in pipelines if p.accepts(ref)]

