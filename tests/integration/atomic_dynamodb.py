"""A test double's missing guarantee, restored: atomic conditional writes."""
from __future__ import annotations

import threading
from typing import Any


class AtomicDynamoDB:
    """moto's in-process DynamoDB checks a ConditionExpression and writes without a
    lock, so two threads can both pass the same check; real DynamoDB applies each
    conditional write atomically. Serializing the calls models that, while the
    Slurm submissions of the concurrent attempts still overlap."""

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name == "exceptions" or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call
