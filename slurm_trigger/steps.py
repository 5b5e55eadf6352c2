"""Steps: several jobs submitted together, chained with Slurm dependencies.

A pipeline's ``steps`` (instead of ``job``) are submitted in order as one unit, each
through the exactly-once path under its own idempotency key (the object's or set's
key and the step's name), so each step's job id is recorded as it is made: a retry
after a failure halfway finds the steps already made (answered "duplicate" with their
ids) and makes only the rest, with the dependencies on the ids Slurm gave. Steps are
not held: an early step may start before the later ones are in, which the
dependencies make harmless.

Dependencies are Slurm's (``afterok``, ``afterany``, ``afternotok``, ``aftercorr``
for arrays task by task) on earlier steps, plus ``singleton`` (one job of this name
and user at a time).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from slurm_trigger.provenance import Source
from slurm_trigger.slurm.models import JobSubmission

KINDS = ("afterok", "afterany", "afternotok", "aftercorr")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")
_FIELDS = {"name", "job", "after", "singleton", "as"}


@dataclass(frozen=True)
class Step:
    name: str | None  # None: the one job of a pipeline with ``job``
    template: JobSubmission
    after: tuple[tuple[str, str], ...] = ()  # (earlier step, kind)
    singleton: bool = False
    array: bool | None = None  # sets: one task per member; None: as ``collect.as`` says

    def source(self, source: Source) -> Source:
        """The provenance of this step's job: the step named, its own key."""
        if self.name is None:
            return source
        return dataclasses.replace(source, step=self.name, idempotency_key=step_key(source.idempotency_key or "", self.name))

    def dependency(self, job_ids: Mapping[str, int | str]) -> str | None:
        """Slurm's ``dependency`` string on the earlier steps' job ids (all must hold)."""
        parts = [f"{kind}:{job_ids[step]}" for step, kind in self.after]
        if self.singleton:
            parts.append("singleton")
        return ",".join(parts) or None


def step_key(key: str, step: str | None) -> str:
    """The idempotency key of one step of the job ``key`` stands for."""
    if step is None:
        return key
    return "st-" + hashlib.sha256(f"{key}\x00{step}".encode()).hexdigest()[:40]


def parse(data: Any, template: Any) -> tuple[Step, ...]:
    """The ``steps`` list; ``template(job_section)`` makes each step's JobSubmission."""
    if not isinstance(data, list) or not data:
        raise ValueError("'steps' must be a list of steps, each {name, job, after}")
    steps: list[Step] = []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise ValueError(f"step {i + 1} must be an object {{name, job, after}}")
        unknown = sorted(set(item) - _FIELDS)
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"step {i + 1}: 'name' must be 1-32 of a-z 0-9 _ - (starting with a letter)")
        if unknown:
            raise ValueError(f"step {name!r}: unknown field(s) {', '.join(unknown)}")
        if any(s.name == name for s in steps):
            raise ValueError(f"step {name!r} is named twice")
        after = item.get("after") or {}
        if isinstance(after, (list, str)):
            after = {s: "afterok" for s in ([after] if isinstance(after, str) else after)}
        if not isinstance(after, Mapping):
            raise ValueError(f"step {name!r}: 'after' maps earlier steps to one of {', '.join(KINDS)}")
        earlier = {s.name for s in steps}
        for dep, kind in after.items():
            if dep not in earlier:
                raise ValueError(f"step {name!r}: 'after' names {dep!r}, which is not an earlier step")
            if kind not in KINDS:
                raise ValueError(f"step {name!r}: dependency {kind!r} is not one of {', '.join(KINDS)}")
        shape = item.get("as")
        if shape not in (None, "job", "array"):
            raise ValueError(f"step {name!r}: 'as' must be job or array")
        try:
            job = template(item.get("job"))
        except ValueError as exc:
            raise ValueError(f"step {name!r}: {exc}") from None
        steps.append(
            Step(
                name=name,
                template=job,
                after=tuple((str(d), str(k)) for d, k in after.items()),
                singleton=bool(item.get("singleton", False)),
                array=None if shape is None else shape == "array",
            )
        )
    return tuple(steps)
