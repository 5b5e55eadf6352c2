"""Version-neutral job and submission models.

Every Slurm REST version speaks its own dialect (see ``dialects.py``); the rest of
slurm-trigger only ever sees these types, so a new Slurm release touches one module.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping, Sequence, overload

import msgspec

# Base states after which a job never changes again.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)


class Job(msgspec.Struct, frozen=True, gc=False):
    """One Slurm job as every API version describes it, normalized.

    ``exit_code`` is the process exit status (``exit 3`` reads 3 in every version,
    although v0.0.38 sends the raw wait status 768); ``signal`` the number of the
    signal that ended it. Both are ``None`` while the job has not ended or when Slurm
    does not say. Times are timezone-aware UTC or ``None`` when unset. ``restarts``
    counts Slurm's requeues of the job (``restart_cnt``): a requeue keeps the job id
    and sets a new submit time. ``suspend_time`` is when the job was last suspended or
    resumed (Slurm sets it at both), which tells a resumed RUNNING from the first one.

    A frozen ``msgspec.Struct`` rather than a dataclass: a poll makes one per job that
    changed (100,000 on a first poll), and a Struct is built ~10x faster
    (``msgspec.structs.replace`` copies one with changes).
    """

    job_id: int
    name: str = ""
    state: str = "UNKNOWN"
    state_flags: tuple[str, ...] = ()
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    partition: str | None = None
    user: str | None = None
    comment: str | None = None
    working_directory: str | None = None
    standard_output: str | None = None
    array_job_id: int | None = None  # set for the tasks of a job array
    array_task_id: int | None = None  # None also for an array's not yet started remainder
    dependency: str | None = None  # as Slurm shows it, e.g. "afterok:12(unfulfilled)"
    restarts: int = 0
    suspend_time: datetime | None = None  # the last ``scontrol suspend`` or ``resume``; None: never

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


# The JobSubmission fields a job file or template gives as text, and as counts (with their unit).
_TEXT_FIELDS = ("name", "partition", "working_directory", "standard_output", "standard_error", "comment", "array",
                "dependency")
_COUNT_FIELDS = {"time_limit": " of minutes (2h is 120)", "cpus_per_task": "", "tasks": "", "nodes": "",
                 "memory_per_node": " of MiB (4G is 4096)", "begin_time": " (epoch seconds)"}


@dataclass
class JobSubmission:
    """What to run, independent of the API version that will carry it.

    ``environment`` is a plain mapping (v0.0.38 wants an object, later versions a
    list of ``K=V``); ``time_limit`` is in minutes, ``memory_per_node`` in MiB.
    ``extra`` holds raw fields of the version's ``job`` object that this model does
    not name; they are passed through unchanged.
    """

    script: str
    environment: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    partition: str | None = None
    working_directory: str | None = None
    standard_output: str | None = None
    standard_error: str | None = None
    time_limit: int | None = None
    cpus_per_task: int | None = None
    tasks: int | None = None
    nodes: int | None = None
    memory_per_node: int | None = None
    comment: str | None = None
    array: str | None = None
    dependency: str | None = None  # e.g. "afterok:12,singleton" (steps)
    begin_time: int | None = None  # epoch seconds: not started before (a retry's delay)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobSubmission":
        """Build from the JSON form used by job files and pipeline templates."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown submission field(s) {', '.join(unknown)}; "
                f"put raw Slurm fields under 'extra'"
            )
        if not isinstance(data.get("script"), str) or not data["script"].strip():
            raise ValueError("a submission needs a non-empty 'script'")
        env = data.get("environment") or {}
        if not isinstance(env, Mapping):
            raise ValueError("'environment' must be an object of NAME: value")
        for k, v in env.items():  # YAML's `REF:` is null and `DEBUG: yes` true: never "None"/"True" in the job
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ValueError(f"'environment.{k}' must be a string or a number, not {v!r} (quote it)")
        if not isinstance(data.get("extra") or {}, Mapping):
            raise ValueError("'extra' must be an object of raw Slurm job fields")
        values = dict(data)
        for name in _TEXT_FIELDS:
            if values.get(name) is not None and not isinstance(values[name], str):
                raise ValueError(f"'{name}' must be a string, not {values[name]!r} (quote it)")
        for name, unit in _COUNT_FIELDS.items():
            value = values.get(name)
            if isinstance(value, str) and value.isdigit():  # a site value, "@{minutes:-30}", is text
                value = values[name] = int(value)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"'{name}' must be a whole number{unit}, not {value!r}")
        values["environment"] = {str(k): str(v) for k, v in env.items()}
        values["extra"] = dict(data.get("extra") or {})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, without unset fields."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in (None, {}, ""):
                out[f.name] = value
        return out


