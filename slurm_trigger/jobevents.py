"""The identity of a "Slurm Job State Change": its detail-type, its ``eventId`` and
its resources, shared by the two paths that publish it.

The tracker publishes a change when a poll sees it; the head node kit's hook pushes
the same change the moment slurmctld makes it (``headnode/``). Consumers drop a
repeat by ``eventId``, so both paths must give a change the same id. The id is the
state a job *entered*, not the pair (previous, new): the hook knows the previous
state exactly, a poll only knows what it saw last (nothing, or a state the job has
long left), and the pair would give one transition two ids.

Standard library only: the head node kit ships this very file beside its hook
(``headnode/lib/slurm_trigger_jobevents.py`` is a link to it).
"""
from __future__ import annotations

import hashlib

DETAIL_TYPE = "Slurm Job State Change"
# ``detail.publishedBy``: which path published this copy. Both copies of a change carry
# the same eventId; this tells them apart (consumers may watch that the push works).
POLLED = "tracker"
PUSHED = "headnode"


def event_id(cluster: str, job_id: int, state: str, submitted_at: str | None, suspended_at: str | None = None) -> str:
    """The same job entering the same state always gets the same id. The submit time
    (ISO 8601 UTC to the second, as the events carry it) is part of it so a reused
    job id, or a requeued job (Slurm gives it a new submit time), never collides.
    ``suspended_at``: the job's last suspend or resume (Slurm's ``suspend_time``), for
    ``RUNNING`` and ``SUSPENDED`` once a job was suspended: a resumed job enters
    ``RUNNING`` again, and that change needs an id of its own. Before any suspend it
    is None and the id is the one the head node's hook gives the job's start."""
    parts = [cluster, str(job_id), state, submitted_at or ""]
    if suspended_at:
        parts.append(suspended_at)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def job_resources(cluster: str, job_id: int, object_arn: str | None) -> tuple[str, ...]:
    """An event's ``resources``: the job, then the object that made it (if any)."""
    job_resource = f"slurm:{cluster}:job/{job_id}"
    return (job_resource, object_arn) if object_arn else (job_resource,)
