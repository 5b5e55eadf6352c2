"""What became of one object (or one set) for one pipeline: the trigger's answer."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What became of one object for one pipeline (or of an unmatched object).
    For a set's job, ``key`` is the set's name and ``idempotency_key`` the set's."""

    status: str  # submitted | adopted | duplicate | superseded | unmatched | failed | collected | late
    bucket: str
    key: str
    pipeline: str | None = None
    job_id: int | None = None
    idempotency_key: str | None = None
    reason: str | None = None
    steps: dict[str, int] | None = None  # a pipeline with steps: each step's job id

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