@dataclass(frozen=True)
class SubmitResult:
    """Slurm's answer to an accepted submission."""

    job_id: int
    step_id: str | None = None
    user_message: str | None = None
    warnings: tuple[str, ...] = ()


class JobKey(msgspec.Struct, frozen=True, gc=False):
    """What identifies a job's state cheaply: its id, base state and submit time
    (epoch seconds, None when unset), read without parsing the rest of the job; and
    its comment as ``Job.comment`` reads it, so a caller can tell a job that carries
    slurm-trigger's provenance from another without parsing either."""

    job_id: int
    state: str
    submitted: int | None
    comment: str | None = None


class LazyJobs(Sequence[Job]):
    """A listing's raw jobs, each parsed into a ``Job`` only when asked for.

    A tracker poll over 10,000 jobs needs the full ``Job`` of the few that changed;
    ``keyed()`` gives every job's ``JobKey`` (the dialect's ``key``) with a way to
    parse that one job. Jobs are parsed again on each access, not cached.
    """

    def __init__(
        self,
        raws: Sequence[Mapping[str, Any]],
        parse: Callable[[Mapping[str, Any]], Job],
        key: Callable[[Mapping[str, Any]], JobKey],
    ) -> None:
        self._raws, self._parse, self._key = raws, parse, key

    def __len__(self) -> int:
        return len(self._raws)

    @overload
    def __getitem__(self, index: int) -> Job: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Job, ...]: ...

    def __getitem__(self, index: int | slice) -> Job | tuple[Job, ...]:
        if isinstance(index, slice):
            return tuple(self._parse(r) for r in self._raws[index])
        return self._parse(self._raws[index])

    def __iter__(self) -> Iterator[Job]:
        return map(self._parse, self._raws)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return f"LazyJobs({len(self)} jobs)"

    def keyed(self) -> Iterator[tuple[JobKey, Callable[[], Job]]]:
        parse = self._parse
        for raw in self._raws:
            yield self._key(raw), lambda raw=raw: parse(raw)


@dataclass(frozen=True)
class JobsPage:
    """One answer of ``GET /jobs``.

    ``changed`` is False when Slurm said nothing changed since ``update_time``
    (22.05's 304, or 24.11's 200 with no jobs and a warning); ``last_update`` is the
    epoch to pass next time, or ``None`` when the version does not report it.
    ``jobs`` is a tuple or ``LazyJobs`` (what the dialects return).
    """

    jobs: Sequence[Job]
    changed: bool = True
    last_update: int | None = None

    def keyed(self) -> Iterator[tuple[JobKey, Callable[[], Job]]]:
        """Each job's ``JobKey`` and a way to get its full ``Job``; parses nothing
        up front when ``jobs`` is lazy."""
        if isinstance(self.jobs, LazyJobs):
            return self.jobs.keyed()
        return ((job_key(j), lambda j=j: j) for j in self.jobs)


def job_key(job: Job) -> JobKey:
    """The ``JobKey`` of a parsed job."""
    submitted = int(job.submit_time.timestamp()) if job.submit_time else None
    return JobKey(job.job_id, job.state, submitted, job.comment)
